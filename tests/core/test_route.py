"""Routing rules: the first rule whose conditions all hold chooses the queue."""

from __future__ import annotations

from mailroute.config import RoutingConfig
from mailroute.core.route import Facts, route

CONFIG = RoutingConfig.model_validate(
    {
        "default_queue": "first-line",
        "rules": [
            {"name": "critical", "request_type": ["incident"], "priority": ["critical"],
             "queue": "duty"},
            {"name": "gold", "tier": ["gold"], "queue": "vip"},
            {"name": "romashka", "organization": ['ООО "Ромашка"'], "queue": "key-accounts"},
            {"name": "holding", "sender_domain": ["holding.ru"], "queue": "holding"},
            {"name": "payroll", "words": ["зарплат*", "payroll"], "queue": "payroll"},
            {"name": "changes", "request_type": ["change_request", "improvement"],
             "queue": "development"},
        ],
    }
)


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {"request_type": "incident", "priority": "normal"}
    return Facts(**(base | kw))  # type: ignore[arg-type]


def test_no_rule_matches_gives_the_default_queue() -> None:
    chosen = route(facts(), CONFIG)
    assert (chosen.queue, chosen.rule) == ("first-line", None)


def test_all_conditions_of_a_rule_must_hold() -> None:
    assert route(facts(priority="critical"), CONFIG).rule == "critical"
    assert route(facts(request_type="service_request", priority="critical"), CONFIG).rule is None


def test_conditions_on_tier_organization_domain_and_words() -> None:
    assert route(facts(tier="gold"), CONFIG).queue == "vip"
    assert route(facts(organization="ооо  «Ромашка»"), CONFIG).queue == "key-accounts"
    assert route(facts(sender_domain="msk.holding.ru"), CONFIG).queue == "holding"
    assert route(facts(sender_domain="notholding.ru"), CONFIG).queue == "first-line"
    assert route(facts(text="Не считается зарплата за ноябрь"), CONFIG).queue == "payroll"


def test_first_matching_rule_wins() -> None:
    chosen = route(facts(request_type="change_request", tier="gold"), CONFIG)
    assert (chosen.queue, chosen.rule) == ("vip", "gold")


def test_defaults_route_everything_to_first_line() -> None:
    assert route(facts(priority="critical"), RoutingConfig()).queue == "first-line"
