"""A letter that is slow to understand costs at most its budget, and the desk goes on.

The slow letter here is made slow on purpose, independent of any fix to mailroute's
own patterns: an admin's classification rule with a catastrophic regular expression
(``(x+x+)+y`` against a line of x's backtracks for longer than the universe lasts).
Its letter must cost ``[limits] letter_seconds`` and no more, be quarantined naming
the stage, and the letters behind it must be answered, in ``run``, ``run --once``,
``replay`` and ``explain``, on SQLite and PostgreSQL, with Dovecot and aiosmtpd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from support.configs import write_config
from support.dovecot import ImapAccount
from support.processes import cpu_ticks, running
from support.smtp import SmtpSink

from mailroute.config import Config
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.workers import Interrupted, Understanding

MAILROUTE = [sys.executable, "-m", "mailroute"]
CATASTROPHIC_RULE = """
[[classification.rules]]
name = "test:catastrophic"
fields = ["own_text"]
regex = "(x+x+)+y"
sets = { request_type = "incident" }
"""


def slow_letter(tag: str = "slow") -> bytes:
    message = EmailMessage()
    message["From"] = "attacker@evil.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = "Не работает"
    message["Message-ID"] = f"<{tag}@evil.example>"
    message.set_content("Не работает отчёт.\n\n" + "x" * 60 + "\n")
    return bytes(message)


def ordinary_letter(number: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"user{number}@client.example"
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка {number}"
    message["Message-ID"] = f"<behind-{number}@client.example>"
    message.set_content(f"Не работает отчёт {number}.\n\nООО «Клиент»\nрег. номер 800123456")
    return bytes(message)


def slow_config(budget: float) -> Config:
    return Config.model_validate({
        "limits": {"letter_seconds": budget},
        "classification": {"rules": [{"name": "test:catastrophic", "fields": ["own_text"],
                                      "regex": "(x+x+)+y",
                                      "sets": {"request_type": "incident"}}]},
    })


def write_slow_config(path: Path, budget: float, **kwargs: object) -> Path:
    extra = kwargs.pop("extra", None) or {}
    extra = {**extra, "limits": {"letter_seconds": budget}}  # type: ignore[dict-item]
    write_config(path, extra=extra, **kwargs)  # type: ignore[arg-type]
    path.write_text(path.read_text() + CATASTROPHIC_RULE)
    return path


def mailroute(
    config: Path, *arguments: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAILROUTE, "--config", str(config), *arguments],
                          capture_output=True, text=True, timeout=timeout, check=False)


# ------------------------------------------------------------------- the worker alone


def test_a_letter_over_budget_is_given_up_naming_the_stage_and_the_rest_are_understood() -> None:
    pipeline = Pipeline.from_config(slow_config(1.0))
    raws = [ordinary_letter(1), slow_letter(), ordinary_letter(2)]
    workers = Understanding(pipeline.context, pipeline.limits, 1, pipeline.letter_seconds)
    try:
        first, slow, last = workers.understand_all(raws)
    finally:
        workers.close()
    assert first.analysis is not None and last.analysis is not None
    assert slow.analysis is None and slow.fault is not None
    assert slow.fault.stage == "analyze:classify"
    assert "more than the 1 s budget" in slow.fault.reason
    cpu = float(slow.fault.reason.split("; ")[1].split(" s CPU")[0])
    assert 1.0 <= cpu < 1.5  # given up at the budget (checked every 50 ms), not later


def test_a_stop_kills_the_worker_mid_letter() -> None:
    pipeline = Pipeline.from_config(slow_config(600))
    stop = threading.Event()
    workers = Understanding(pipeline.context, pipeline.limits, 1, pipeline.letter_seconds, stop)
    try:
        job = workers.submit([slow_letter()])
        slot = workers._slots[0]
        while slot.worker is None:
            time.sleep(0.01)
        pid = slot.worker.process.pid
        time.sleep(1)
        asked = time.monotonic()
        stop.set()
        with pytest.raises(Interrupted):
            workers.results(job)
        took = time.monotonic() - asked
    finally:
        workers.close()
    assert took < 5
    assert pid is not None and not running(pid)


ORPHANING_PARENT = """
import os, signal, sys, time
sys.path[:0] = {paths!r}
from test_budget import Pipeline, Understanding, slow_config, slow_letter
pipeline = Pipeline.from_config(slow_config({budget}))
workers = Understanding(pipeline.context, pipeline.limits, 1, pipeline.letter_seconds)
workers.submit([slow_letter()])
slot = workers._slots[0]
while slot.worker is None:
    time.sleep(0.01)
