"""Several mailboxes in one daemon ([[mailboxes]]), and several daemons sharing them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from support.configs import write_config
from support.dovecot import DovecotServer
from support.smtp import SmtpSink
from support.waiting import wait_until

from mailroute import config as config_module
from mailroute.pipeline.decide import Pipeline

MAILROUTE = [sys.executable, "-m", "mailroute"]


def letter(number: int, to: str, sender: str | None = None, reply_to_id: str | None = None,
           tag: str = "m") -> bytes:
    message = EmailMessage()
    message["From"] = sender or f"user{number}@client{number % 7}.example"
    message["To"] = to
    message["Subject"] = f"Ошибка при печати накладной {tag}{number}"
    message["Message-ID"] = f"<{tag}-{number}@client.example>"
    if reply_to_id:
        message["In-Reply-To"] = reply_to_id
        message["References"] = reply_to_id
    message.set_content(f"Не печатается накладная {number}, ошибка при проведении."
                        "\n\nООО «Клиент»\nрег. номер 800777111")
    return bytes(message)


def rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


def mailroute(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAILROUTE, "--config", str(config), *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_each_mailbox_numbers_answers_and_threads_on_its_own(
    tmp_path: Path, dovecot: DovecotServer, smtp_sink: SmtpSink, sqlite_url: str
) -> None:
    desk, mail = dovecot.new_account(), dovecot.new_account()
    config = write_config(
        tmp_path / "config.toml", account=None, sink=smtp_sink, database_url=sqlite_url,
        mailboxes=[
            (desk, {"name": "desk", "address": "servicedesk@example.com",
                    "aliases": ["support@example.com"]}),
            (mail, {"name": "mail", "address": "mail@example.com", "request_prefix": "ML-",
                    "default_queue": "mail-line", "from_name": "Mail Desk"}),
        ])
    assert mailroute(config, "db", "upgrade").returncode == 0
    desk.append(letter(1, "servicedesk@example.com"))
    desk.append(letter(2, "Support <support@example.com>"))
    mail.append(letter(3, "mail@example.com"))
    # a reply, in the other mailbox, to letter 1: it does not join SD-000001
    mail.append(letter(4, "mail@example.com", sender="user1@client1.example",
                       reply_to_id="<m-1@client.example>"))
    done = mailroute(config, "run", "--once")
    assert done.returncode == 0, done.stderr[-3000:]
    found = rows(sqlite_url, "select number, mailbox, queue from requests order by number")
    assert [(n, m) for n, m, _ in found] == [
        ("ML-000001", "mail"), ("ML-000002", "mail"), ("SD-000001", "desk"),
        ("SD-000002", "desk")]
    assert {q for n, _, q in found if n.startswith("ML-")} == {"mail-line"}
    assert {q for n, _, q in found if n.startswith("SD-")} == {"first-line"}
    senders = {mail_.message["X-Mailroute-Request"]: mail_.message["From"]
               for mail_ in smtp_sink.wait_for(4, timeout=30)}
    assert parseaddr(senders["SD-000001"])[1] == "servicedesk@example.com"
    assert parseaddr(senders["SD-000002"])[1] == "support@example.com"  # the alias written to
    assert senders["ML-000001"] == "Mail Desk <mail@example.com>"
    assert parseaddr(senders["ML-000002"])[1] == "mail@example.com"
    assert desk.uids("INBOX") == [] and mail.uids("INBOX") == []
    created = [line for line in done.stderr.splitlines() if "request created" in line]
    assert len(created) == 4
    assert all(re.search(r"\bmailbox=(desk|mail)\b", line) for line in created), created
    status = mailroute(config, "status", "--json")
    boxes = {box["mailbox"]: box for box in json.loads(status.stdout)["mailboxes"]}
    assert set(boxes) == {"desk", "mail"}, status.stdout
    assert all(box["last_poll_at"] and box["backlog"] == 0 for box in boxes.values())
    shown = json.loads(mailroute(config, "tickets", "show", "ML-000001", "--json").stdout)
    assert shown["mailbox"] == "mail"


def test_a_mailbox_sees_the_config_through_its_own_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('''
[replies]
window = "business_hours"

[[mailboxes]]
address = "servicedesk@example.com"

[[mailboxes]]
name = "mail"
address = "mail@example.com"
aliases = ["office@example.com"]
request_prefix = "ML-"
reply_window = "always"
business_hours = { open = "09:00", close = "17:00", timezone = "Asia/Yekaterinburg" }
templates_dir = "TMP/templates-mail"
default_queue = "office"
'''.replace("TMP", str(tmp_path)), encoding="utf-8")
    (tmp_path / "templates-mail").mkdir()
    (tmp_path / "templates-mail" / "acknowledgement.ru.txt").write_text(
        "Subject: Почта офиса: заявка {number}\n\nПриняли.\n", encoding="utf-8")
    config = config_module.load(path)
    first, second = (Pipeline.from_config(config, mailbox=box) for box in config.mailboxes)
    assert (first.mailbox, first.request_prefix, first.window) == (
        "servicedesk@example.com", "SD-", "business_hours")
    assert (second.mailbox, second.request_prefix, second.window) == ("mail", "ML-", "always")
    assert str(second.calendar.zone) == "Asia/Yekaterinburg" and f"{second.calendar.open}" == (
        "09:00:00")
    assert str(first.calendar.zone) == "Europe/Moscow"
    assert second.identity.address == "mail@example.com"
    assert "Почта офиса" in second.templates.texts[("acknowledgement", "ru")]
    assert "Почта офиса" not in first.templates.texts[("acknowledgement", "ru")]
    assert second.context.routing.default_queue == "office"
    assert first.context.routing.default_queue == "first-line"
    # every desk address is a loop for every mailbox
    for pipeline in (first, second):
        assert "office@example.com" in pipeline.guard.own_addresses
        assert "servicedesk@example.com" in pipeline.guard.own_addresses
        assert "office@example.com" in pipeline.context.own_addresses  # a loop, not a request


def test_check_config_judges_every_mailbox(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'''
[[mailboxes]]
address = "servicedesk@example.com"
maildir = "{tmp_path}/a"

[[mailboxes]]
name = "mail"
address = "mail@example.com"
''', encoding="utf-8")
    checked = mailroute(path, "check-config")
    assert checked.returncode != 0
    assert "mailboxes.1.host: set the IMAP server (or mailboxes.1.maildir)" in checked.stderr
    path.write_text(path.read_text(encoding="utf-8") + f'maildir = "{tmp_path}/b"\n',
                    encoding="utf-8")
    assert mailroute(path, "check-config").returncode == 0


def test_a_retried_letter_is_decided_by_its_own_mailbox(tmp_path: Path, sqlite_url: str) -> None:
    """`letters retry` and the console pick the pipeline of the letter's mailbox."""
    from mailroute.mail.sources import source_name
    from mailroute.ops.letters import pipeline_for
    from mailroute.store import Store

    config = config_module.Config.model_validate({"mailboxes": [
        {"address": "servicedesk@example.com", "maildir": str(tmp_path / "a")},
        {"name": "mail", "address": "mail@example.com", "request_prefix": "ML-",
         "maildir": str(tmp_path / "b")},
    ], "database": {"url": sqlite_url}})
    store = Store(sqlite_url)
    store.upgrade()
    try:
        second = pipeline_for(config, store, source_name(config.mailboxes[1]))
        first = pipeline_for(config, store, source_name(config.mailboxes[0]))
        replayed = pipeline_for(config, store, "replay")
    finally:
        store.dispose()
    assert (second.mailbox, second.request_prefix) == ("mail", "ML-")
    assert (first.request_prefix, replayed.request_prefix) == ("SD-", "SD-")


