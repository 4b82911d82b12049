"""`mailroute demo`: the real pipeline on embedded defaults, with nothing to install.

The bundled sample letters are delivered into a temporary Maildir (the same
intake interface IMAP uses), the database is SQLite in the same directory, and
replies go to an SMTP server (aiosmtpd) listening on loopback for the demo's
lifetime. Replies are sent at once (``window = "always"``) so they show.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from email import message_from_bytes, policy
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.controller import Controller

from mailroute import logs
from mailroute.config import Config
from mailroute.ops.tickets import list_rows
from mailroute.service.daemon import Daemon
from mailroute.store import Store
from mailroute.store.models import Letter


class _Capture:
    """aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(bytes(envelope.content))
        return "250 OK"


def run_demo(out: TextIO, keep: str | None = None) -> int:
    """Run one pass over the samples and print the requests and replies."""
    logs.configure("warning")
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mailroute-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    capture = _Capture()
    controller = Controller(capture, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        config = _demo_config(workdir, controller.port)
        if keep:
            _write_config(workdir, config)
        letters = _deliver_samples(Path(config.mailbox.maildir or ""))
        store = Store(config.database.url)
        store.upgrade()
        report = Daemon(config, store).run_once()
        _print_report(out, letters, report, store, capture.messages, workdir, keep)
        store.dispose()
    finally:
        controller.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _demo_config(workdir: Path, smtp_port: int) -> Config:
    return Config.model_validate(
        {
            "mailbox": {"maildir": str(workdir / "Maildir"), "address": "servicedesk@example.com"},
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
            "database": {"url": f"sqlite:///{workdir / 'mailroute.db'}"},
            "replies": {"window": "always"},
            "logging": {"level": "warning"},
        }
    )


def _deliver_samples(maildir: Path) -> int:
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    samples = sorted(
        (item for item in (resources.files("mailroute") / "samples").iterdir()
         if item.name.endswith(".eml")),
        key=lambda item: item.name,
    )
    now = int(time.time()) - len(samples)  # they arrive now, in order: real due times
    for order, sample in enumerate(samples):
        target = maildir / "new" / f"{now + order}.demo{order:03d}.mailroute"
        target.write_bytes(sample.read_bytes())
        os.utime(target, (now + order, now + order))
    return len(samples)


def _write_config(workdir: Path, config: Config) -> Path:
    """A config file for the kept database and Maildir, so `tickets list` can read them."""
    path = workdir / "mailroute.toml"
    path.write_text(
        f'[mailbox]\nmaildir = "{config.mailbox.maildir}"\naddress = "{config.mailbox.address}"\n'
        f'\n[database]\nurl = "{config.database.url}"\n',
        encoding="utf-8",
    )
    return path


def _print_report(
    out: TextIO, letters: int, report: Any, store: Store, replies: list[bytes],
    workdir: Path, keep: str | None,
) -> None:
    drained = report.drain
    out.write(f"mailroute demo: {letters} sample letters delivered to a Maildir\n")
    out.write(
        f"  processed {drained.count('processed')}, follow-ups {drained.count('follow_up')}, "
        f"ignored {drained.count('ignored')}, quarantined {drained.count('quarantined')}\n"
    )
    _print_set_aside(out, store, [o for o in drained.outcomes
                                  if o.state in ("ignored", "quarantined")])
    out.write("\n")
    out.write("Requests registered:\n")
    for row in reversed(list_rows(store)):
        out.write(
            f"  {row['number']}  {row['status']:<17} {row['request_type']:<15} "
            f"{row['priority']:<8} {row['organization'] or '-'} / "
            f"{row['registration_number'] or '-'}  <{row['requester']}>\n"
        )
    out.write(f"\nReplies received by the demo SMTP server ({len(replies)}):\n")
    for raw in replies:
        message = message_from_bytes(raw, policy=policy.default)
        out.write(
            f"  to {message['To']}: {message['X-Mailroute-Kind']:<15} {message['Subject']}\n"
        )
    if keep:
        out.write(f"\nDatabase and Maildir kept in {workdir}; its requests:\n")
        out.write(f"  mailroute --config {workdir / 'mailroute.toml'} tickets list\n")


def _print_set_aside(out: TextIO, store: Store, outcomes: list[Any]) -> None:
    """Each letter that became no request, by sender and subject, and why."""
    with store.transaction() as session:
        for outcome in outcomes:
            letter = session.get(Letter, outcome.letter_id)
            who = (letter.sender if letter else None) or "unknown sender"
            subject = (letter.subject if letter else None) or "(no subject)"
            out.write(f"    {outcome.state}: <{who}> \"{subject}\": {outcome.detail}\n")
