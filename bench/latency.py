"""Issue 7: how long a customer waits for the acknowledgement while the daemon idles.

The real ``mailroute run`` (subprocess) idles on IMAP IDLE against a private Dovecot, with
replies window "always" and SMTP pointed at an aiosmtpd sink in this process. One letter at
a time is APPENDed (after a pause, so the daemon is back in IDLE) and the clock runs until
the acknowledgement reaches the sink. Only letters that the pure pipeline says will be
answered are used (picked with ``Explainer``), so every letter has a reply to wait for.

Each latency is split with the daemon's own log timestamps, to see what dominates:

* append:   the APPEND round trip (the MTA's part, not mailroute's);
* notice:   appended -> "letter fetched" (IDLE notification, SELECT/SEARCH/FETCH, save);
* decide:   fetched -> "request created" (parse, analyze, the letter's transaction);
* outbox:   created -> "reply sent" (filing, waking the outbox job, claim, SMTP);
* deliver:  "reply sent" logged -> the sink has the message (about zero, may be negative).

``--send-interval`` is the outbox job's period; the default is the production default
(15 s): the job is woken after a drain that queued replies, so it should not matter.

    python bench/latency.py                 # 100 letters, SQLite
    python bench/latency.py --n 30 --db postgresql --send-interval 0.5
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backlog import database, upgrade
from common import (
    Source,
    machine_note,
    mailroute_command,
    percentile,
    source_tree,
    terminate_on_sigterm,
)
from letters import GeneratedLetter, LetterFactory

READY_TIMEOUT = 60.0
REPLY_TIMEOUT = 60.0
TARGET_P95 = 1.0
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass
class Sample:
    """One letter's trip, as wall-clock moments (time.time())."""

    message_id: str
    started: float
    appended: float
    received: float
    fetched: float | None = None
    created: float | None = None
    sent: float | None = None

    @property
    def total(self) -> float:
        return self.received - self.started


def answered_letters(n: int, seed: int) -> Iterator[GeneratedLetter]:
    """People's letters that the pipeline will answer, each from its own sender."""
    from mailroute.config import Config
    from mailroute.ops.explain import Explainer

    explainer = Explainer.from_config(Config())
    now = datetime.now(UTC)
    taken = 0
    for letter in LetterFactory(seed).generate(n * 5):
        if letter.kind not in ("verbatim", "rebuilt"):
            continue
        if explainer.explain_bytes(letter.raw, now).get("reply"):
            yield letter
            taken += 1
            if taken == n:
                return
    raise SystemExit(f"only {taken} answerable letters among {n * 5}")