print(slot.worker.process.pid, flush=True)
time.sleep(0.3)  # deep in the letter, well inside its budget
os.kill(os.getpid(), signal.SIGKILL)  # the daemon dies; its watch over the worker with it
"""


def _process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (Z: ended, not reaped), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def test_a_worker_left_deep_in_a_letter_by_a_dead_daemon_is_ended_by_the_kernel() -> None:
    """The catastrophic rule holds the interpreter lock, so the worker's thread watching
    for its parent never runs: without RLIMIT_CPU it would burn a core for ever. With a
    1 s budget the kernel ends it after 3 s of CPU (BACKSTOP_BUDGETS, plus a second)."""
    budget = 1.0
    script = ORPHANING_PARENT.format(paths=sys.path, budget=budget)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent,
                              start_new_session=True)  # its group: the forkserver, the worker
    try:
        out, err = parent.communicate(timeout=60)
        assert parent.returncode == -signal.SIGKILL, err
        worker = int(out.split()[0])
        limits = Path(f"/proc/{worker}/limits").read_text() if _process_state(worker) else ""
        deadline = time.monotonic() + 60  # 3 s of CPU, however loaded the machine
        while _process_state(worker) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.1)
        state = _process_state(worker)
    finally:  # whatever happened, nothing of the orphaned group keeps a core busy
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
    assert state in (None, "Z"), f"the orphaned worker {worker} still runs ({state})"
    if limits:  # read while it ran: the soft limit the worker set itself, in seconds
        soft = next(line for line in limits.splitlines() if line.startswith("Max cpu time"))
        assert soft.split()[3].isdigit(), soft


# ------------------------------------------------------- the daemon, real servers


def _requests_and_quarantine(url: str) -> tuple[int, list[tuple[str, str]]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            requests = conn.execute(text("select count(*) from requests")).scalar_one()
            quarantined = [tuple(row) for row in conn.execute(
                text("select stage, error from letters where state = 'quarantined'"))]
    finally:
        engine.dispose()
    return requests, quarantined  # type: ignore[return-value]


def test_a_slow_letter_does_not_hold_up_the_twenty_behind_it(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str,
) -> None:
    """The "done when": the slow letter costs its budget, the 20 behind it are answered
    within a minute of arriving, the slow one is quarantined (`run`, IDLE intake)."""
    config = write_slow_config(tmp_path / "config.toml", 2.0, account=imap_account,
                               sink=smtp_sink, database_url=database_url,
                               extra={"logging": {"level": "warning"}})
    assert mailroute(config, "db", "upgrade").returncode == 0
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        arrived = time.monotonic()
        imap_account.append(slow_letter())
        for number in range(20):
            imap_account.append(ordinary_letter(number))
        replies = smtp_sink.wait_for(20, timeout=60)
        answered = time.monotonic() - arrived
        deadline = time.monotonic() + 30
        while imap_account.uids("INBOX") and time.monotonic() < deadline:
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=20)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, stderr.decode()[-3000:]
    assert answered < 60
    assert len({mail.message["To"] for mail in replies}) == 20
    assert all("evil.example" not in mail.message["To"] for mail in replies)
    assert len(imap_account.uids("Quarantine")) == 1
    assert len(imap_account.uids("Processed")) == 20
    requests, quarantined = _requests_and_quarantine(database_url)
    assert requests == 20
    ((stage, error),) = quarantined
    assert stage == "analyze:classify" and "2 s budget" in error
    print(f"\n20 letters behind a slow one answered {answered:.1f} s after arriving")


def test_run_once_quarantines_a_slow_letter_and_replay_and_retry_name_the_budget(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
) -> None:
    config = write_slow_config(tmp_path / "config.toml", 1.0, account=imap_account,
                               sink=smtp_sink, database_url=sqlite_url)
    assert mailroute(config, "db", "upgrade").returncode == 0
    imap_account.append(ordinary_letter(1))
    imap_account.append(slow_letter())
    imap_account.append(ordinary_letter(2))
    once = mailroute(config, "run", "--once")
    assert once.returncode == 0, once.stderr[-3000:]
    assert len(smtp_sink.wait_for(2, timeout=10)) == 2
    assert len(imap_account.uids("Quarantine")) == 1
    _, quarantined = _requests_and_quarantine(sqlite_url)
    assert [stage for stage, _error in quarantined] == ["analyze:classify"]

    letter_file = tmp_path / "slow.eml"
    letter_file.write_bytes(slow_letter("replayed"))
    replayed = mailroute(config, "replay", str(letter_file))
    assert replayed.returncode == 1
    assert "quarantined" in replayed.stdout and "analyze:classify" in replayed.stdout
    assert "1 s budget" in replayed.stdout

    listed = json.loads(mailroute(config, "quarantine", "list", "--json").stdout)
    retried = mailroute(config, "quarantine", "retry", str(listed[0]["id"]),
                        "--letter-seconds", "2")
    assert retried.returncode == 1
    assert "analyze:classify" in retried.stdout and "2 s budget" in retried.stdout


def test_explain_reports_an_overrun_instead_of_hanging(tmp_path: Path) -> None:
    config = write_slow_config(tmp_path / "config.toml", 1.0, account=None, sink=None,
                               database_url="sqlite:///" + str(tmp_path / "unused.db"))
    letter_file = tmp_path / "slow.eml"
    letter_file.write_bytes(slow_letter())
    explained = mailroute(config, "explain", "--json", str(letter_file), timeout=60)
    result = json.loads(explained.stdout)
    assert result["action"] == "quarantine"
    assert result["stage"] == "analyze:classify" and "1 s budget" in result["error"]


def _descendants_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    return children


def _descendants(pid: int) -> list[int]:
    children = _descendants_by_parent()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _worker_of(daemon: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """The daemon's worker on the slow letter: a child of its forkserver (a grandchild)
    that is spending CPU. A daemon may hold another worker, idle (one kept from an
    earlier pass): stopping that one instead stopped nothing, and the letter ran out
    its budget while the test waited for it to be stuck (flaky about one run in two)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        family = _descendants(daemon.pid)
        children = set(_descendants_by_parent().get(daemon.pid, []))
        for pid in (pid for pid in family if pid not in children and running(pid)):
            if cpu_ticks(pid) >= BUSY_TICKS:
                return pid
        time.sleep(0.02)
    raise AssertionError("the daemon started no worker that spends CPU")


