"""Understanding letters in a worker process: the same verdicts, in order, survivable."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from support.dovecot import ImapAccount
from support.processes import running

from mailroute.config import Config
from mailroute.core.reply_policy import bounced_addresses
from mailroute.mail.imap import ImapSource
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.intake import drain
from mailroute.pipeline.workers import Understanding, understand
from mailroute.store import Store
from mailroute.store.models import Letter, Request

LETTERS = sorted((Path(__file__).parents[1] / "letters").glob("*.eml"))[:40]
PICTURE = os.urandom(50_000)
BROKEN = b"From: a@b.example\r\nContent-Type: multipart/mixed\r\n\r\nno boundary at all"


def verdict_summary(raw: bytes, pipeline: Pipeline, known: object) -> tuple[object, ...]:
    parsed, analysis, fault = known.parsed, known.analysis, known.fault  # type: ignore[attr-defined]
    return (
        parsed.message_id if parsed else None,
        parsed.text if parsed else None,
        [a.sha256 for a in parsed.attachments] if parsed else None,
        analysis.as_dict() if analysis else None,
        (fault.stage, fault.reason) if fault else None,
    )


def test_a_worker_gives_the_verdicts_this_process_would() -> None:
    pipeline = Pipeline.from_config(Config())
    raws = [path.read_bytes() for path in LETTERS] + [BROKEN, b"\x00\xff" * 10]
    here = [understand(raw, pipeline.context, pipeline.limits) for raw in raws]
    workers = Understanding(pipeline.context, pipeline.limits, workers=1, letter_seconds=60)
    try:
        there = workers.understand_all(raws)
    finally:
        workers.close()
    assert [verdict_summary(r, pipeline, k) for r, k in zip(raws, there, strict=True)] == [
        verdict_summary(r, pipeline, k) for r, k in zip(raws, here, strict=True)]
    assert sum(1 for known in there if known.analysis is not None) >= len(LETTERS) - 2


def a_bounce_with_a_file() -> bytes:
    """A delivery report (deciding reads its report part) that also carries a picture."""
    picture = base64.encodebytes(PICTURE).replace(b"\n", b"\r\n")
    return (
        b"From: MAILER-DAEMON@mx.customer.example\r\n"
        b"To: servicedesk@vendor.example\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-with-file@mx.customer.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n"
        b"\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
        b"This is the mail system at host mx.customer.example.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.customer.example\r\n\r\n"
        b"Final-Recipient: rfc822; gone@customer.example\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"--b\r\nContent-Type: image/png; name=\"logo.png\"\r\n"
        b"Content-Disposition: attachment; filename=\"logo.png\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + picture + b"--b--\r\n"
    )


def test_a_worker_sends_files_metadata_but_not_their_bytes() -> None:
    """The daemon keeps the raw letter and reads a file from it when one is downloaded,
    so a verdict crosses the pipe without its files' decoded bytes; a delivery report,
    which deciding reads, keeps them, and the analysis holds the same letter."""
    pipeline = Pipeline.from_config(Config())
    raw = a_bounce_with_a_file()
    (here,) = [understand(raw, pipeline.context, pipeline.limits)]
    workers = Understanding(pipeline.context, pipeline.limits, workers=1, letter_seconds=60)
    try:
        (there,) = workers.understand_all([raw])
    finally:
        workers.close()
    assert here.parsed is not None and there.parsed is not None and there.analysis is not None
    assert [(a.content_type, a.size, a.sha256) for a in there.parsed.attachments] == [
        (a.content_type, a.size, a.sha256) for a in here.parsed.attachments]
    report, picture = there.parsed.attachments
    assert report.content_type == "message/delivery-status"
    assert b"Status: 5.1.1" in report.content
    assert picture.content == b"" and picture.size == 50_000
    assert len(here.parsed.attachments[1].content) == 50_000  # in this process, all of it
    assert there.analysis.letter is there.parsed
    assert bounced_addresses(there.parsed) == bounced_addresses(here.parsed) == {
        "gone@customer.example"}


def test_a_worker_freezes_what_it_started_with_before_its_first_letter() -> None:
    """A worker inherits the forkserver's imports and unpickles its rules: frozen, its
    collections never walk them (mailroute.startup). The serving loop is run here on a
    pipe with an empty batch (a real letter would set this process's RLIMIT_CPU)."""
    import ctypes
    import gc
    import multiprocessing
    import threading

    from mailroute.pipeline.workers import _serve

    pipeline = Pipeline.from_config(Config())
    gc.unfreeze()
    ours, theirs = multiprocessing.Pipe()
    serving = threading.Thread(
        target=_serve, args=(theirs, ctypes.c_int(0), pipeline.context, pipeline.limits))
    try:
        serving.start()
        ours.send(([], 60.0))
        ours.close()
        serving.join(10)
        assert not serving.is_alive()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_worker_killed_mid_batch_is_replaced_and_nothing_is_lost() -> None:
    """A worker killed from outside (the OOM killer, an operator): a fresh one takes the
    letter it had in hand and the rest; the letter is not blamed for one death."""
    pipeline = Pipeline.from_config(Config())
    raws = [path.read_bytes() for path in LETTERS[:5]] * 40
    workers = Understanding(pipeline.context, pipeline.limits, workers=1, letter_seconds=60)
    try:
        job = workers.submit(raws)
        slot = workers._slots[0]
        deadline = time.monotonic() + 60
        while slot.worker is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slot.worker is not None, "no worker started"
        os.kill(slot.worker.process.pid, signal.SIGKILL)  # type: ignore[arg-type]
        verdicts = workers.results(job)
    finally:
        workers.close()
    assert [k.fault for k in verdicts if k.fault] == []
    assert [k.parsed.message_id for k in verdicts if k.parsed] == [
        understand(r, pipeline.context, pipeline.limits).parsed.message_id  # type: ignore[union-attr]
        for r in raws]


# The forkserver is forked, then executes Python: its command line is empty in between.
_STARTED_EARLY = """
import os, time
from mailroute.pipeline.processes import start_early
start_early()
pid = os.getpid()
deadline = time.monotonic() + 10
while True:
    children = {child: open(f"/proc/{child}/cmdline", "rb").read().replace(b"\\0", b" ")
                for child in open(f"/proc/{pid}/task/{pid}/children").read().split()}
    if all(children.values()) or time.monotonic() > deadline:
        break
    time.sleep(0.01)
for child, command in children.items():
    print(child, command.decode())
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_start_early_has_the_forkserver_running_before_any_letter() -> None:
    """`run` starts it first thing: the first batch no longer waits ~0.5 s for it."""
    done = subprocess.run([sys.executable, "-c", _STARTED_EARLY], capture_output=True,
                          text=True, timeout=60, check=True)
    assert "multiprocessing.forkserver import main" in done.stdout, done.stdout


_PARENT_WITH_A_WORKER = """
import sys, time
from mailroute.config import Config
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.workers import _IDLE, Understanding
pipeline = Pipeline.from_config(Config())
workers = Understanding(pipeline.context, pipeline.limits, workers=1, letter_seconds=60)
workers.understand_all([b"From: a@b.example\\r\\n\\r\\nhello"])
print(*(worker.process.pid for worker in _IDLE._idle), flush=True)  # kept for the next pass
time.sleep(600)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_worker_leaves_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT_WITH_A_WORKER],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        worker_pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert worker_pids and all(running(pid) for pid in worker_pids)
        parent.send_signal(signal.SIGKILL)
        # A worker holding on would keep the parent's stderr open: this would time out.
        parent.communicate(timeout=20)
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in worker_pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in worker_pids)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_backlog_is_decided_in_arrival_order_with_or_without_workers(
    imap_account: ImapAccount, sqlite_url: str, workers: int
) -> None:
    for path in LETTERS[:23]:
        imap_account.append(path.read_bytes())
    config = Config.model_validate({
        "mailbox": {"host": imap_account.host, "port": imap_account.port, "security": "none",
                    "username": imap_account.username, "password": imap_account.password,
                    "batch_size": 5, "workers": workers},
        "replies": {"window": "always"},
    })
    store = Store(sqlite_url)
    store.upgrade()
    source = ImapSource(config.mailbox)
    try:
        report = drain(source, store, Pipeline.from_config(config), config.mailbox,
                       lambda: datetime.now(UTC))
        with store.transaction() as session:
            letters = session.query(Letter).order_by(Letter.id).all()
            numbers = [
                session.get(Request, letter.request_id).number  # type: ignore[union-attr]
                for letter in letters if letter.state == "processed"
            ]
            states = [letter.state for letter in letters]
    finally:
        source.close()
        store.dispose()
    assert report.fetched == 23 and len(report.outcomes) == 23
    assert "pending" not in states
    assert numbers == sorted(numbers) and len(numbers) == len(set(numbers)) >= 12
    assert [o.letter_id for o in report.outcomes] == sorted(o.letter_id for o in report.outcomes)