@pytest.mark.parametrize(("body", "message"), [
    ('[mailbox]\nhost = "a"\n\n[[mailboxes]]\naddress = "b@example.com"\n',
     "set [mailbox] or [[mailboxes]], not both"),
    ('[[mailboxes]]\naddress = "a@example.com"\n\n[[mailboxes]]\naddress = "A@example.com"\n',
     "two mailboxes are both called 'a@example.com'"),
    ('[[mailboxes]]\naddress = "a@example.com"\n\n[[mailboxes]]\naddress = "b@example.com"\n'
     'request_prefix = "ml"\n', ":6: mailboxes.1.request_prefix"),
])
def test_a_wrong_mailboxes_table_is_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(config_module.ConfigError, match=re.escape(message)):
        config_module.load(path)


def test_instances_are_counted_and_each_keeps_to_its_share(postgres_url: str) -> None:
    from mailroute.service.intake_loop import Share
    from mailroute.store import Store
    from mailroute.store.locks import InstanceCount

    store = Store(postgres_url)
    store.upgrade()
    counts = [InstanceCount(store) for _ in range(3)]
    try:
        assert [count.alive() for count in counts] == [1, 2, 3]
        share = Share(6, counts[0])
        assert share.limit() == 2
        for label in ("a", "b"):
            assert share.may_take(label)
            share.took(label)
        assert not share.may_take("c") and share.may_take("a")  # at its share: no more
        counts[2]._connection.invalidate()  # an instance dies: its connection goes
        counts[2]._connection = None
        time.sleep(1.1)  # the count is trusted for a second
        assert share.limit() == 3 and share.may_take("c")
        share.took("c")
        counts[2].join()  # back again: 6 / 3 = 2, one mailbox too many
        time.sleep(1.1)
        assert share.over("c") and not share.over("elsewhere")
        assert share.should_let_go("c") and not share.should_let_go("c")  # once
        assert share.held == 2 and not share.over("a")
    finally:
        for count in counts:
            count.leave()
        store.dispose()


