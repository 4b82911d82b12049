"""Identity: of a letter (content, not its Message-ID), of a mailbox (however a config
spells it), of a sender (who may change a request), and of a UID the server reuses.

Against Dovecot, aiosmtpd, SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError
from support.configs import write_config
from support.dovecot import DovecotServer, ImapAccount
from support.smtp import SmtpSink

from mailroute.config import Config
from mailroute.core.authresults import authentication_results, dmarc_fails
from mailroute.core.identity import canonical_folder, content_key, imap_mailbox_name
from mailroute.ops.tickets import change_status
from mailroute.service.daemon import Daemon
from mailroute.store import Store
from mailroute.store.models import Letter, LetterBytes, Request, RequestEvent

MAILROUTE = [sys.executable, "-m", "mailroute"]
NOW = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday, in the past (Dovecot clamps)


def letter(sender: str, message_id: str, body: str, subject: str = "Не проводятся документы",
           **headers: str) -> bytes:
    message = EmailMessage()
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message["From"] = sender
    message["To"] = "servicedesk@example.com"
    message["Subject"] = subject
    message["Date"] = "Mon, 16 Nov 2026 09:00:00 +0300"
    message["Message-ID"] = message_id
    message.set_content(body)
    return bytes(message)


REQUEST_TEXT = "Ошибка при проведении реализации, отгрузка стоит.\n\nООО «{org}»\nрег. номер {reg}"


@pytest.fixture
def rig(imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str) -> Iterator[Any]:
    stores: list[Store] = []

    def make(**sections: dict[str, Any]) -> Daemon:
        config = Config.model_validate({
            "mailbox": {"host": imap_account.host, "port": imap_account.port,
                        "security": "none", "username": imap_account.username,
                        "password": imap_account.password},
            "smtp": {"host": smtp_sink.host, "port": smtp_sink.port, "security": "none"},
            "database": {"url": database_url},
            "replies": {"window": "always"},
            **sections,
        })
        store = Store(database_url)
        store.upgrade()
        stores.append(store)
        return Daemon(config, store, clock=lambda: NOW)

    yield make
    for store in stores:
        store.dispose()


def requests(daemon: Daemon) -> dict[str, Request]:
    with daemon.store.transaction() as session:
        found = {r.number: r for r in session.query(Request).order_by(Request.id)}
        session.expunge_all()
        return found


def letter_states(daemon: Daemon) -> list[str]:
    with daemon.store.transaction() as session:
        return [x.state for x in session.query(Letter).order_by(Letter.id)]


# ------------------------------------------------------------- duplicates by content


def test_two_customers_with_one_message_id_get_two_requests(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """A scanner's or ERP's fixed Message-ID on two customers' different letters."""
    daemon = rig()
    fixed = "<scan@scanner.local>"
    imap_account.append(letter("ivanova@alpha.example", fixed,
                               REQUEST_TEXT.format(org="Альфа", reg="800 111 222")))
    daemon.run_once()
    imap_account.append(letter("petrov@beta.example", fixed,
                               REQUEST_TEXT.format(org="Бета", reg="800 333 444")))
    daemon.run_once()

    found = requests(daemon)
    assert sorted(found) == ["SD-000001", "SD-000002"]
    assert found["SD-000001"].requester == "ivanova@alpha.example"
    assert found["SD-000001"].registration_number == "800111222"
    assert found["SD-000002"].requester == "petrov@beta.example"
    assert found["SD-000002"].registration_number == "800333444"
    replies = smtp_sink.wait_for(2)
    assert sorted(r.rcpt_tos for r in replies) == [("ivanova@alpha.example",),
                                                    ("petrov@beta.example",)]
    assert letter_states(daemon) == ["processed", "processed"]


