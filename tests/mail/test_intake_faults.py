"""Servers that misbehave: one letter it will not serve, a dripped greeting, bad clocks.

Dovecot cannot produce most of these, so they run against the scripted server in
tests/support/imapserver.py; arrival times also against Dovecot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from support.configs import imap_desk_config
from support.dovecot import DovecotServer, ImapAccount, memory_scratch_dir
from support.imapserver import ScriptedImapServer

from mailroute.config import Config, HealthConfig
from mailroute.errors import MailboxUnavailable
from mailroute.mail.imap import ImapSource
from mailroute.ops.health import check_health
from mailroute.pipeline.decide import Pipeline
from mailroute.pipeline.intake import drain
from mailroute.service.metrics import Metrics
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import Letter

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def letter(number: int, date: str = "Tue, 08 Dec 2026 08:00:00 +0000") -> bytes:
    return (f"From: customer{number}@example.org\r\nTo: servicedesk@example.com\r\n"
            f"Subject: printer {number} does not print\r\nDate: {date}\r\n"
            f"Message-ID: <scripted-{number}@example.org>\r\n\r\n"
            f"Printer number {number} in room {number} stopped printing.\r\n").encode()


@pytest.fixture
def scripted() -> Iterator[ScriptedImapServer]:
    with ScriptedImapServer() as server:
        yield server


_stores: list[Store] = []


@pytest.fixture(autouse=True)
def _dispose_stores() -> Iterator[None]:
    yield
    for store in _stores:
        store.dispose()
    _stores.clear()


def setup(host: str, port: int, database_url: str, username: str = "desk",
          password: str = "secret", **mailbox: object) -> tuple[Config, Store, Pipeline]:
    config = imap_desk_config(host, port, database_url, username, password, **mailbox)
    store = Store(database_url)
    store.upgrade()
    _stores.append(store)
    return config, store, Pipeline.from_config(config)


def stored(store: Store) -> dict[str, tuple[bytes, datetime]]:
    with store.transaction() as session:
        return {row.uid: (row.raw, row.received_at) for row in session.query(Letter)}


# ------------------------------------------------------- one letter the server cannot serve


@pytest.mark.parametrize("fault", ["no", "short", "long"])
def test_one_letter_the_server_cannot_serve_does_not_block_the_rest(
    scripted: ScriptedImapServer, database_url: str, fault: str
) -> None:
    """NO [SERVERBUG], a literal cut short, a literal that swallows the next response: the
    other 19 letters are saved byte-exact and filed; the bad one waits with its own
    backoff, is shown by status and the metrics, and is taken once the server serves it."""
    originals = {scripted.add(letter(n), NOW - timedelta(hours=1)): letter(n)
                 for n in range(1, 21)}
    bad = 7
    scripted.faults[bad] = fault
    config, store, pipeline = setup(scripted.host, scripted.port, database_url, timeout=2)
    clock = [NOW]
    source = ImapSource(config.mailbox)
    try:
        report = drain(source, store, pipeline, config.mailbox, lambda: clock[0])
    finally:
        source.close()

    saved = stored(store)
    assert sorted(map(int, saved)) == sorted(set(originals) - {bad})
    assert all(saved[str(uid)][0] == originals[uid] for uid in originals if uid != bad)
    assert scripted.uids("INBOX") == [bad]
    assert len(scripted.uids("Processed")) == 19
    assert report.unserved == 1
    assert report.next_attempt_at == NOW + timedelta(minutes=1)  # the wait ends by then
    with store.transaction() as session:
        (fault_row,) = repo.letter_faults(session)
        assert (fault_row.uid, fault_row.action, fault_row.attempts) == (str(bad), "fetch", 1)
        assert fault_row.next_attempt_at == NOW + timedelta(minutes=1)
    health = check_health(store, HealthConfig(), NOW)
    assert not health.healthy
    assert any("will not serve" in problem and f"uid {bad}" in problem
               for problem in health.problems)
    metrics = Metrics(store)
    metrics.observe_drain(report, 1.0, "desk")
    assert metrics.registry.get_sample_value("mailroute_letters_set_aside",
                                             {"action": "fetch"}) == 1
    assert metrics.registry.get_sample_value("mailroute_letter_faults_total",
                                             {"mailbox": "desk", "action": "fetch"}) == 1

    # Resting: the next pass does not ask for it again; nor does it fail.
    asked = len(scripted.fetches)
    source = ImapSource(config.mailbox)
    try:
        drain(source, store, pipeline, config.mailbox, lambda: clock[0])
        assert len(scripted.fetches) == asked

        # Served again after its backoff: saved, filed, no longer reported.
        del scripted.faults[bad]
        clock[0] = NOW + timedelta(minutes=2)
        last = drain(source, store, pipeline, config.mailbox, lambda: clock[0])
    finally:
        source.close()
    assert last.next_attempt_at is None
    assert stored(store)[str(bad)][0] == originals[bad]
    assert scripted.uids("INBOX") == []
    with store.transaction() as session:
        assert repo.letter_faults(session) == []


def test_the_daemon_retries_a_letter_set_aside_when_it_is_due_not_at_the_next_idle(
    scripted: ScriptedImapServer, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a pass that set a letter aside, the daemon's wait for new mail ends when
    that letter is due again. It waited the whole IDLE (or poll) instead, up to 29 min
    with nothing new arriving: a letter the server failed once, during a dropped
    connection, sat in the inbox until then (seen in the IMAP restart fault test)."""
    from mailroute.pipeline import intake
    from mailroute.service.daemon import Daemon

    monkeypatch.setattr(intake, "FAULT_RETRY_FIRST", timedelta(seconds=1))
    for number in (1, 2, 3):
        scripted.add(letter(number), datetime.now(UTC) - timedelta(minutes=5))
    scripted.faults[2] = "no"
    config, store, _pipeline = setup(scripted.host, scripted.port, sqlite_url, timeout=2,
                                     idle_timeout=600, poll_interval=600)
    daemon = Daemon(config, store)
    (loop,) = daemon.intakes
    thread = threading.Thread(target=loop.loop, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while scripted.uids("INBOX") != [2] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scripted.uids("INBOX") == [2], "the first pass set letter 2 aside"
        del scripted.faults[2]  # served from now on
        set_aside = time.monotonic()
        while scripted.uids("INBOX") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scripted.uids("INBOX") == [], "letter 2 still waits (for the IDLE's end)"
        assert time.monotonic() - set_aside < 10
    finally:
        daemon.stop.set()
        thread.join(15)
        loop.drop_source()
    assert sorted(map(int, stored(store))) == [1, 2, 3]
    with store.transaction() as session:
        assert repo.letter_faults(session) == []


def test_a_fault_left_for_a_letter_gone_from_the_folder_does_not_cut_the_wait(
    scripted: ScriptedImapServer, sqlite_url: str
) -> None:
    """Only letters still listed count: a fault row whose letter someone moved away by
    hand would otherwise end every wait for new mail at once."""
    scripted.add(letter(1), NOW)
    config, store, pipeline = setup(scripted.host, scripted.port, sqlite_url)
    source = ImapSource(config.mailbox)
    try:
        uidvalidity = source.select()
        with store.transaction() as session:
            repo.record_letter_fault(session, source.name, uidvalidity, "999", action="fetch",
                                     error="gone", now=NOW,
                                     retry_after=lambda _attempts: timedelta(minutes=1))
        report = drain(source, store, pipeline, config.mailbox, lambda: NOW)
    finally:
        source.close()
    assert report.fetched == 1
    assert report.next_attempt_at is None


def test_a_letter_that_fails_again_backs_off_further(
    scripted: ScriptedImapServer, sqlite_url: str
) -> None:
    scripted.add(letter(1), NOW)
    scripted.faults[1] = "no"
    config, store, pipeline = setup(scripted.host, scripted.port, sqlite_url)
    source = ImapSource(config.mailbox)
    try:
        for minutes in (0, 2, 5):
            moment = NOW + timedelta(minutes=minutes)
            drain(source, store, pipeline, config.mailbox, lambda at=moment: at)
    finally:
        source.close()
    with store.transaction() as session:
        (fault,) = repo.letter_faults(session)
    assert fault.attempts == 3
    assert fault.next_attempt_at == NOW + timedelta(minutes=5 + 4)
    assert "SERVERBUG" in fault.error


def test_a_server_that_goes_away_is_an_outage_not_a_letter_fault(
    scripted: ScriptedImapServer, sqlite_url: str
) -> None:
    for n in range(1, 4):
        scripted.add(letter(n), NOW)
    config, _store, _pipeline = setup(scripted.host, scripted.port, sqlite_url, timeout=2)
    source = ImapSource(config.mailbox)
    source.select()
    uids = source.list_uids()
    scripted.close()
    try:
        with pytest.raises(MailboxUnavailable):
            list(source.fetch(uids))
    finally:
        source.close()


# ------------------------------------------------------------------- dripped greeting


def test_a_dripped_greeting_does_not_hold_intake_past_timeout(
    scripted: ScriptedImapServer,
) -> None:
    """One byte every 0.2 s keeps each read well inside a 1 s timeout; the whole connect
    must still give up after about 1 s, naming the server."""
    scripted.drip_greeting = True
    config = Config.model_validate({"mailbox": {
        "host": scripted.host, "port": scripted.port, "security": "none",
        "username": "desk", "password": "secret", "timeout": 1}})
    source = ImapSource(config.mailbox)
    outcome: list[BaseException | int] = []

    def connect() -> None:
        try:
            outcome.append(source.select())
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(30)
    elapsed = time.monotonic() - started
    source.close()
    assert not thread.is_alive(), "connect still waiting for the greeting after 30 s"
    print(f"\ndripped greeting, timeout 1 s: gave up after {elapsed:.2f} s")
    (error,) = outcome
    assert isinstance(error, MailboxUnavailable)
    assert f"{scripted.host}:{scripted.port}" in str(error)
    assert "mailbox.timeout" in str(error)
    assert elapsed < 15


# ----------------------------------------------------------------------- arrival times


def test_a_future_arrival_time_is_replaced_by_the_time_first_seen(
    scripted: ScriptedImapServer, sqlite_url: str
) -> None:
    """2099 would never breach. (Dovecot itself turns a future APPEND date into now.)"""
    scripted.add(letter(1), datetime(2099, 1, 1, tzinfo=UTC))
    scripted.add(letter(2), NOW + timedelta(hours=20))  # within a day: clocks drift
    config, store, pipeline = setup(scripted.host, scripted.port, sqlite_url)
    source = ImapSource(config.mailbox)
    try:
        drain(source, store, pipeline, config.mailbox, lambda: NOW)
    finally:
        source.close()
    arrivals = {raw: received for raw, received in stored(store).values()}
    assert arrivals == {letter(1): NOW, letter(2): NOW + timedelta(hours=20)}


@pytest.mark.parametrize("internaldate", [datetime(1970, 1, 1, tzinfo=UTC)])
def test_an_implausible_arrival_time_is_replaced_by_the_time_first_seen(
    imap_account: ImapAccount, database_url: str, internaldate: datetime
) -> None:
    """Dovecot keeps an APPEND's INTERNALDATE of 1970; an SLA clock must not."""
    now = datetime.now(UTC).replace(microsecond=0)
    date = now.strftime("%a, %d %b %Y %H:%M:%S +0000")
    with imap_account.client() as imap:
        imap.append("INBOX", letter(1, date), msg_time=internaldate)
        imap.append("INBOX", letter(2, date), msg_time=now - timedelta(hours=2))
    config, store, pipeline = setup(imap_account.host, imap_account.port, database_url,
                                    imap_account.username, imap_account.password)
    source = ImapSource(config.mailbox)
    try:
        drain(source, store, pipeline, config.mailbox, lambda: now)
    finally:
        source.close()
    arrivals = {raw: received for raw, received in stored(store).values()}
    assert arrivals[letter(1, date)] == now
    assert arrivals[letter(2, date)] == now - timedelta(hours=2)  # plausible: kept


# ----------------------------------------------------------------------- a huge folder

HUGE_FOLDER = 200_000  # ~1.3 MB of UIDs in one SEARCH answer: past imapclient's 1 MB line
HUGE_FOLDER_SPACE = 2 * 1024**3  # 200,000 files of one 4 KiB page each, indexes, headroom


@pytest.fixture
def huge_folder_dovecot() -> Iterator[DovecotServer]:
    """A Dovecot of its own, in memory where there is room, deleted right after the test.

    On the session's server the 200,000 files would stay on disk until the session
    ended, and deleting them from ext4 took 390 s; from tmpfs it takes ~5 s.
    """
    server = DovecotServer(parent=memory_scratch_dir(HUGE_FOLDER_SPACE))
    try:
        server.start()
        yield server
    finally:
        server.close()


class _CountingSource(ImapSource):
    """Remembers how many UIDs the pass listed: proof that all of the folder was seen."""

    listed = 0

    def list_uids(self) -> list[str]:
        uids = super().list_uids()
        self.listed = len(uids)
        return uids


@pytest.mark.slow
def test_a_folder_of_200000_letters_is_read_from_the_first_batch(
    huge_folder_dovecot: DovecotServer, sqlite_url: str
) -> None:
    """One UID SEARCH ALL over 160,000 letters outgrew imapclient's 1 MB line limit and
    nothing was ever saved. Listed in windows, the first letter is saved in seconds.
    (SQLite only: the time goes to the IMAP side, not the database.)"""
    account = huge_folder_dovecot.new_account()
    filled = time.monotonic()
    huge_folder_dovecot.fill_maildir(account.username, HUGE_FOLDER, lambda n: (
        f"From: c{n}@example.org\r\nSubject: {n}\r\nMessage-ID: <huge-{n}@example.org>\r\n"
        f"\r\nletter {n}\r\n").encode())
    filled = time.monotonic() - filled
    config, store, pipeline = setup(account.host, account.port, sqlite_url, account.username,
                                    account.password, timeout=60, workers=0)
    stop = threading.Event()
    failure: list[BaseException] = []
    source = _CountingSource(config.mailbox)

    def run() -> None:
        try:
            drain(source, store, pipeline, config.mailbox, lambda: datetime.now(UTC), stop)
        except BaseException as exc:
            failure.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    first_saved = None
    while thread.is_alive() and time.monotonic() - started < 90:
        with store.transaction() as session:
            if session.query(Letter).count():
                first_saved = time.monotonic() - started
                break
        time.sleep(0.05)
    stop.set()
    thread.join(60)
    source.close()
    assert not failure, f"the drain failed: {failure[0]!r}"
    assert first_saved is not None, "no letter saved within 90 s"
    print(f"\n{HUGE_FOLDER} letters (written to {huge_folder_dovecot.root.parent} in "
          f"{filled:.1f} s): first letter saved {first_saved:.1f} s after the pass began")
    assert not thread.is_alive()
    assert source.listed == HUGE_FOLDER
    with store.transaction() as session:
        first = session.query(Letter).order_by(Letter.id).first()
        assert first is not None and first.raw.startswith(b"From: c0@example.org\r\n")


# ------------------------------------------------------------- filing, letter by letter


def test_a_letter_over_quota_does_not_keep_the_others_in_the_inbox(
    scripted: ScriptedImapServer, database_url: str
) -> None:
    """The server refuses to MOVE a batch holding one letter over the target's quota;
    the others are filed one by one, the refused one waits with its own backoff."""
    small = {scripted.add(letter(n), NOW): letter(n) for n in range(1, 6)}
    big = scripted.add(letter(99), NOW)
    scripted.faults[big] = "over-quota"
    config, store, pipeline = setup(scripted.host, scripted.port, database_url)
    source = ImapSource(config.mailbox)
    try:
        report = drain(source, store, pipeline, config.mailbox, lambda: NOW)
    finally:
        source.close()
    assert sorted(scripted.uids("Processed")) == sorted(small)
    assert scripted.uids("INBOX") == [big]
    assert report.refused == 1
    with store.transaction() as session:
        (fault,) = repo.letter_faults(session)
        assert (fault.uid, fault.action) == (str(big), "file")
        assert "OVERQUOTA" in fault.error
        filed = {row.uid: row.filed_to for row in session.query(Letter)}
    assert filed == {**{str(uid): "Processed" for uid in small}, str(big): None}
    assert any("will not serve or move" in problem
               for problem in check_health(store, HealthConfig(), NOW).problems)

    # Moved once the server takes it, after its backoff.
    del scripted.faults[big]
    source = ImapSource(config.mailbox)
    try:
        drain(source, store, pipeline, config.mailbox, lambda: NOW + timedelta(minutes=2))
    finally:
        source.close()
    assert scripted.uids("INBOX") == []
    with store.transaction() as session:
        assert repo.letter_faults(session) == []
