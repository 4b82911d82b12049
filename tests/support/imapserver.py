"""A scripted IMAP server on loopback that misbehaves on purpose.

Dovecot never answers ``NO [SERVERBUG]`` for one letter, sends a literal whose
length is wrong, or drips its greeting a byte at a time; this server does, on
command. It speaks just enough IMAP4rev1 for imapclient and mailroute: CAPABILITY,
LOGIN, SELECT, UID SEARCH (sequence sets, ``UID`` ranges, ALL), UID FETCH
(``BODY.PEEK[]``, INTERNALDATE, RFC822.SIZE; or the size alone), UID MOVE, UID
COPY/STORE/EXPUNGE, LIST, CREATE, STATUS, NOOP, LOGOUT. One thread per connection;
state is shared under a lock.

Faults per UID (``ScriptedImapServer.faults[uid] = ...``):

- ``"no"``: any FETCH naming this UID is answered ``NO [SERVERBUG]``;
- ``"short"``: its literal is announced 40 bytes shorter than the letter (broken);
- ``"long"``: its literal is announced 40 bytes longer, so it swallows what follows;
- ``"wrong-uid"``: its FETCH response names another UID;
- ``"over-quota"``: any MOVE or COPY naming it is refused ``NO [OVERQUOTA]`` (Dovecot's
  quota lets a MOVE within one quota root through, so it cannot show this).

``drip_greeting`` sends the greeting one byte every ``drip_interval`` seconds.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from .services import free_port

CAPABILITIES = "IMAP4rev1 MOVE UIDPLUS"
OFFSET = 40  # bytes a "short" or "long" literal is off by
INTERNALDATE = "%d-%b-%Y %H:%M:%S %z"


@dataclass
class Message:
    uid: int
    raw: bytes
    internaldate: datetime


@dataclass
class ScriptedImapServer:
    """See the module docstring. ``start()`` it, ``add()`` letters, ``close()`` it."""

    host: str = "127.0.0.1"
    uidvalidity: int = 1234
    faults: dict[int, str] = field(default_factory=dict)
    drip_greeting: bool = False
    drip_interval: float = 0.2
    folders: dict[str, list[Message]] = field(default_factory=lambda: {"INBOX": []})
    fetches: list[str] = field(default_factory=list)  # UID sets of every FETCH of bodies
    port: int = 0
    _next_uid: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _listener: socket.socket | None = None
    _closed: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> ScriptedImapServer:
        self.port = free_port()
        listener = socket.create_server((self.host, self.port))
        listener.settimeout(0.2)
        self._listener = listener
        thread = threading.Thread(target=self._accept, name="scripted-imap", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> ScriptedImapServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, raw: bytes, internaldate: datetime, folder: str = "INBOX") -> int:
        with self._lock:
            uid = self._next_uid
            self._next_uid += 1
            self.folders.setdefault(folder, []).append(Message(uid, raw, internaldate))
        return uid

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self._lock:
            return [message.uid for message in self.folders.get(folder, [])]

    # ------------------------------------------------------------------ serving

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                connection, _address = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(0.5)
        session = _Session(self, connection)
        try:
            session.run()
        except OSError:
            pass
        finally:
            connection.close()


class _Session:
    def __init__(self, server: ScriptedImapServer, connection: socket.socket) -> None:
        self.server = server
        self.connection = connection
        self.buffer = b""
        self.selected: str | None = None

    def send(self, data: bytes) -> None:
        self.connection.sendall(data)

    def line(self, text: str) -> None:
        self.send(text.encode() + b"\r\n")

    def read_line(self) -> bytes | None:
        while b"\r\n" not in self.buffer:
            if self.server._closed.is_set():
                return None
            try:
                chunk = self.connection.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def run(self) -> None:
        greeting = f"* OK [CAPABILITY {CAPABILITIES}] scripted server ready\r\n".encode()
        if self.server.drip_greeting:
            for byte in greeting * 1000:
                if self.server._closed.is_set():
                    return
                self.send(bytes([byte]))
                time.sleep(self.server.drip_interval)
        self.send(greeting)
        while (raw := self.read_line()) is not None:
            tag, _, rest = raw.decode("utf-8", "replace").partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "UID":
                command, _, args = args.partition(" ")
                command = "UID " + command.upper()
            if not self.dispatch(tag, command, args):
                return

    def dispatch(self, tag: str, command: str, args: str) -> bool:
        handler = {
            "CAPABILITY": self.capability, "LOGIN": self.ok, "NOOP": self.ok,
            "SELECT": self.select, "EXAMINE": self.select, "LIST": self.list,
            "CREATE": self.create, "STATUS": self.status, "UID SEARCH": self.search,
            "UID FETCH": self.fetch, "UID MOVE": self.move, "UID COPY": self.copy,
            "UID STORE": self.ok, "UID EXPUNGE": self.expunge, "EXPUNGE": self.expunge,
            "CLOSE": self.ok, "ENABLE": self.ok,
        }.get(command)
        if command == "LOGOUT":
            self.line("* BYE scripted server logging out")
            self.line(f"{tag} OK LOGOUT completed")
            return False
        if handler is None:
            self.line(f"{tag} BAD unknown command {command}")
        else:
            handler(tag, args)
        return True

    # --------------------------------------------------------------- commands

    def ok(self, tag: str, args: str) -> None:
        self.line(f"{tag} OK done")

    def capability(self, tag: str, args: str) -> None:
        self.line(f"* CAPABILITY {CAPABILITIES}")
        self.ok(tag, args)

    def messages(self) -> list[Message]:
        assert self.selected is not None
        return self.server.folders.setdefault(self.selected, [])

    def select(self, tag: str, args: str) -> None:
        self.selected = _unquote(args)
        with self.server._lock:
            count, next_uid = len(self.messages()), self.server._next_uid
        self.line(r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft)")
        self.line(f"* {count} EXISTS")
        self.line("* 0 RECENT")
        self.line(f"* OK [UIDVALIDITY {self.server.uidvalidity}] UIDs valid")
        self.line(f"* OK [UIDNEXT {next_uid}] next UID")
        self.line(f"{tag} OK [READ-WRITE] SELECT completed")

    def list(self, tag: str, args: str) -> None:
        pattern = _unquote(args.split(" ", 1)[1]) if " " in args else ""
        with self.server._lock:
            names = [name for name in self.server.folders if name == pattern or pattern == "*"]
        for name in names:
            self.line(f'* LIST (\\HasNoChildren) "/" "{name}"')
        self.ok(tag, args)

    def create(self, tag: str, args: str) -> None:
        with self.server._lock:
            self.server.folders.setdefault(_unquote(args), [])
        self.ok(tag, args)

    def status(self, tag: str, args: str) -> None:
        name = _unquote(args.rsplit(" (", 1)[0])
        with self.server._lock:
            count = len(self.server.folders.get(name, []))
        self.line(f'* STATUS "{name}" (MESSAGES {count} UIDVALIDITY {self.server.uidvalidity})')
        self.ok(tag, args)

    def search(self, tag: str, args: str) -> None:
        tokens = args.upper().split()
        with self.server._lock:
            chosen = list(enumerate(self.messages(), start=1))
        top_uid = max((m.uid for _seq, m in chosen), default=0)
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token == "UID":
                index += 1
                wanted = _parse_set(tokens[index], top_uid)
                chosen = [(seq, m) for seq, m in chosen if m.uid in wanted]
            elif token != "ALL":
                wanted = _parse_set(token, len(chosen))
                chosen = [(seq, m) for seq, m in chosen if seq in wanted]
            index += 1
        self.line("* SEARCH" + "".join(f" {m.uid}" for _seq, m in chosen))
        self.ok(tag, args)

    def fetch(self, tag: str, args: str) -> None:
        uid_set = args.split(" ", 1)[0]
        sizes_only = "BODY" not in args.upper()
        if not sizes_only:
            self.server.fetches.append(uid_set)
        with self.server._lock:
            messages = list(enumerate(self.messages(), start=1))
        top_uid = max((m.uid for _seq, m in messages), default=0)
        wanted = _parse_set(uid_set, top_uid)
        chosen = [(seq, m) for seq, m in messages if m.uid in wanted]
        if any(self.server.faults.get(m.uid) == "no" for _seq, m in chosen):
            self.line(f"{tag} NO [SERVERBUG] Internal error occurred. Refer to server log")
            return
        for seq, message in chosen:
            if sizes_only:
                self.line(f"* {seq} FETCH (UID {message.uid} RFC822.SIZE {len(message.raw)})")
            else:
                self.send(self.fetch_response(seq, message))
        self.line(f"{tag} OK FETCH completed")

    def fetch_response(self, seq: int, message: Message) -> bytes:
        fault = self.server.faults.get(message.uid)
        announced = len(message.raw) + {"short": -OFFSET, "long": OFFSET}.get(fault or "", 0)
        uid = message.uid + 1000 if fault == "wrong-uid" else message.uid
        date = message.internaldate.strftime(INTERNALDATE)
        head = (f'* {seq} FETCH (UID {uid} RFC822.SIZE {len(message.raw)} '
                f'INTERNALDATE "{date}" BODY[] {{{announced}}}\r\n').encode()
        return head + message.raw + b")\r\n"

    def move(self, tag: str, args: str) -> None:
        self.transfer(tag, args, remove=True)

    def copy(self, tag: str, args: str) -> None:
        self.transfer(tag, args, remove=False)

    def transfer(self, tag: str, args: str, remove: bool) -> None:
        uid_set, _, folder = args.partition(" ")
        folder = _unquote(folder)
        with self.server._lock:
            top_uid = max((m.uid for m in self.messages()), default=0)
        if any(self.server.faults.get(uid) == "over-quota"
               for uid in _parse_set(uid_set, top_uid)):
            self.line(f"{tag} NO [OVERQUOTA] Quota exceeded (mailbox for user is full)")
            return
        expunged = []
        with self.server._lock:
            messages = self.messages()
            wanted = _parse_set(uid_set, max((m.uid for m in messages), default=0))
            target = self.server.folders.setdefault(folder, [])
            for seq in range(len(messages), 0, -1):
                message = messages[seq - 1]
                if message.uid in wanted:
                    target.append(message)
                    if remove:
                        del messages[seq - 1]
                        expunged.append(seq)
        for seq in expunged:
            self.line(f"* {seq} EXPUNGE")
        self.line(f"{tag} OK done")

    def expunge(self, tag: str, args: str) -> None:
        self.ok(tag, args)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _parse_set(text: str, star: int) -> set[int]:
    """An IMAP sequence set (``1,3:5,7:*``) as numbers; ``*`` is ``star``."""
    numbers: set[int] = set()
    for part in text.split(","):
        if not re.fullmatch(r"(\d+|\*)(:(\d+|\*))?", part):
            continue
        first, _, last = part.partition(":")
        low = star if first == "*" else int(first)
        high = low if not last else (star if last == "*" else int(last))
        low, high = min(low, high), max(low, high)
        numbers.update(range(low, high + 1))
    return numbers
