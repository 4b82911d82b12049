"""Loop protection: who is never answered, the per-sender cap, bounced addresses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mailroute.config import RepliesConfig
from mailroute.guard import ReplyPolicy, bounced_addresses, decide
from mailroute.parse import parse

DEV = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "dev"
POLICY = ReplyPolicy.build(["servicedesk@example.com", "help@example.com"],
                           RepliesConfig().no_reply_patterns, 5, 3600)


@pytest.mark.parametrize("address", [
    "servicedesk@example.com", "Help@Example.com", "noreply@bank.example",
    "no-reply@shop.example", "do-not-reply@x.example", "MAILER-DAEMON@mx.example",
    "postmaster@corp.example", "bounces@lists.example", "notifications@github.example",
    "not an address", "a@b",
])
def test_never_answered(address: str) -> None:
    assert decide(address, POLICY, 0, False, False).action == "refuse"


def test_ordinary_address_is_answered_until_the_cap_then_once_noticed() -> None:
    address = "ivanov@customer.example"
    assert [decide(address, POLICY, n, False, False).action for n in range(5)] == ["send"] * 5
    assert decide(address, POLICY, 5, False, False).action == "notice"
    assert decide(address, POLICY, 6, True, False).action == "refuse"
    assert decide(address, POLICY, 0, False, True).reason.startswith("earlier mail")


def test_window_is_configurable() -> None:
    policy = ReplyPolicy.build([], ["^x@"], 2, 60)
    assert policy.window == timedelta(minutes=1)
    assert decide("y@z.example", policy, 2, False, False).action == "notice"


@pytest.mark.skipif(not DEV.is_dir(), reason="dev corpus not beside the repository")
def test_dsn_final_recipient() -> None:
    letter = parse((DEV / "010.eml").read_bytes())
    assert bounced_addresses(letter) == {"g.fedosova@ural-polimer.rus"}


@pytest.mark.skipif(not DEV.is_dir(), reason="dev corpus not beside the repository")
def test_text_bounce_only_names_addresses_we_wrote_to() -> None:
    letter = parse((DEV / "033.eml").read_bytes())
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
