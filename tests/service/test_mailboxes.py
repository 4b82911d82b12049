"""Several mailboxes in one daemon ([[mailboxes]]), and several daemons sharing them."""

from __future__ import annotations

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
from support.dovecot import DovecotServer, ImapAccount
from support.smtp import SmtpSink

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
''', encoding="utf-8")
    config = config_module.load(path)
    first, second = (Pipeline.from_config(config, mailbox=box) for box in config.mailboxes)
    assert (first.mailbox, first.request_prefix, first.window) == (
        "servicedesk@example.com", "SD-", "business_hours")
    assert (second.mailbox, second.request_prefix, second.window) == ("mail", "ML-", "always")
    assert str(second.calendar.zone) == "Asia/Yekaterinburg" and f"{second.calendar.open}" == (
        "09:00:00")
    assert str(first.calendar.zone) == "Europe/Moscow"
    assert second.identity.address == "mail@example.com"
    # every desk address is a loop for every mailbox
    for pipeline in (first, second):
        assert "office@example.com" in pipeline.guard.own_addresses
        assert "servicedesk@example.com" in pipeline.guard.own_addresses


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
