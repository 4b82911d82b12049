"""The conversation policy as a pure function: who may join, change or only annotate a request."""

from __future__ import annotations

import pytest

from mailroute.core.conversation import (
    Candidates,
    Sender,
    Thread,
    find_thread,
    follow_up_step,
    new_subject,
    our_subject_prefixes,
    supplied_by,
    token_in,
)

REQUEST = Thread("SD-000001", "ivan@client.ru",
                 frozenset({"ivan@client.ru", "olga@client.ru"}), status="resolved")
OTHER = Thread("SD-000002", "anna@other.ru", frozenset({"anna@other.ru"}))


def nothing_named(number: str) -> Thread | None:
    raise AssertionError(f"the token {number} should not have been looked up")


def test_our_message_id_from_the_requester_or_a_participant_joins_and_may_change() -> None:
    for address in ("ivan@client.ru", "Olga@Client.RU"):
        join = find_thread(Candidates(ours=REQUEST), Sender(address), nothing_named).join
        assert join is not None and join.trusted and join.number == "SD-000001"


def test_our_message_id_from_anyone_else_is_a_note() -> None:
    decision = find_thread(Candidates(ours=REQUEST), Sender("boss@elsewhere.ru"), nothing_named)
    assert decision.join is not None and not decision.join.trusted
    assert decision.join.reason == "sender is not the requester or a participant"


def test_a_from_that_failed_dmarc_is_nobodys() -> None:
    sender = Sender("ivan@client.ru", dmarc_failed=lambda: True)
    decision = find_thread(Candidates(ours=REQUEST), sender, nothing_named)
    assert decision.join is not None and not decision.join.trusted
    assert decision.join.reason == "From fails DMARC for its domain"


def test_a_customers_message_id_counts_only_for_a_member() -> None:
    member = find_thread(Candidates(theirs=(OTHER, REQUEST)), Sender("olga@client.ru"),
                         nothing_named)
    assert member.join is not None and member.join.number == "SD-000001"
    stranger = find_thread(Candidates(theirs=(REQUEST,)), Sender("x@evil.example"),
                           lambda number: None)
    assert stranger.join is None
    assert [(r.event, r.action) for r in stranger.refusals] == [
        ("reference from outside the request", "new request")]


@pytest.mark.parametrize(("address", "joined", "trusted"), [
    ("ivan@client.ru", True, True),            # the requester
    ("petr@client.ru", True, False),           # a colleague: a note
    ("petr@gmail.com", False, False),          # a public domain proves nothing
    ("x@evil.example", False, False),          # a stranger: a new request
])
def test_a_token_joins_members_annotates_colleagues_and_ignores_strangers(
    address: str, joined: bool, trusted: bool
) -> None:
    requester = Thread("SD-000001", "ivan@client.ru", frozenset({"ivan@client.ru"}))
    gmail = Thread("SD-000001", "ivan@gmail.com", frozenset({"ivan@gmail.com"}))
    thread = gmail if address.endswith("gmail.com") else requester
    decision = find_thread(Candidates(token="SD-000001"), Sender(address), lambda n: thread)
    assert (decision.join is not None) is joined
    if decision.join is not None:
        assert decision.join.trusted is trusted
    if not joined:
        assert decision.refusals[-1].event == "token from stranger"


def test_an_unknown_token_is_a_new_request() -> None:
    assert find_thread(Candidates(token="SD-999999"), Sender("a@b.ru"), lambda n: None).join is None


@pytest.mark.parametrize(("subject", "number"), [
    ("Re: [SD-000123] Request registered", "SD-000123"),
    ("[sd-000123] ответ", "SD-000123"),
    ("SD-000123 without brackets", None),
    (None, None),
])
def test_token_in_the_subject(subject: str | None, number: str | None) -> None:
    assert token_in(subject) == number


@pytest.mark.parametrize(("status", "missing", "supplied", "clarifications", "step"), [
    ("closed", (), (), 0, "new_linked"),
    ("resolved", (), (), 0, "reopen"),
    ("in_progress", (), (), 0, "attach"),
    ("awaiting_customer", ("organization",), ("organization",), 1, "complete"),
    ("awaiting_customer", ("organization", "subject"), ("organization",), 1, "clarify"),
    ("awaiting_customer", ("organization",), (), 2, "to_humans"),
])
def test_follow_up_step(status: str, missing: tuple[str, ...], supplied: tuple[str, ...],
                        clarifications: int, step: str) -> None:
    thread = Thread("SD-000001", "a@b.ru", frozenset({"a@b.ru"}), status, missing, clarifications)
    assert follow_up_step(thread, supplied, "new", 2) == step


def test_a_closed_request_is_reopened_when_the_workflow_says_so() -> None:
    thread = Thread("SD-000001", "a@b.ru", frozenset({"a@b.ru"}), "closed")
    assert follow_up_step(thread, (), "reopen", 2) == "reopen"


def test_supplied_takes_only_what_was_missing_and_is_there() -> None:
    supplied = supplied_by(
        ["organization", "registration_number", "description"],
        {"organization": "ООО «Ромашка»", "registration_number": None},
        still_missing=["registration_number"],
        subject="Новая тема",
    )
    assert supplied.items == ("organization", "description")
    assert dict(supplied.values) == {"organization": "ООО «Ромашка»"}


def test_our_subjects_come_from_the_templates_and_are_not_taken_for_the_customers() -> None:
    ours = our_subject_prefixes([
        " [$number] Request registered: $subject",
        " [$number] Требуются уточнения по обращению: $subject",
        " [$number] Automatic replies paused",
    ])
    assert ours == ("Request registered", "Требуются уточнения по обращению",
                    "Automatic replies paused")
    assert new_subject("Re: [SD-000001] Request registered: Ошибка", ours) == ""
    assert new_subject("AW: Fwd: [SD-000001] Не проводится документ", ours) == (
        "Не проводится документ")


def test_an_admins_own_template_subject_is_recognised() -> None:
    ours = our_subject_prefixes([" [$number] Заявка принята: $subject"])
    assert new_subject("Ответ: [SD-000001] Заявка принята: сбой", ours) == ""
    assert new_subject("Ответ: [SD-000001] Обращение зарегистрировано: сбой", ours) != ""