BUSY_TICKS = 20  # 0.2 s of CPU (at 100 ticks a second): the letter is being understood


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker in /proc")
def test_sigterm_mid_letter_stops_the_daemon_within_seconds(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, sqlite_url: str,
) -> None:
    config = write_slow_config(tmp_path / "config.toml", 600, account=imap_account,
                               sink=smtp_sink, database_url=sqlite_url)
    assert mailroute(config, "db", "upgrade").returncode == 0
    imap_account.append(slow_letter())
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        worker = _worker_of(daemon)
        time.sleep(2)  # well into the letter
        stopping = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        _, stderr = daemon.communicate(timeout=30)
        took = time.monotonic() - stopping
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, stderr.decode()[-3000:]
    assert took < 10
    assert not running(worker)
    assert imap_account.uids("INBOX") != []  # left for the next run, not lost
    engine = create_engine(sqlite_url)
    with engine.connect() as conn:
        states = conn.execute(text("select state from letters")).scalars().all()
    engine.dispose()
    assert states == ["pending"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker in /proc")
def test_status_is_unhealthy_while_a_letter_is_in_hand_longer_than_its_budget(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str,
) -> None:
    """A worker that spends no CPU (stopped here with SIGSTOP; a starved or swapped one in
    life) is not over its CPU budget, but the desk is stuck: `status` must say so."""
    # A 3 s budget: the wall-clock backstop gives the letter up at 30 s, which leaves a
    # loaded machine time for several `status` runs (each a new process) before that.
    config = write_slow_config(tmp_path / "config.toml", 3.0, account=imap_account,
                               sink=smtp_sink, database_url=database_url)
    assert mailroute(config, "db", "upgrade").returncode == 0
    imap_account.append(slow_letter())
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = _worker_of(daemon)
        os.kill(worker, signal.SIGSTOP)
        deadline = time.monotonic() + 25
        status = mailroute(config, "status", "--json")
        while "in hand" not in status.stdout and time.monotonic() < deadline:
            time.sleep(0.3)
            status = mailroute(config, "status", "--json")
        os.kill(worker, signal.SIGCONT)
        assert status.returncode == 1, status.stdout
        problems = json.loads(status.stdout)["problems"]
        assert any("in hand" in p and "budget is 3 s" in p for p in problems), problems
        deadline = time.monotonic() + 60
        while imap_account.uids("INBOX") and time.monotonic() < deadline:
            time.sleep(0.2)
        after = json.loads(mailroute(config, "status", "--json").stdout)
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        finally:
            if daemon.poll() is None:
                daemon.kill()
    assert after["in_hand_since"] is None
    assert not any("in hand" in p for p in after["problems"])
    assert len(imap_account.uids("Quarantine")) == 1
