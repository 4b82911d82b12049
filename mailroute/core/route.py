"""Which queue a ticket lands in: the first routing rule whose conditions all hold.

A rule lists conditions (request type, priority, organization, sender domain,
words, registry tier); an empty condition holds for every letter, so
``{ name = "critical", priority = ["critical"], queue = "duty" }`` sends every
critical incident to the duty queue. No rule: ``default_queue``.

Pure: no IO.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailroute.config import RoutingConfig, RoutingRule
from mailroute.core.extract import normalize_org
from mailroute.core.words import Pattern, index


@dataclass(frozen=True)
class Facts:
    """What routing may look at."""

    request_type: str
    priority: str
    organization: str | None = None
    sender_domain: str = ""
    text: str = ""
    tier: str | None = None


@dataclass(frozen=True)
class Route:
    """The queue and the rule that chose it (None: the default queue)."""

    queue: str
    rule: str | None
    detail: str


def _domain_matches(domain: str, wanted: list[str]) -> bool:
    domain = domain.lower()
    return any(domain == w.lower() or domain.endswith("." + w.lower()) for w in wanted)


def _words_match(text: str, wanted: list[str]) -> bool:
    words = index(text)
    return any(Pattern.compile(w).spans(words) for w in wanted)


def _holds(rule: RoutingRule, facts: Facts) -> bool:
    organizations = {normalize_org(o) for o in rule.organization}
    checks = (
        not rule.request_type or facts.request_type in rule.request_type,
        not rule.priority or facts.priority in rule.priority,
        not organizations or normalize_org(facts.organization or "") in organizations,
        not rule.sender_domain or _domain_matches(facts.sender_domain, rule.sender_domain),
        not rule.tier or facts.tier in rule.tier,
        not rule.words or _words_match(facts.text, rule.words),
    )
    return all(checks)


def route(facts: Facts, config: RoutingConfig) -> Route:
    """The first matching rule's queue, else the default queue."""
    for rule in config.rules:
        if _holds(rule, facts):
            return Route(rule.queue, rule.name, f"{rule.name} matched")
    return Route(config.default_queue, None, "no routing rule matched")
