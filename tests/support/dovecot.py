"""A real, private Dovecot IMAP server for integration tests.

Mocked IMAP hides exactly the bugs that matter for mailroute (UID semantics, MOVE vs.
COPY+EXPUNGE, IDLE, reconnects after a server restart), so tests talk to the Dovecot binary
from the ``dovecot-imapd`` package. Each ``DovecotServer`` is fully self-contained in one
temporary directory: its own config, ``base_dir`` (sockets, pid file), log, passwd-file and
Maildir storage, listening only on 127.0.0.1 on free ports. The system-wide Dovecot (if any)
is neither used nor disturbed.

Layout of the temporary directory::

    dovecot.conf   generated config (Dovecot 2.3 syntax)
    dovecot.log    everything Dovecot logs; quoted in start-up errors
    stderr.log     the master's stderr (config errors before logging starts)
    users/<name>   one passwd-file per user, ``name:{PLAIN}password``
    dovecot-oauth2.conf.ext   token introspection settings (``oauth2_introspection_url`` only)
    tls/           test CA and server certificate (see ``certs.py``)
    run/           base_dir
    state/         state_dir
    home/<user>/Maildir

Running as root: Dovecot refuses to access mail as uid 0, so mail is stored as the
``dovecot`` system user (the package creates it). Run as an ordinary user, everything runs
as that user instead.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from imapclient import IMAPClient

from .certs import SelfSignedCertificate, make_certificate
from .processes import live_group_members, running
from .services import free_port

DOVECOT_BINARY_ENV = "MAILROUTE_DOVECOT_BINARY"
DEFAULT_DOVECOT_BINARY = "/usr/sbin/dovecot"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLIENT_TIMEOUT = 10.0


def dovecot_binary() -> Path:
    """Path of the Dovecot master binary; overridable to test the "missing" code path."""
    return Path(os.environ.get(DOVECOT_BINARY_ENV, DEFAULT_DOVECOT_BINARY))


class DovecotError(RuntimeError):
    """Dovecot did not start or stop; the message quotes its log."""


@dataclass
class ImapAccount:
    """One mailbox on the test server, with imapclient helpers for arranging and asserting.

    Every helper opens and closes its own connection so that tests never share IMAP state
    (selected folder, pending IDLE) with the code under test.
    """

    host: str
    port: int
    username: str
    password: str

    @contextlib.contextmanager
    def client(self) -> Iterator[IMAPClient]:
        """A logged-in plaintext IMAPClient, logged out on exit."""
        with IMAPClient(self.host, port=self.port, ssl=False, timeout=CLIENT_TIMEOUT) as imap:
            imap.login(self.username, self.password)
            yield imap

    def append(
        self, raw: bytes, folder: str = "INBOX", flags: Iterable[str | bytes] = ()
    ) -> int | None:
        """APPEND *raw* to *folder*; returns the new UID from Dovecot's APPENDUID reply."""
        with self.client() as imap:
            response = imap.append(folder, raw, flags=tuple(flags))
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", response)
        return int(match.group(1)) if match else None

    def uids(self, folder: str = "INBOX") -> list[int]:
        """UIDs of all messages in *folder*, ascending."""
        with self.client() as imap:
            imap.select_folder(folder, readonly=True)
            return sorted(imap.search("ALL"))

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """Raw bytes of every message in *folder* in UID order, without setting \\Seen."""
        with self.client() as imap:
            imap.select_folder(folder, readonly=True)
            uids = sorted(imap.search("ALL"))
            if not uids:
                return []
            fetched = imap.fetch(uids, ["BODY.PEEK[]"])
            return [fetched[uid][b"BODY[]"] for uid in uids]

    def flags(self, folder: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """Flags of every message in *folder*, keyed by UID."""
        with self.client() as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search("ALL")
            if not uids:
                return {}
            return {uid: tuple(flags) for uid, flags in imap.get_flags(uids).items()}

    def create_folder(self, name: str) -> None:
        """CREATE *name* (e.g. to test behaviour when the folder already exists)."""
        with self.client() as imap:
            imap.create_folder(name)

    def folders(self) -> list[str]:
        """Names of all folders of the account, as LIST returns them."""
        with self.client() as imap:
            return [str(name) for _flags, _delimiter, name in imap.list_folders()]


class DovecotServer:
    """A private Dovecot master process; see the module docstring for the layout.

    ``port`` is plaintext IMAP (plaintext login allowed, STARTTLS offered), ``tls_port`` is
    implicit TLS (imaps) with a certificate verifiable with ``ca_file``. Both stay the same
    across ``stop()``/``start()``, as does all mail, so restart tests can reconnect.

    With ``oauth2_introspection_url`` the server also offers AUTHENTICATE XOAUTH2 and
    OAUTHBEARER, checking each token by an RFC 7662 introspection POST (``token=...``) to
    that URL, which must answer ``{"active": true, "username": NAME}`` for a good token;
    every account can then log in with a password or with a token naming it.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        root: Path | None = None,
        *,
        oauth2_introspection_url: str | None = None,
        parent: Path | None = None,
    ) -> None:
        """*root* is used as is and kept; otherwise a new directory is made in *parent*
        (default: the system's temporary directory) and deleted by ``close()``."""
        self.binary = dovecot_binary()
        if not self.binary.is_file():
            raise FileNotFoundError(f"{self.binary} does not exist")
        self._owns_root = root is None
        self.root = (
            Path(tempfile.mkdtemp(prefix="mailroute-dovecot-", dir=parent))
            if root is None
            else root
        )
        self.port = free_port()
        self.tls_port = free_port()
        self.config_file = self.root / "dovecot.conf"
        self.log_file = self.root / "dovecot.log"
        self.users_dir = self.root / "users"
        self.oauth2_introspection_url = oauth2_introspection_url
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._account_numbers = itertools.count(1)
        self._prepared = False
        self._started_once = False
        self.certificate: SelfSignedCertificate | None = None

    # -- public API --------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """PEM file of the CA that signed the TLS port's certificate (``localhost``/IP)."""
        if self.certificate is None:
            raise RuntimeError("start() the server first")
        return self.certificate.ca_file

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client SSL context that trusts the server's test CA."""
        if self.certificate is None:
            raise RuntimeError("start() the server first")
        return self.certificate.client_context()

    @property
    def running(self) -> bool:
        """True while the master process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Dovecot and wait until IMAP answers; a restart keeps ports and mail.

        On the very first start a port taken by someone else in the meantime is retried
        with new ports; on restarts the ports must stay the same, so that is an error.
        """
        if self.running:
            return
        if not self._prepared:
            self._prepare()
        attempts = 1 if self._started_once else 3
        for attempt in range(attempts):
            try:
                self._spawn_and_wait()
            except _PortInUseError:
                if attempt == attempts - 1:
                    raise
                self.port, self.tls_port = free_port(), free_port()
                self._write_config()
            else:
                self._started_once = True
                return

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL) and wait until all its processes are gone."""
        process, self._process = self._process, None
        try:
            if process is not None:
                _stop_process_group(process)
        finally:
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None

    def close(self) -> None:
        """Stop the server and delete its directory (if this object created it)."""
        self.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def new_account(self) -> ImapAccount:
        """Add a user with a fresh, empty mailbox; usable immediately without a reload.

        Every user has a passwd-file of its own (``users/<name>``): Dovecot re-checks a
        passwd-file at most once a second, so a line added to one shared file could stay
        invisible for up to a second, whereas a file it has never opened is read at the
        first lookup. The static userdb derives the home directory from the name.
        """
        username = f"user{next(self._account_numbers)}"
        password = secrets.token_hex(8)
        # Write to a temporary name and rename, so Dovecot never reads a half-written file.
        user_file = self.users_dir / username
        temporary = user_file.with_suffix(".tmp")
        temporary.write_text(f"{username}:{{PLAIN}}{password}\n")
        temporary.chmod(0o644)  # the auth process runs as the dovecot user
        os.replace(temporary, user_file)
        return ImapAccount(self.host, self.port, username, password)

    def fill_maildir(self, username: str, count: int, letter: Callable[[int], bytes]) -> None:
        """Put ``letter(0)`` ... ``letter(count - 1)`` straight into the user's INBOX on disk.

        Far faster than APPEND for a folder of 200,000 letters: files go to ``cur/``
        (Dovecot need not rename them out of ``new/``), each named with its size
        (``,S=``, and ``,W=`` as the letters have CRLF line ends) so Dovecot need not read
        it to know it. Dovecot gives them UIDs, in name order, when the folder is next
        opened. Each file costs four system calls (open relative to the directory, write,
        chown, close) and no path lookup: 200,000 take 4-10 s on tmpfs.
        """
        mail_user = _mail_user()
        owner = (mail_user.pw_uid, mail_user.pw_gid)
        chown = owner != (os.geteuid(), os.getegid())
        maildir = self.root / "home" / username / "Maildir"
        for path in (maildir.parent, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
            path.mkdir(exist_ok=True)
            os.chown(path, *owner)
        base = int(time.time())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        cur = os.open(maildir / "cur", os.O_RDONLY | os.O_DIRECTORY)
        try:
            for number in range(count):
                raw = letter(number)
                size = len(raw)
                name = f"{base}.M{number:07d}P1.mailroute,S={size},W={size}:2,"
                fd = os.open(name, flags, 0o600, dir_fd=cur)
                try:
                    os.write(fd, raw)
                    if chown:
                        os.fchown(fd, *owner)
                finally:
                    os.close(fd)
        finally:
            os.close(cur)

    def kill_connections(self, username: str = "*") -> None:
        """Disconnect IMAP clients of *username* (all by default) with ``doveadm kick``.

        Unlike ``stop()`` the server keeps accepting new connections, which is what a
        "connection dropped mid-session" test needs. ``doveadm kick`` only signals the
        session processes; one of them may still answer a command already on its socket
        before it handles the signal. So this returns once those processes have exited:
        afterwards every kicked client's next command fails.
        """
        sessions = self._session_pids(username)
        self._doveadm("kick", username)
        deadline = time.monotonic() + STOP_TIMEOUT
        while live := [pid for pid in sessions if running(pid)]:
            if time.monotonic() > deadline:
                raise DovecotError(f"kicked IMAP sessions still running: {live}")
            time.sleep(0.01)

    def _session_pids(self, username: str) -> list[int]:
        """PIDs of the IMAP session processes of *username* ("*": everyone's)."""
        listing = self._doveadm("who", "-1", *([] if username == "*" else [username]))
        # "username proto pid ip" per session, under one header line.
        rows = (line.split() for line in listing.splitlines()[1:])
        return [int(row[2]) for row in rows if len(row) >= 3 and row[2].isdigit()]

    def _doveadm(self, *arguments: str) -> str:
        """Run ``doveadm`` against this instance; its output, or DovecotError on failure."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        completed = subprocess.run(
            [doveadm, "-c", str(self.config_file), *arguments],
            capture_output=True,
            text=True,
            check=False,
            timeout=STOP_TIMEOUT,
        )
        # 68 (EX_NOUSER): nobody was connected, not an error for kick or who.
        if completed.returncode not in (0, 68):
            raise DovecotError(
                f"doveadm {arguments[0]} failed ({completed.returncode}): "
                f"{completed.stderr.strip()}"
            )
        return completed.stdout

    def log(self) -> str:
        """Dovecot's log and the master's stderr so far, for error messages."""
        parts = []
        for path in (self.log_file, self.root / "stderr.log"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace").strip()
                if text:
                    parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts) or "(Dovecot logged nothing)"

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Create the directory tree, certificate and config once per server."""
        version = subprocess.run(
            [str(self.binary), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if not version.startswith("2.3."):
            raise DovecotError(
                f"{self.binary} is version {version!r}; this harness writes Dovecot 2.3 "
                "configuration (Debian 12's dovecot-imapd)"
            )
        mail_user = _mail_user()
        self.root.chmod(0o755)  # the dovecot user must reach home/ and the passwd-file
        for name in ("run", "state"):
            (self.root / name).mkdir(exist_ok=True)
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        os.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        self.users_dir.mkdir(exist_ok=True)
        self.certificate = make_certificate(self.root / "tls")
        self._write_config()
        self._prepared = True

    def _write_config(self) -> None:
        assert self.certificate is not None
        mail_user = _mail_user()
        as_root = os.geteuid() == 0
        # Non-root Dovecot cannot chroot its login processes or switch users.
        no_chroot = (
            ""
            if as_root
            else "\n".join(
                f"service {name} {{\n  chroot =\n}}"
                for name in ("imap-login", "anvil", "auth", "director", "imap-urlauth-login")
            )
        )
        auth_mechanisms, oauth2_passdb, password_mechanisms = "plain login", "", ""
        if self.oauth2_introspection_url:
            oauth2_config = self.root / "dovecot-oauth2.conf.ext"
            oauth2_config.write_text(
                _OAUTH2_TEMPLATE.format(introspection_url=self.oauth2_introspection_url)
            )
            oauth2_config.chmod(0o644)  # read by the auth process (the dovecot user)
            auth_mechanisms = "plain login xoauth2 oauthbearer"
            oauth2_passdb = _OAUTH2_PASSDB.format(args=oauth2_config)
            password_mechanisms = "\n  mechanisms = plain login"
        internal_user = "dovecot" if as_root else mail_user.pw_name
        internal_group = "dovecot" if as_root else grp.getgrgid(mail_user.pw_gid).gr_name
        login_user = "dovenull" if as_root else mail_user.pw_name
        self.config_file.write_text(
            _CONFIG_TEMPLATE.format(
                root=self.root,
                log=self.log_file,
                users=self.users_dir,
                cert=self.certificate.cert_file,
                key=self.certificate.key_file,
                port=self.port,
                tls_port=self.tls_port,
                uid=mail_user.pw_uid,
                gid=mail_user.pw_gid,
                first_valid_uid=min(mail_user.pw_uid, 500) or 1,
                internal_user=internal_user,
                internal_group=internal_group,
                login_user=login_user,
                no_chroot=no_chroot,
                auth_mechanisms=auth_mechanisms,
                oauth2_passdb=oauth2_passdb,
                password_mechanisms=password_mechanisms,
            )
        )

    def _spawn_and_wait(self) -> None:
        # Truncate the log so that an error message shows this attempt only.
        self.log_file.write_bytes(b"")
        self._stderr = (self.root / "stderr.log").open("wb")
        self._process = subprocess.Popen(
            [str(self.binary), "-F", "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            # Own process group: stop() can wait for (and kill) every child process,
            # whose inherited listening sockets would otherwise block a restart.
            start_new_session=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self._process.poll() is not None:
                log = self.log()
                self.stop()
                if "Address already in use" in log:
                    raise _PortInUseError(log)
                raise DovecotError(f"Dovecot exited during start-up:\n{log}")
            if _imap_greets(self.host, self.port) and _accepts(self.host, self.tls_port):
                return
            if time.monotonic() > deadline:
                log = self.log()
                self.stop()
                raise DovecotError(
                    f"Dovecot did not answer on {self.host}:{self.port} within "
                    f"{STARTUP_TIMEOUT:.0f} s:\n{log}"
                )
            time.sleep(0.05)


class _PortInUseError(DovecotError):
    pass


def memory_scratch_dir(needed: int) -> Path | None:
    """``/dev/shm`` (memory) when it is writable with *needed* bytes free, else None.

    A Maildir of 200,000 tiny files is written in 4-10 s and deleted in ~5 s on tmpfs; on
    an ext4 disk mounted with ``discard``, writing took 70-120 s and deleting 390 s.
    Containers often give ``/dev/shm`` only 64 MB, hence the check (None: use the
    ordinary temporary directory).
    """
    shm = Path("/dev/shm")
    try:
        stats = os.statvfs(shm)
    except OSError:
        return None
    if not os.access(shm, os.W_OK) or stats.f_bavail * stats.f_frsize < needed:
        return None
    return shm


def _mail_user() -> pwd.struct_passwd:
    """The system user that owns the Maildirs (see the module docstring)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("dovecot")
    except KeyError as error:
        raise DovecotError("the 'dovecot' system user does not exist") from error


def _imap_greets(host: str, port: int) -> bool:
    """True when an IMAP greeting arrives (the login process is really serving)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as connection:
            return connection.recv(64).startswith(b"* OK")
    except OSError:
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the master, then make sure no process of its group survives.

    The master needs about a second to shut its children down. Children still running
    afterwards would keep the inherited listening sockets and make a restart on the same
    ports fail, so they are waited for and, if need be, killed.
    """
    group = process.pid
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    deadline = time.monotonic() + STOP_TIMEOUT
    while live_group_members(group):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
        time.sleep(0.02)


_CONFIG_TEMPLATE = """\
# Generated by tests/support/dovecot.py: a private test instance, Dovecot 2.3 syntax.
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
instance_name = mailroute-test-{port}
log_path = {log}
info_log_path = {log}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {first_valid_uid}

# Plaintext logins over the loopback port (the daemon's plain IMAP mode); imaps for TLS.
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
auth_verbose = yes
# Answer failed logins at once: the real 2 s delay (growing to 15 s with anvil's per-IP
# penalty) would only slow down tests of the daemon's wrong-password handling.
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{oauth2_passdb}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}/%u{password_mechanisms}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}

mail_location = maildir:~/Maildir
# Tests do not survive power loss anyway; fsync only slows them down.
mail_fsync = never

service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
{no_chroot}
"""

# Token logins (XOAUTH2, OAUTHBEARER) go to the oauth2 passdb only, password logins to the
# passwd-files only, so neither ever sees the other's secret.
_OAUTH2_PASSDB = """
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {args}
}}"""

# dovecot-oauth2.conf.ext: no tokeninfo_url, so every token is checked by introspection.
_OAUTH2_TEMPLATE = """\
# Generated by tests/support/dovecot.py.
introspection_url = {introspection_url}
introspection_mode = post
username_attribute = username
active_attribute = active
active_value = true
timeout_msecs = 5000
"""