def wait_for_line(log: Path, event: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mailroute exited {process.returncode}:\n{log.read_text()}")
        if f'event="{event}"' in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise SystemExit(f"no {event!r} within {READY_TIMEOUT} s:\n{log.read_text()}")


@contextlib.contextmanager
def daemon(source: Source, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``mailroute run`` in the background, stopped with SIGTERM (then SIGKILL)."""
    with log.open("wb") as stderr:
        process = subprocess.Popen(mailroute_command("--config", str(config), "run"),
                                   stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                                   env=source.env())
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def attribute(samples: list[Sample], log: Path) -> None:
    """Fill in fetched/created/sent from the daemon's log lines."""
    fetched: dict[str, float] = {}  # letter id -> ts
    created: dict[str, tuple[str, str, float]] = {}  # letter msgid -> (letter id, request, ts)
    sent: dict[str, float] = {}  # request -> ts of its first reply sent
    for line in log.read_text(errors="replace").splitlines():
        fields = {k: v.strip('"') for k, v in FIELD.findall(line)}
        if "ts" not in fields:
            continue
        moment = datetime.fromisoformat(fields["ts"].replace("Z", "+00:00")).timestamp()
        event = fields.get("event")
        if event == "letter fetched":
            fetched[fields.get("letter", "")] = moment
        elif event == "request created":
            created[fields.get("msgid", "")] = (fields.get("letter", ""),
                                                fields.get("request", ""), moment)
        elif event == "reply sent":
            sent.setdefault(fields.get("request", ""), moment)
    for sample in samples:
        if sample.message_id not in created:
            continue
        letter, request, moment = created[sample.message_id]
        sample.created = moment
        sample.fetched = fetched.get(letter)
        sample.sent = sent.get(request)


def idle_notice(account: Any, raw: bytes, rounds: int = 10) -> list[float]:
    """Dovecot's own APPEND-to-EXISTS delay seen by a bare IDLE client, without mailroute."""
    delays = []
    with account.client() as watcher, account.client() as writer:
        watcher.select_folder("INBOX")
        for _ in range(rounds):
            watcher.idle()
            time.sleep(0.2)
            started = time.time()
            writer.append("INBOX", raw)
            while True:
                responses = watcher.idle_check(timeout=5)
                if any(len(x) > 1 and x[1] == b"EXISTS" for x in responses):
                    break
                if time.time() - started > 5:
                    break
            delays.append(time.time() - started)
            watcher.idle_done()
    return delays


def measure(args: argparse.Namespace, source: Source, workdir: Path) -> int:
    from support.configs import write_config
    from support.dovecot import DovecotServer
    from support.smtp import SmtpSink

    rng = random.Random(args.seed)
    letters = list(answered_letters(args.n, args.seed))
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(SmtpSink())
        dovecot = stack.enter_context(DovecotServer())
        bare = idle_notice(dovecot.new_account(), letters[0].raw)
        account = dovecot.new_account()
        url = stack.enter_context(database(args.db, workdir, 1))
        config = write_config(
            workdir / "config.toml", account=account, sink=sink, database_url=url,
            window="always", extra={"replies": {"send_interval": args.send_interval}},
        )
        upgrade(source, config)
        log = workdir / "mailroute.log"
        process = stack.enter_context(daemon(source, config, log))
        wait_for_line(log, "daemon ready", process)
        imap = stack.enter_context(account.client())
        print(f"# bench/latency.py: {source.label}; {machine_note()}")
        print(f"# {args.n} letters one at a time, db={args.db}, send_interval "
              f"{args.send_interval} s, pause {args.pause[0]}-{args.pause[1]} s", flush=True)
        samples: list[Sample] = []
        for number, letter in enumerate(letters, 1):
            time.sleep(rng.uniform(*args.pause))
            started = time.time()
            imap.append("INBOX", letter.raw)
            appended = time.time()
            sink.wait_for(number, timeout=REPLY_TIMEOUT)
            received = time.time()
            reply = sink.received()[-1].message
            if letter.message_id not in str(reply.get("In-Reply-To", "")):
                print(f"warning: reply {number} answers {reply.get('In-Reply-To')}, "
                      f"not {letter.message_id}", file=sys.stderr)
            samples.append(Sample(letter.message_id, started, appended, received))
        time.sleep(0.5)  # let the last log lines reach the file
        attribute(samples, log)
    report(samples)
    print(f"baseline: a bare imapclient IDLE sees Dovecot's EXISTS {percentile(bare, 0.5):.3f} s "
          f"(p50; max {max(bare):.3f} s over {len(bare)}) after the APPEND began, "
          f"without mailroute")
    return 0


def report(samples: list[Sample]) -> None:
    def line(name: str, values: list[float]) -> str:
        if not values:
            return f"{name:8} (no data)"
        return (f"{name:8} p50 {percentile(values, 0.5) * 1000:7.0f} ms   "
                f"p95 {percentile(values, 0.95) * 1000:7.0f} ms   "
                f"max {max(values) * 1000:7.0f} ms   "
                f"mean {sum(values) / len(values) * 1000:7.0f} ms")

    full = [s for s in samples if s.fetched and s.created and s.sent]
    print(line("total", [s.total for s in samples]))
    print(line("append", [s.appended - s.started for s in samples]))
    print(line("notice", [s.fetched - s.appended for s in full]))  # type: ignore[operator]
    print(line("decide", [s.created - s.fetched for s in full]))  # type: ignore[operator]
    print(line("outbox", [s.sent - s.created for s in full]))  # type: ignore[operator]
    print(line("deliver", [s.received - s.sent for s in full]))  # type: ignore[operator]
    totals = [s.total for s in samples]
    p95 = percentile(totals, 0.95)
    print(f"latency n={len(samples)}: p50 {percentile(totals, 0.5):.2f} s, p95 {p95:.2f} s, "
          f"max {max(totals):.2f} s (target p95 <= {TARGET_P95:.0f} s: "
          f"{'met' if p95 <= TARGET_P95 else 'NOT met'}); {len(full)} fully attributed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--send-interval", type=float, default=15.0)
    parser.add_argument("--pause", type=float, nargs=2, default=(0.3, 1.0),
                        metavar=("MIN", "MAX"), help="seconds between letters")
    parser.add_argument("--live", action="store_true",
                        help="measure the working tree instead of a snapshot of HEAD")
    args = parser.parse_args()
    terminate_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="mailroute-bench-latency-"))
    try:
        with source_tree(args.live) as source:
            source.activate()
            return measure(args, source, workdir)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