INSTANCES, MAILBOXES, LETTERS = 3, 6, 300


def backlog_letter(box: int, number: int) -> bytes:
    from email import policy

    message = EmailMessage()
    message["From"] = f"user{box}x{number}@client{number % 11}.example"
    message["To"] = f"desk{box}@example.com"
    message["Subject"] = f"Ошибка при печати накладной {box}-{number}"
    message["Message-ID"] = f"<box{box}-{number}@client.example>"
    message.set_content(f"Не печатается накладная {box}-{number}, ошибка при проведении."
                        "\n\nООО «Клиент»\nрег. номер 800777111")
    return message.as_bytes(policy=policy.SMTP)


def held_by(log: str) -> set[str]:
    """The mailboxes an instance holds, read from its log."""
    held: set[str] = set()
    for line in log.splitlines():
        found = re.search(r"\bmailbox=(desk\d)\b", line)
        if not found:
            continue
        if "draining the mailbox" in line or "taking over the mailbox" in line:
            held.add(found.group(1))
        elif "mailbox left to another instance" in line:
            held.discard(found.group(1))
    return held


@pytest.mark.slow
def test_three_instances_share_six_mailboxes_and_take_over_a_killed_ones(
    tmp_path: Path, dovecot: DovecotServer, smtp_sink: SmtpSink, postgres_url: str
) -> None:
    """3 instances, 6 mailboxes of 300 letters; one instance SIGKILLed midway: no letter
    lost, no request twice, every request answered, its mailboxes taken over in seconds."""
    accounts = [dovecot.new_account() for _ in range(MAILBOXES)]
    for box, account in enumerate(accounts):
        dovecot.fill_maildir(account.username, LETTERS,
                             lambda number, box=box: backlog_letter(box, number))
    config = write_config(
        tmp_path / "config.toml", account=None, sink=smtp_sink, database_url=postgres_url,
        # a dead instance's claimed replies wait out its lease (at least 3 SMTP timeouts)
        extra={"replies": {"claim_timeout": 5, "desk_hourly_limit": 1_000_000,
                           "per_domain_limit": 1_000_000}, "smtp": {"timeout": 3}},
        mailboxes=[(account, {"name": f"desk{box}", "address": f"desk{box}@example.com",
                              "request_prefix": f"D{chr(65 + box)}-"})
                   for box, account in enumerate(accounts)])
    assert mailroute(config, "db", "upgrade").returncode == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = [tmp_path / f"instance{n}.log" for n in range(INSTANCES)]
    daemons = []
    total = MAILBOXES * LETTERS
    requests = "select count(*) from requests"
    count = lambda query: int(rows(postgres_url, query)[0][0])  # noqa: E731
    started = time.monotonic()
    try:
        for log in logs:
            with log.open("wb") as sink:
                daemons.append(subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                                                env=env, stdout=subprocess.DEVNULL, stderr=sink))
        # the mailboxes spread evenly: whoever started first took them all, then let go
        holdings: list[set[str]] = []

        def even() -> bool:
            holdings[:] = [held_by(log.read_text()) for log in logs]
            return sorted(map(len, holdings)) == [2, 2, 2]

        assert wait_until(even, 60), holdings
        spread_in = time.monotonic() - started
        assert wait_until(lambda: count(requests) >= total // 10, 60)  # midway, not before
        assert len(set().union(*holdings)) == MAILBOXES
        filed_then = count(requests)
        assert filed_then < total, "the backlog was drained before the spread: use more letters"
        victim = 0
        orphaned = holdings[victim]
        daemons[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        daemons[victim].wait(10)
        survivors = [n for n in range(INSTANCES) if n != victim]
        assert wait_until(lambda: orphaned <= set().union(
            *(held_by(logs[n].read_text()) for n in survivors)), 60), orphaned
        takeover = time.monotonic() - killed_at
        assert wait_until(lambda: count(requests) == total, 180), count(requests)
        drained = time.monotonic() - started
        assert wait_until(lambda: len(smtp_sink.received()) >= total, 180)
        answered = time.monotonic() - started
        final = [held_by(logs[n].read_text()) for n in survivors]
        spread = sorted(len(held) for held in final)
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(20)
    numbers = rows(postgres_url, "select mailbox, count(*), count(distinct number) from requests"
                                 " group by mailbox order by mailbox")
    assert numbers == [(f"desk{box}", LETTERS, LETTERS) for box in range(MAILBOXES)]
    for box in range(MAILBOXES):  # each prefix numbered without a gap, whoever drained it
        prefix = f"D{chr(65 + box)}-"
        found = {number for (number,) in rows(
            postgres_url, f"select number from requests where mailbox = 'desk{box}'")}
        assert found == {f"{prefix}{n:06d}" for n in range(1, LETTERS + 1)}
    assert count("select count(*) from letters") == total  # none lost, none saved twice
    assert count("select count(distinct message_id) from letters") == total
    assert count("select count(*) from letters where state <> 'processed'") == 0
    received = [mail.message["In-Reply-To"] for mail in smtp_sink.received()]
    expected = {f"<box{box}-{n}@client.example>" for box in range(MAILBOXES)
                for n in range(LETTERS)}
    assert set(received) == expected
    duplicates = len(received) - len(expected)
    for account in accounts:
        assert account.uids("INBOX") == []
    print(f"\n[{INSTANCES} instances x {MAILBOXES} mailboxes x {LETTERS} letters] spread "
          f"2/2/2 after {spread_in:.1f} s; all filed in {drained:.1f} s, answered in "
          f"{answered:.1f} s; instance {victim} "
          f"killed with {filed_then} of {total} filed, holding {sorted(orphaned)}; taken over in "
          f"{takeover:.1f} s; mailboxes per survivor at the end {spread}; duplicate replies "
          f"{duplicates}")
    assert takeover < 30
    assert duplicates <= INSTANCES  # only a reply in flight at the SIGKILL may go twice
    assert spread == [3, 3]  # the survivors share the six evenly


def test_a_requests_sla_clock_runs_in_its_mailboxs_hours(tmp_path: Path, sqlite_url: str) -> None:
    """The console's queue and a status change read a request's clock with the calendar of
    the mailbox it came in through (here one open around the clock, one 10:00-18:00)."""
    from datetime import UTC, datetime

    from mailroute.ops.tickets import calendars
    from mailroute.store import Store
    from mailroute.store.models import Request
    from mailroute.store.repository import RequestFilter
    from mailroute.web.reading import queue_page

    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    config = config_module.Config.model_validate({"mailboxes": [
        {"name": "desk", "address": "servicedesk@example.com"},
        {"name": "night", "address": "night@example.com", "business_hours": {
            "open": "00:00", "close": "23:59", "workdays": every_day, "calendar": ""}},
    ]})
    store = Store(sqlite_url)
    store.upgrade()
    saturday = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    due = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # Monday 12:00 in Moscow
    try:
        with store.transaction() as session:
            for number, mailbox in (("SD-000001", "desk"), ("SD-000002", "night")):
                session.add(Request(
                    number=number, status="new", request_type="incident", priority="normal",
                    requester="a@client.example", language="ru", missing=[], reasons=[],
                    created_at=saturday, updated_at=saturday, clarifications=0,
                    first_response_due=due, mailbox=mailbox))
        rows = {row["number"]: row["sla"].label for row in
                queue_page(store, calendars(config), RequestFilter(), saturday)["rows"]}
    finally:
        store.dispose()
    assert rows["SD-000001"] == "2h 00m", rows  # Monday 10:00-12:00 only
    assert rows["SD-000002"] == "47h 58m", rows  # Saturday to Monday, 00:00-23:59 daily
