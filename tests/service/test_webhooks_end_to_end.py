"""Webhooks end to end: real Dovecot, aiosmtpd, the real command line and daemon, and a
real HTTP receiver that is down, then refusing (503), then up.

`run --once` registers the letters while the receiver is down; `tickets set-status`
changes one by the CLI's own path; then the daemon (`mailroute run`) delivers
everything from its `webhooks` job. Every event arrives, signed, none lost.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, select
from support.configs import sample_letters, write_config
from support.dovecot import ImapAccount
from support.smtp import SmtpSink
from support.webhook_receiver import WebhookReceiver, verify

from mailroute.mail.webhooks import headers
from mailroute.store.models import WebhookDelivery

MAILROUTE = [sys.executable, "-m", "mailroute"]
SECRET = "end-to-end-secret"
README = Path(__file__).resolve().parents[2] / "README.md"


def mailroute(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAILROUTE, "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def delivery_rows(database_url: str) -> list[WebhookDelivery]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(WebhookDelivery).order_by(WebhookDelivery.id)))
    finally:
        engine.dispose()


def wait_until(
    condition: Callable[[], bool], timeout: float, daemon: subprocess.Popen[str]
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert daemon.poll() is None, "the daemon exited"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_events_survive_a_receiver_outage(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str
) -> None:
    receiver = WebhookReceiver(SECRET)
    (tmp_path / "hook.secret").write_text(SECRET, encoding="utf-8")
    config = write_config(tmp_path / "config.toml", account=imap_account, sink=smtp_sink,
                          database_url=database_url)
    config.write_text(config.read_text("utf-8") + "\n".join([
        "[[webhooks]]", f'url = "{receiver.url}"', 'secret_file = "hook.secret"',
        "timeout = 2.0", "retry_initial = 0.5", "retry_max = 1.0", ""]), encoding="utf-8")
    assert mailroute(config, "db", "upgrade").returncode == 0
    for raw in sample_letters():
        imap_account.append(raw)

    # Down: intake and replies are untouched.
    result = mailroute(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    assert imap_account.uids("INBOX") == []
    assert len(smtp_sink.wait_for(5)) == 5
    rows = delivery_rows(database_url)
    assert len(rows) >= 4 and {row.state for row in rows} == {"pending"}
    assert "Connection refused" in (rows[0].last_error or "")

    result = mailroute(config, "tickets", "set-status", "SD-000003", "in_progress",
                       "--note", "called back")
    assert result.returncode == 0, result.stderr
    expected = len(delivery_rows(database_url))
    assert expected == len(rows) + 1

    receiver.start()
    receiver.refuse_with = 503
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: receiver.refused >= 2, 30, daemon)  # 503 is retried
        receiver.refuse_with = None
        wait_until(lambda: {row.state for row in delivery_rows(database_url)} == {"sent"},
                   30, daemon)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _out, stderr = daemon.communicate(timeout=30)
        receiver.stop()
    assert daemon.returncode == 0, stderr
    assert "webhook retry" in stderr and "webhook sent" in stderr

    rows = delivery_rows(database_url)
    assert receiver.bad_signatures == 0
    ids = {json.loads(row.payload)["id"] for row in rows}
    assert {item.delivery for item in receiver.received} == ids  # none lost
    assert len(receiver.received) == expected  # and none twice here
    events = Counter(item.event for item in receiver.received)
    assert events["request.created"] == 4
    by_cli = [item.body for item in receiver.received if item.body.get("by") == "operator"]
    assert [(body["request"]["number"], body["old"], body["new"]) for body in by_cli] == [
        ("SD-000003", "new", "in_progress")]


def test_readme_verifier_accepts_our_signature() -> None:
    """The receiver code the README gives works on what mailroute sends."""
    text = README.read_text("utf-8")
    section = text[text.index("## Webhooks"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    namespace: dict[str, object] = {}
    exec(code.group(1), namespace)  # our own README's code
    readme_verify = namespace["verify"]
    assert callable(readme_verify)

    from mailroute.config import WebhookConfig

    hook = WebhookConfig(url="https://x.example/h", secret_file="-")
    hook.secret = hook.secret.__class__(SECRET)
    body = json.dumps({"event": "request.created", "id": "d-1"})
    sent = headers(hook, "request.created", body, str(int(time.time())))
    assert readme_verify(SECRET.encode(), sent, body.encode())
    assert verify(SECRET, sent, body.encode())
    assert not readme_verify(SECRET.encode(), sent, body.encode() + b" ")
    assert not readme_verify(b"other", sent, body.encode())
