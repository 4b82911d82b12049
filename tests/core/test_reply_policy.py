"""Loop protection: who is never answered, the per-sender cap, bounced addresses."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from support.corpus import dev_corpus

from mailroute.config import RepliesConfig
from mailroute.core.addresses import counted_as
from mailroute.core.letter import parse
from mailroute.core.reply_policy import (
    Recent,
    ReplyPolicy,
    addresses_in,
    bounced_addresses,
    decide,
    enhanced_status,
    rejection_names_recipient,
)

POLICY = ReplyPolicy.build(["servicedesk@example.com", "help@example.com"],
                           RepliesConfig().no_reply_patterns, 5, 3600)


@pytest.mark.parametrize("address", [
    "servicedesk@example.com", "Help@Example.com", "noreply@bank.example",
    "no-reply@shop.example", "do-not-reply@x.example", "MAILER-DAEMON@mx.example",
    "postmaster@corp.example", "bounces@lists.example", "notifications@github.example",
    "not an address", "a@b",
])
def test_never_answered(address: str) -> None:
    assert decide(address, POLICY, Recent(), False).action == "refuse"


def test_ordinary_address_is_answered_until_the_cap_then_once_noticed() -> None:
    address = "ivanov@customer.example"
    assert [decide(address, POLICY, Recent(n), False).action for n in range(5)] == ["send"] * 5
    assert decide(address, POLICY, Recent(5), False).action == "notice"
    assert decide(address, POLICY, Recent(6, True), False).action == "refuse"
    assert decide(address, POLICY, Recent(), True).reason.startswith("earlier mail")


def test_window_is_configurable() -> None:
    policy = ReplyPolicy.build([], ["^x@"], 2, 60)
    assert policy.window == timedelta(minutes=1)
    assert decide("y@z.example", policy, Recent(2), False).action == "notice"


def test_domain_and_desk_caps_refuse_and_say_which() -> None:
    policy = ReplyPolicy.build([], [], 5, 3600, domain_limit=10, desk_limit=100)
    assert decide("a@x.example", policy, Recent(0, False, 9, 99), False).action == "send"
    domain = decide("a@x.example", policy, Recent(0, False, 10, 0), False)
    desk = decide("a@x.example", policy, Recent(0, False, 0, 100), False)
    assert (domain.action, domain.cap, desk.action, desk.cap) == (
        "refuse", "domain", "refuse", "desk")


@pytest.mark.parametrize(("spelling", "person"), [
    ("Victim+7@Example.COM", "victim@example.com"),
    ("victim+a+b@example.com", "victim@example.com"),
    ("v.i.c.tim+x@gmail.com", "victim@gmail.com"),
    ("V.ictim@googlemail.com", "victim@gmail.com"),
    ("first.last@example.com", "first.last@example.com"),  # dots matter outside Gmail
])
def test_addresses_are_counted_as_people(spelling: str, person: str) -> None:
    assert counted_as(spelling) == person


@pytest.mark.parametrize(("stage", "code", "text", "names_recipient"), [
    ("RCPT", 550, "5.1.1 no such user", True),
    ("RCPT", 553, "5.1.3 bad address syntax", True),
    ("RCPT", 554, "5.7.1 relay access denied", False),
    ("RCPT", 550, "relay not permitted", False),  # no enhanced code: unknown, not theirs
    ("DATA", 554, "5.6.0 content rejected", False),
    ("DATA", 550, "5.1.1 no such user", False),  # after DATA: about the message
    ("MAIL", 550, "5.1.7 bad sender", False),
])
def test_only_an_addressing_failure_at_rcpt_names_the_recipient(
    stage: str, code: int, text: str, names_recipient: bool
) -> None:
    assert rejection_names_recipient(stage, code, enhanced_status(text)) is names_recipient


def test_dsn_final_recipient() -> None:
    letter = parse((dev_corpus() / "010.eml").read_bytes())
    assert bounced_addresses(letter) == {"g.fedosova@ural-polimer.rus"}


def test_text_bounce_only_names_addresses_we_wrote_to() -> None:
    letter = parse((dev_corpus() / "033.eml").read_bytes())
    assert bounced_addresses(letter) == set()  # no structured report: no guesses
    assert bounced_addresses(letter, ["a.zhukova@tehnokom-spb.ru", "other@x.example"]) == {
        "a.zhukova@tehnokom-spb.ru"}


def test_delayed_dsn_suppresses_nothing() -> None:
    raw = (b"From: MAILER-DAEMON@mx.example\r\nSubject: Delayed\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nstill trying\r\n--b\r\n"
           b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
           b"Final-Recipient: rfc822; slow@customer.example\r\nAction: delayed\r\n"
           b"Status: 4.4.7\r\n--b--\r\n")
    assert bounced_addresses(parse(raw)) == set()


@pytest.mark.parametrize(("text", "found"), [
    ("Ivan <ivan@corp.example>, anna.k+desk@mail.example.org", ["ivan@corp.example",
                                                               "anna.k+desk@mail.example.org"]),
    ("a@b.c+d@e.f", ["a@b.c", "+d@e.f"]),  # glued to the previous domain: still two
    ("x@y.z.%w@v.u", ["x@y.z", ".%w@v.u"]),
    ("user@host, nor here@localhost", []),  # a domain has a dot
    ("aaaa" * 50, []),
])
def test_addresses_in_finds_what_the_plain_pattern_finds(text: str, found: list[str]) -> None:
    """Left to right, as ``findall`` of the address pattern (looked for from the start of
    each run of local-part characters, and right after an address)."""
    assert addresses_in(text) == found
    assert addresses_in(text) == re.findall(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)+", text, re.ASCII)