def test_a_redelivery_by_another_path_is_still_a_duplicate(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """Other bytes (a Received line, other line wrapping of the same words), same letter."""
    daemon = rig()
    body = REQUEST_TEXT.format(org="Альфа", reg="800 111 222")
    imap_account.append(letter("ivanova@alpha.example", "<once@alpha.example>", body))
    daemon.run_once()
    again = letter("Ivanova@Alpha.example", "<once@alpha.example>", body.replace(" ", "  "),
                   Received="from relay2.alpha.example by mx.example.com")
    imap_account.append(again)
    daemon.run_once()
    assert list(requests(daemon)) == ["SD-000001"]
    assert letter_states(daemon) == ["processed", "duplicate"]
    assert len(smtp_sink.wait_for(1)) == 1


def test_content_key_ignores_whitespace_and_case_of_the_address() -> None:
    one = content_key("A@B.example", "two  words\n", ["h2", "h1"])
    assert one == content_key("a@b.example", "two words", ["h1", "h2"])
    assert one != content_key("a@b.example", "two words", ["h1"])
    assert one != content_key("c@b.example", "two words", ["h1", "h2"])


# ----------------------------------------------------------- who may touch a request


def resolved_request(daemon: Daemon, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Any:
    """SD-000001 from ivanova@alpha.example, acknowledged, then resolved."""
    imap_account.append(letter("ivanova@alpha.example", "<original@alpha.example>",
                               REQUEST_TEXT.format(org="Альфа", reg="800 111 222")))
    daemon.run_once()
    (ack,) = smtp_sink.wait_for(1)
    change_status(daemon.store, "SD-000001", "resolved", daemon.pipeline.calendar, NOW)
    return ack


def test_a_strangers_in_reply_to_changes_nothing(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """The customer's own Message-ID (everyone on Cc knows it) in a stranger's letter."""
    daemon = rig()
    resolved_request(daemon, imap_account, smtp_sink)
    imap_account.append(letter(
        "mallory@evil.example", "<hijack@evil.example>",
        "Поправка: наш номер другой.\n\nООО «Злодей»\nрег. номер 800 999 999",
        subject="Re: Не проводятся документы", In_Reply_To="<original@alpha.example>",
        References="<original@alpha.example>"))
    daemon.run_once()

    found = requests(daemon)
    assert found["SD-000001"].status == "resolved"
    assert found["SD-000001"].registration_number == "800111222"
    assert found["SD-000001"].resolved_at is not None
    assert found["SD-000002"].requester == "mallory@evil.example"  # a request of its own
    assert letter_states(daemon) == ["processed", "processed"]


def test_the_requesters_own_in_reply_to_still_follows_up(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon = rig()
    resolved_request(daemon, imap_account, smtp_sink)
    imap_account.append(letter(
        "ivanova@alpha.example", "<again@alpha.example>", "Ошибка вернулась.",
        subject="Re: Не проводятся документы", In_Reply_To="<original@alpha.example>"))
    daemon.run_once()
    (request,) = requests(daemon).values()
    assert request.status == "new"  # reopened
    assert letter_states(daemon) == ["processed", "follow_up"]


def test_a_stranger_answering_our_reply_is_a_note(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    """Our Message-ID proves the thread (the reply was forwarded), not the right to change it."""
    daemon = rig()
    ack = resolved_request(daemon, imap_account, smtp_sink)
    imap_account.append(letter(
        "mallory@evil.example", "<forwarded@evil.example>",
        "Номер не тот.\n\nООО «Злодей»\nрег. номер 800 999 999",
        subject=f"Re: {ack.message['Subject']}", In_Reply_To=ack.message["Message-ID"]))
    daemon.run_once()

    (request,) = requests(daemon).values()
    assert request.status == "resolved"
    assert request.registration_number == "800111222"
    assert letter_states(daemon) == ["processed", "note"]
    with daemon.store.transaction() as session:
        kinds = [e.kind for e in session.query(RequestEvent).order_by(RequestEvent.id)]
    assert kinds[-1] == "note"
    assert len(smtp_sink.wait_for(1, timeout=1)) == 1  # a note is not answered


def authenticated(authserv_id: str, dmarc: str) -> str:
    return (f"{authserv_id}; spf=pass smtp.mailfrom=alpha.example; "
            f"dmarc={dmarc} (p=reject) header.from=alpha.example")


@pytest.mark.parametrize(("authserv_id", "joins"), [
    pytest.param("mx.desk.example", False, id="our-server-says-fail"),
    pytest.param("mx.forger.example", True, id="someone-elses-header-ignored"),
])
def test_a_from_failing_dmarc_at_our_server_does_not_join_by_from(
    rig: Any, imap_account: ImapAccount, smtp_sink: SmtpSink, authserv_id: str, joins: bool
) -> None:
    daemon = rig(security={"trusted_authserv_id": "mx.desk.example"})
    resolved_request(daemon, imap_account, smtp_sink)
    imap_account.append(letter(
        "ivanova@alpha.example", "<forged@evil.example>",
        "Поправка: наш номер другой.\n\nООО «Злодей»\nрег. номер 800 999 999",
        subject="Re: [SD-000001] Не проводятся документы",
        Authentication_Results=authenticated(authserv_id, "fail")))
    daemon.run_once()
    found = requests(daemon)
    assert found["SD-000001"].registration_number == "800111222"
    if joins:
        assert list(found) == ["SD-000001"]
        assert found["SD-000001"].status == "new"  # the requester reopened it
    else:
        assert found["SD-000001"].status == "resolved"
        assert sorted(found) == ["SD-000001", "SD-000002"]


def test_dmarc_results_are_read_from_our_server_only() -> None:
    raw = (b"Authentication-Results: mx.forger.example; dmarc=pass header.from=a.example\r\n"
           b"Authentication-Results: mx.desk.example;\r\n"
           b"\tdmarc=fail header.from=a.example\r\n"
           b"Subject: x\r\n\r\nAuthentication-Results: mx.desk.example; dmarc=fail\r\n")
    values = authentication_results(raw)
    assert len(values) == 2  # the body's line is not a header
    assert dmarc_fails(values, "MX.desk.example", "a.example")
    assert not dmarc_fails(values, "mx.desk.example", "b.example")  # another domain's result
    assert not dmarc_fails(values[:1], "mx.desk.example", "a.example")
    assert not dmarc_fails(["mx.desk.example; dmarc=fail (((broken"], "mx.desk.example", "a")


# ------------------------------------------------------------ one identity per mailbox


def test_canonical_mailbox_names() -> None:
    assert canonical_folder("inbox") == canonical_folder("Inbox") == "INBOX"
    assert canonical_folder("Processed") == "Processed"
    assert imap_mailbox_name("desk", "Mail.Example.COM.", 993, "inbox") == (
        imap_mailbox_name("desk", "mail.example.com", 993, "INBOX"))
    assert imap_mailbox_name("desk", "h", 993, "INBOX") != imap_mailbox_name("desk", "h", 143,
                                                                             "INBOX")


def test_the_database_refuses_the_same_bytes_twice(database_url: str) -> None:
    """The unique index, not the check before the insert, keeps a letter saved once."""
    store = Store(database_url)
    store.upgrade()

    def saved_under(uid: str) -> Letter:
        return Letter(mailbox="m", uidvalidity=1, uid=uid, sha256="f" * 64, size=1,
                      received_at=NOW, fetched_at=NOW, state="pending", attempts=0,
                      content=LetterBytes(raw=b"x"))

    try:
        with store.transaction() as session:
            session.add(saved_under("1"))
        with pytest.raises(IntegrityError), store.transaction() as session:
            session.add(saved_under("2"))
    finally:
        store.dispose()


def numbered(number: int) -> bytes:
    return letter(f"user{number}@client{number % 7}.example", f"<spelling-{number}@client>",
                  REQUEST_TEXT.format(org="Клиент", reg="800 777 111") + f"\n\nзаказ {number}")


def count(url: str, query: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(query)).scalar() or 0)
    finally:
        engine.dispose()


SENT_ROWS = "select count(*) from outbox where state = 'sent'"


@pytest.mark.slow
def test_two_instances_spelling_inbox_differently_drain_it_once(
    tmp_path: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, database_url: str
) -> None:
    """`inbox` and `INBOX`: one lock, one set of keys, each letter registered and filed once."""
    letters = 200
    with imap_account.client() as imap:
        for number in range(letters):
            imap.append("INBOX", numbered(number))
    configs = [
        write_config(tmp_path / f"{folder}.toml", account=imap_account, sink=smtp_sink,
                     database_url=database_url,
                     extra={"mailbox": {"folder": folder, "batch_size": 20}})
        for folder in ("inbox", "INBOX")
    ]
    subprocess.run([*MAILROUTE, "--config", str(configs[0]), "db", "upgrade"], check=True,
                   capture_output=True)
    runs = [subprocess.Popen([*MAILROUTE, "--config", str(config), "run", "--once"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for config in configs]
    logs = []
    for run in runs:
        _out, err = run.communicate(timeout=240)
        assert run.returncode == 0, err.decode()
        logs.append(err.decode(errors="replace"))
    # whatever one left to the other (a standby sends only), a last pass finishes
    last = subprocess.run([*MAILROUTE, "--config", str(configs[1]), "run", "--once"],
                          check=True, capture_output=True)
    logs.append(last.stderr.decode(errors="replace"))

    assert imap_account.uids("INBOX") == []
    filed = len(imap_account.uids("Processed"))
    requests_made = count(database_url, "select count(*) from requests")
    replies = smtp_sink.wait_for(letters)
    acks = [mail.message["In-Reply-To"] for mail in replies]
    print(f"inbox/INBOX: {letters} letters, {requests_made} requests, {filed} in Processed, "
          f"{len(acks) - len(set(acks))} double acknowledgements")
    assert requests_made == letters
    assert count(database_url, "select count(*) from letters") == letters
    assert filed == letters
    repeated = sorted({str(ack) for ack in acks if acks.count(ack) > 1})
    # a recurrence must say what happened: the rows behind the repeats and both runs' logs
    assert sorted(acks) == sorted(f"<spelling-{n}@client>" for n in range(letters)), (
        f"repeated In-Reply-To: {repeated[:5]}; outbox rows "
        f"{count(database_url, 'select count(*) from outbox')}, marked sent "
        f"{count(database_url, SENT_ROWS)}\n"
        + "\n".join(f"--- run {n} ---\n{log}" for n, log in enumerate(logs))
    )


# ------------------------------------------------------------------------ UID reuse


def reset_uid_state(dovecot: DovecotServer, account: ImapAccount) -> None:
    """Make Dovecot forget which UIDs its INBOX handed out, keeping UIDVALIDITY: the
    next letter delivered gets UID 1 again (a restored backup, a broken server)."""
    maildir = dovecot.root / "home" / account.username / "Maildir"
    uidlist = maildir / "dovecot-uidlist"
    header = uidlist.read_text().splitlines()[0]
    uidlist.write_text(re.sub(r" N\d+", " N1", header) + "\n")
    for index in [*maildir.glob("dovecot.index*"), *maildir.glob("dovecot.list.index*")]:
        index.unlink()


def test_a_uid_reused_for_a_new_letter_is_registered(
    rig: Any, dovecot: DovecotServer, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    daemon = rig()
    imap_account.append(letter("ivanova@alpha.example", "<first@alpha.example>",
                               REQUEST_TEXT.format(org="Альфа", reg="800 111 222")))
    daemon.run_once()
    with imap_account.client() as imap:
        validity = imap.select_folder("INBOX")[b"UIDVALIDITY"]
    reset_uid_state(dovecot, imap_account)
    imap_account.append(letter("petrov@beta.example", "<second@beta.example>",
                               REQUEST_TEXT.format(org="Бета", reg="800 333 444")))
    with imap_account.client() as imap:
        assert imap.select_folder("INBOX")[b"UIDVALIDITY"] == validity
    assert imap_account.uids("INBOX") == [1]  # the first letter's UID, another letter
    daemon.run_once()

    found = requests(daemon)
    assert sorted(found) == ["SD-000001", "SD-000002"]
    assert found["SD-000002"].requester == "petrov@beta.example"
    assert imap_account.uids("INBOX") == []
    assert len(imap_account.uids("Processed")) == 2
    assert len(smtp_sink.wait_for(2)) == 2
    with daemon.store.transaction() as session:
        keys = [(x.uidvalidity, x.uid) for x in session.query(Letter).order_by(Letter.id)]
    assert keys == [(validity, "1"), (validity, "1")]


def test_the_migration_keeps_letters_two_spellings_saved_twice(database_url: str) -> None:
    """0009 on a database that two instances (`inbox`, `INBOX`) wrote before it: names
    become canonical, the second saves become copies of the first, nothing is deleted."""
    from alembic import command

    from mailroute.store.db import _alembic_config

    store = Store(database_url)
    config = _alembic_config(store.url)
    command.upgrade(config, "0008")
    rows = [  # id, mailbox, uid, sha256, state, filed_to
        (1, "imap://desk@Mail.Example:143/inbox", "1", "a", "processed", "Processed"),
        (2, "imap://desk@mail.example:143/INBOX", "1", "a", "processed", "Processed"),
        (3, "imap://desk@mail.example:143/INBOX", "2", "b", "processed", None),
        (4, "imap://desk@Mail.Example:143/inbox", "2", "b", "pending", None),
        (5, "imap://desk@Mail.Example:143/inbox", "3", "c", "pending", None),
    ]
    try:
        with store.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO requests (id, number, status, request_type, priority, requester,"
                " language, missing, reasons, created_at, updated_at, clarifications)"
                " VALUES (9, 'SD-000009', 'new', 'incident', 'normal', 'a@b', 'ru', '[]', '[]',"
                " :now, :now, 0)"), {"now": NOW})
            for letter_id, mailbox, uid, sha, state, filed in rows:
                connection.execute(text(
                    "INSERT INTO letters (id, mailbox, uidvalidity, uid, sha256, size,"
                    " received_at, fetched_at, state, attempts, filed_to, request_id) VALUES"
                    " (:id, :mailbox, 7, :uid, :sha, 1, :now, :now, :state, 0, :filed, :req)"),
                    {"id": letter_id, "mailbox": mailbox, "uid": uid, "sha": sha,
                     "state": state, "filed": filed, "now": NOW,
                     "req": 9 if state == "processed" else None})
                connection.execute(text(
                    "INSERT INTO letter_bytes (letter_id, raw) VALUES (:id, :raw)"),
                    {"id": letter_id, "raw": sha.encode()})
            for name in ("imap://desk@Mail.Example:143/inbox", "imap://desk@mail.example:143/INBOX"):
                connection.execute(text("INSERT INTO mailboxes (name) VALUES (:name)"),
                                   {"name": name})
        store.upgrade()
        with store.engine.connect() as connection:
            found = connection.execute(text(
                "SELECT id, mailbox, copy_of, state, request_id FROM letters ORDER BY id")).all()
            names = connection.execute(text("SELECT name FROM mailboxes")).scalars().all()
    finally:
        store.dispose()
    canonical = "imap://desk@mail.example:143/INBOX"
    assert [tuple(row) for row in found] == [
        (1, "imap://desk@Mail.Example:143/inbox", None, "processed", 9),  # key taken
        (2, canonical, 1, "processed", 9),  # saved twice before: kept, marked
        (3, canonical, None, "processed", 9),
        (4, "imap://desk@Mail.Example:143/inbox", 3, "duplicate", 9),  # key taken: old name
        (5, canonical, None, "pending", None),
    ]
    assert names == [canonical]
