"""Configuration: TOML file + ``MAILROUTE_<SECTION>__<KEY>`` environment overrides.

This module is the only reader of the environment for settings. The config
object is passed explicitly to whatever needs it; there is no global.

A bad value is refused with a :class:`~mailroute.errors.ConfigError` naming the
key (``smtp.port``), the line of the file where it stands when it comes from the
file, or the environment variable when it comes from there.

The field descriptions below are the documentation of ``config.example.toml``.
"""

from __future__ import annotations

import csv
import difflib
import ipaddress
import os
import re
import shlex
import tomllib
from collections.abc import Iterable, Mapping
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailroute.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/mailroute/config.toml")
ENV_CONFIG_PATH = "MAILROUTE_CONFIG"
ENV_PREFIX = "MAILROUTE_"

Security = Literal["ssl", "starttls", "none"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Section(BaseModel):
    """Base of every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Connection(Section):
    """What IMAP and SMTP share: where, how securely, as whom."""

    host: str = Field("", description="Server host name or address.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Server port; default follows `security`."
    )
    allow_insecure: bool = Field(
        False, description='Permit security = "none" to a host that is not loopback.'
    )
    security: Security = Field(
        "ssl", description='"ssl" (implicit TLS), "starttls", or "none" (loopback only).'
    )
    tls_verify: bool = Field(True, description="Verify the server certificate and host name.")
    ca_file: str | None = Field(None, description="Extra CA bundle (PEM) for private CAs.")
    username: str = Field("", description="Login name.")
    password: SecretStr = Field(SecretStr(""), description="Password (prefer password_file).")
    password_file: str | None = Field(
        None,
        description="File holding the password; $CREDENTIALS_DIRECTORY is expanded and "
        "relative paths are looked up there (systemd LoadCredential=).",
    )
    auth: Literal["password", "xoauth2"] = Field(
        "password",
        description='"password" (LOGIN/AUTH with password) or "xoauth2" (OAuth2 access '
        "token from oauth2_token_command; Microsoft 365, Gmail).",
    )
    oauth2_token_command: str | None = Field(
        None,
        description="Command printing an OAuth2 access token (bare, or JSON with access_token "
        "and expires_in); run without a shell, split with shlex; $CREDENTIALS_DIRECTORY is "
        'expanded. Needs auth = "xoauth2".',
    )
    timeout: float = Field(30.0, gt=0, description="Seconds for any one network operation.")

    @field_validator("oauth2_token_command")
    @classmethod
    def _command_splits(cls, command: str | None) -> str | None:
        if command is None:
            return None
        try:
            words = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"cannot split the command: {exc}") from None
        if not words:
            raise ValueError("the command is empty")
        return command

    @model_validator(mode="after")
    def _xoauth2_complete(self) -> _Connection:
        # The explicit `auth` switch (rather than inferring it from the command) keeps a
        # half-edited config from silently falling back to password logins.
        if self.auth == "xoauth2":
            missing = [
                key
                for key, value in (
                    ("username", self.username),
                    ("oauth2_token_command", self.oauth2_token_command),
                )
                if not value
            ]
            if missing:
                raise ValueError(f'auth = "xoauth2" needs {" and ".join(missing)}')
        elif self.oauth2_token_command:
            raise ValueError('oauth2_token_command is set: set auth = "xoauth2" to use it')
        return self

    @field_validator("security")
    @classmethod
    def _insecure_only_to_loopback(cls, security: str, info: ValidationInfo) -> str:
        host = info.data.get("host", "")
        insecure = security == "none" and not info.data.get("allow_insecure")
        if insecure and host and not _is_loopback(host):
            raise ValueError(
                f'"none" sends the password in clear to {host}; '
                "use ssl or starttls, or set allow_insecure = true"
            )
        return security

    def effective_port(self) -> int:
        """The configured port, or the standard one for the protocol and security."""
        return self.port or self._default_ports()[self.security]

    def _default_ports(self) -> dict[str, int]:
        raise NotImplementedError


class MailboxConfig(_Connection):
    """The ServiceDesk mailbox mailroute reads."""

    address: str = Field(
        "servicedesk@example.com",
        description="The ServiceDesk address; letters from it are loops and are ignored.",
    )
    aliases: list[str] = Field(
        default_factory=list, description="Other addresses of the desk (also never answered)."
    )
    folder: str = Field("INBOX", description="Folder new letters arrive in.")
    processed_folder: str = Field("Processed", description="Where handled letters are moved.")
    quarantine_folder: str = Field(
        "Quarantine", description="Where letters that could not be processed are moved."
    )
    maildir: str | None = Field(
        None,
        description="Read a local Maildir instead of IMAP (for hosts whose MTA delivers "
        "locally); folders become Maildir++ subfolders.",
    )
    batch_size: int = Field(
        100, ge=1, le=1000,
        description="Letters fetched per IMAP FETCH at most (and decided in one transaction).",
    )
    batch_bytes: int = Field(
        16 * 1024 * 1024, ge=1024,
        description="Bytes of letters fetched per IMAP FETCH at most, by the server's sizes "
        "(RFC822.SIZE); a larger letter is fetched alone. Bounds the memory a batch holds.",
    )
    workers: int = Field(
        1,
        ge=0,
        le=16,
        description="Processes that parse and analyse a backlog beside the main one "
        "(0: all in the main process). A pass with fewer than two batches stays in it.",
    )
    idle: bool = Field(True, description="Use IMAP IDLE when the server offers it.")
    poll_interval: float = Field(
        60.0, gt=0, description="Seconds between polls when IDLE is off or not offered."
    )
    idle_timeout: float = Field(
        600.0, gt=0, le=1740, description="Seconds before IDLE is renewed (RFC 2177: < 29 min)."
    )

    # What one of several mailboxes ([[mailboxes]]) may set for itself; None: the global one.
    name: str = Field(
        "",
        pattern=r"^[\w.@+-]*$",
        max_length=100,
        description="Short name in logs (mailbox=), metrics, status and reports; "
        "default: the address.",
    )
    request_prefix: str = Field(
        "SD-",
        pattern=r"^[A-Z]{1,8}-$",
        description='Prefix of this mailbox\'s request numbers, e.g. "SD-" or "ML-" '
        "(each prefix numbers on its own).",
    )
    from_name: str | None = Field(
        None, description="Display name of replies from this mailbox; default [smtp] from_name."
    )
    templates_dir: str | None = Field(
        None, description="Reply templates of this mailbox; default [replies] templates_dir."
    )
    default_queue: str | None = Field(
        None, min_length=1, description="Queue when no routing rule hits; default [routing]."
    )
    reply_window: Literal["business_hours", "always"] | None = Field(
        None, description="When replies from this mailbox go out; default [replies] window."
    )
    business_hours: BusinessHoursConfig | None = Field(
        None, description="This mailbox's hours (SLA clocks, reply window); default "
        "[business_hours]."
    )

    def _default_ports(self) -> dict[str, int]:
        return {"ssl": 993, "starttls": 143, "none": 143}

    @property
    def label(self) -> str:
        """What logs, metrics and requests call this mailbox."""
        return self.name or self.address.strip().lower()

    def own_addresses(self) -> frozenset[str]:
        """The desk's address and aliases, lower-cased, for loop detection."""
        return frozenset(a.strip().lower() for a in [self.address, *self.aliases] if a.strip())


class SmtpConfig(_Connection):
    """The SMTP server replies are sent through."""

    host: str = Field("localhost", description="SMTP server host name or address.")
    security: Security = Field("starttls", description='"ssl", "starttls" or "none".')
    from_address: str = Field(
        "servicedesk@example.com", description="From: address of replies (the desk's)."
    )
    from_name: str = Field("ServiceDesk", description="Display name in From: of replies.")

    def _default_ports(self) -> dict[str, int]:
        return {"ssl": 465, "starttls": 587, "none": 25}


class DatabaseConfig(Section):
    """Where requests, letters and the outbox live."""

    url: str = Field(
        "sqlite:///mailroute.db",
        description="SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://USER@HOST/DB.",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", url):
            raise ValueError("must start with sqlite:// or postgresql(+driver)://")
        return url


class BusinessHoursConfig(Section):
    """The consultation line's hours: when replies go out and SLA clocks run."""

    timezone: str = Field("Europe/Moscow", description="IANA time zone of the desk.")
    open: time = Field(time(10, 0), description='Opening time on working days, "HH:MM".')
    close: time = Field(time(18, 0), description='Closing time on working days, "HH:MM".')
    workdays: list[Weekday] = Field(
        default_factory=lambda: list[Weekday](["mon", "tue", "wed", "thu", "fri"]),
        description="Ordinary working weekdays.",
    )
    weekday_hours: dict[str, str] = Field(
        default_factory=dict,
        description='Per-weekday hours overriding open/close, e.g. { fri = "10:00-17:00" }.',
    )
    calendar: str = Field(
        "RU",
        description="Public-holiday calendar: a country code for the `holidays` library, "
        '"" for none.',
    )
    extra_holidays: list[date] = Field(
        default_factory=list, description="Extra days off (corrections, company holidays)."
    )
    extra_workdays: list[date] = Field(
        default_factory=list, description="Extra working days (e.g. a transferred Saturday)."
    )
    short_days: list[date] = Field(
        default_factory=list,
        description="Extra shortened days (closing `short_day_hours` early), besides the "
        "pre-holiday days derived from the calendar.",
    )
    short_day_hours: float = Field(
        1.0, ge=0, lt=24, description="How much earlier the desk closes on a shortened day."
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        return name

    @field_validator("weekday_hours")
    @classmethod
    def _hours_ranges(cls, value: dict[str, str]) -> dict[str, str]:
        for day, span in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"{day!r} is not one of {', '.join(WEEKDAYS)}")
            if not re.fullmatch(r"\d{1,2}:\d{2}-\d{1,2}:\d{2}", span.replace(" ", "")):
                raise ValueError(f'{day} = {span!r} is not of the form "HH:MM-HH:MM"')
        return value

    @model_validator(mode="after")
    def _open_before_close(self) -> BusinessHoursConfig:
        if self.open >= self.close:
            raise ValueError(f"open ({self.open:%H:%M}) must be before close ({self.close:%H:%M})")
        return self


def _valid_regex(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
    return patterns


class RepliesConfig(Section):
    """What mailroute sends back, and when."""

    window: Literal["business_hours", "always"] = Field(
        "business_hours",
        description='"business_hours": replies wait for the next opening; "always": at once.',
    )
    enabled: bool = Field(True, description="Send replies at all (false: register silently).")
    templates_dir: str | None = Field(
        None,
        description="Directory of templates overriding the built-in ones "
        "(acknowledgement.ru.txt, clarification.en.txt, ...).",
    )
    default_language: Literal["ru", "en"] = Field(
        "ru", description="Language of replies when a letter's language cannot be told."
    )
    send_interval: float = Field(
        15.0, gt=0, description="Seconds between outbox runs of the daemon."
    )
    retry_initial: float = Field(60.0, gt=0, description="First retry delay after a 4xx, seconds.")
    retry_max: float = Field(3600.0, gt=0, description="Longest delay between retries, seconds.")
    retry_deadline_hours: float = Field(
        48.0, gt=0, description="Give up (mark failed) on a reply still undelivered after this."
    )
    per_sender_limit: int = Field(
        5,
        ge=1,
        description="Automatic replies to one address per `per_sender_window`; "
        "the next is one final notice, then none until the window has passed.",
    )
    per_sender_window: float = Field(3600.0, gt=0, description="Seconds of that window.")
    per_domain_limit: int = Field(
        30,
        ge=1,
        description="Automatic replies to one domain per `per_sender_window`; more are "
        "not sent (logged, counted, shown by `status`). Addresses are counted as people: "
        "lower-case, +tag removed, Gmail dots ignored.",
    )
    desk_hourly_limit: int = Field(
        300, ge=1, description="Automatic replies of the whole desk per hour; more are not sent."
    )
    suppress_for: float = Field(
        30 * 86400.0,
        gt=0,
        description='How long an address that bounced permanently is not answered: seconds, '
        'or a duration such as "30d", "12h", "90m".',
    )
    max_age: float = Field(
        3 * 86400.0,
        gt=0,
        description="A letter that arrived longer ago than this gets no automatic reply (it is "
        'still registered): seconds, or a duration such as "3d", "12h". Guards a first start '
        "on a mailbox with history.",
    )
    no_reply_patterns: list[str] = Field(
        default_factory=lambda: [
            r"^(no-?reply|do-?not-?reply|donotreply|noreply-.*|bounces?)@",
            r"^(mailer-daemon|postmaster)@",
            r"^(notifications?|alerts?|monitoring)@",
        ],
        description="Regular expressions (case-insensitive) of addresses never answered.",
    )
    claim_timeout: float = Field(
        120.0,
        gt=0,
        description="Seconds a reply taken for sending stays reserved to one instance; "
        "a crashed instance's replies are sent by another after this.",
    )

    @field_validator("no_reply_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        return _valid_regex(patterns)

    @field_validator("suppress_for", "max_age", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return _seconds(value)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: object) -> object:
    """ "30d", "12h", "90m", "45s" as seconds; anything else is left to the field's type."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text[-1:] in _UNITS and text[:-1].replace(".", "", 1).isdigit():
            return float(text[:-1]) * _UNITS[text[-1]]
        if not text.replace(".", "", 1).isdigit():
            raise ValueError(f'expected seconds or a duration such as "30d", "12h": {value!r}')
    return value


class LoggingConfig(Section):
    """Log lines for journald: one line per event."""

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Threshold.")
    format: Literal["keyvalue", "json"] = Field(
        "keyvalue", description='"keyvalue" (key=value pairs) or "json" (one object per line).'
    )


RequestType = Literal["incident", "service_request", "change_request", "improvement"]
PriorityName = Literal["critical", "normal", "low"]
RULE_FIELDS = ("subject", "first_line", "own_text", "signature", "text", "sender")


class RuleSets(Section):
    """What a classification rule decides when it matches."""

    request_type: RequestType | None = Field(
        None, description="Votes for (or, for a marker, fixes) this request type."
    )
    priority: PriorityName | None = Field(
        None,
        description='"critical" marks an incident urgent; "normal" vetoes critical '
        '("не срочно"); types other than incident ignore it.',
    )
    weight: float = Field(1.0, ge=0, description="Votes a matching type rule adds.")

    @model_validator(mode="after")
    def _decides_something(self) -> RuleSets:
        if self.request_type is None and self.priority is None:
            raise ValueError("sets needs request_type or priority")
        return self


class ClassificationRule(Section):
    """One classification rule; the schema of rules.toml and of [[classification.rules]]."""

    name: str = Field(
        ..., pattern=r"^[a-z0-9][a-z0-9:._-]*$", description='Stable name, e.g. "type:error-words".'
    )
    fields: list[str] = Field(
        default_factory=lambda: ["subject", "own_text"],
        description="Where to look: subject, first_line (first line after the greeting), "
        "own_text, signature, text (whole body), sender (e-mail), header:NAME.",
    )
    words: list[str] = Field(
        default_factory=list,
        description='Word forms: "срочно" (this form), "ошибк*" (stem: any ending).',
    )
    phrases: list[str] = Field(
        default_factory=list,
        description='Word sequences of such forms; "..." skips up to three words.',
    )
    regex: str | None = Field(None, description="A Python regular expression (case-insensitive).")
    unless: list[str] = Field(
        default_factory=list,
        description='Phrases that cancel a match they cover ("ошибк* в документац*").',
    )
    negatable: bool = Field(
        False, description='A negation just before ("не", "not") or "нет" after cancels it.'
    )
    marker: bool = Field(
        False, description="An explicit marker: fixes request_type, beating all votes."
    )
    sets: RuleSets
    note: str = Field("", description="Why the rule exists (for people).")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: list[str]) -> list[str]:
        for name in fields:
            if name not in RULE_FIELDS and not re.fullmatch(r"header:[\w-]+", name):
                raise ValueError(f"unknown field {name!r}")
        return [name.lower() for name in fields]

    @field_validator("words", "phrases", "unless")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        from mailroute.core.words import Pattern

        for source in patterns:
            Pattern.compile(source)
        return patterns

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
        return regex

    @model_validator(mode="after")
    def _matches_something(self) -> ClassificationRule:
        if not (self.words or self.phrases or self.regex):
            raise ValueError("a rule needs words, phrases or regex")
        if self.marker and self.sets.request_type is None:
            raise ValueError("a marker rule must set request_type")
        return self


class ClassificationConfig(Section):
    """Admin rules added to (or replacing, by name) the built-in rules.toml."""

    rules: list[ClassificationRule] = Field(
        default_factory=list, description="Extra rules; one named like a built-in replaces it."
    )
    disabled: list[str] = Field(default_factory=list, description="Names of rules to switch off.")
    default_request_type: RequestType = Field(
        "service_request", description="Type when no rule votes."
    )
    vendor_names: list[str] = Field(
        default_factory=list,
        description="The vendor's own organization names: never taken as the customer's.",
    )


class RoutingRule(Section):
    """Letters matching every given condition go to ``queue``; empty conditions match all."""

    name: str = Field(..., pattern=r"^[a-z0-9][a-z0-9:._-]*$", description="Stable name.")
    request_type: list[RequestType] = Field(default_factory=list, description="Any of these types.")
    priority: list[PriorityName] = Field(default_factory=list, description="Any of these.")
    organization: list[str] = Field(
        default_factory=list, description="Any of these organizations (quotes and case ignored)."
    )
    sender_domain: list[str] = Field(
        default_factory=list, description="Sender's domain or a parent domain of it."
    )
    words: list[str] = Field(
        default_factory=list, description="Any of these word forms in the subject or own text."
    )
    tier: list[str] = Field(
        default_factory=list, description="Support tier of the customer in the registry."
    )
    queue: str = Field(..., min_length=1, description="Queue the letter goes to.")

    @field_validator("words")
    @classmethod
    def _patterns_compile(cls, patterns: list[str]) -> list[str]:
        from mailroute.core.words import Pattern

        for source in patterns:
            Pattern.compile(source)
        return patterns


class RoutingConfig(Section):
    """Which queue a ticket lands in: the first matching rule, else the default."""

    default_queue: str = Field("first-line", min_length=1, description="Queue when no rule hits.")
    rules: list[RoutingRule] = Field(default_factory=list, description="Tried in order.")
    review_queue: str | None = Field(
        None,
        min_length=1,
        description="Queue for a request mailroute is unsure of (needs_review); unset: route "
        "it as any other. It is still acknowledged when nothing is missing.",
    )


class RegistryOrganization(Section):
    """A customer under contract."""

    name: str = Field(..., min_length=1, description="Organization name with its legal form.")
    registration_numbers: list[str] = Field(
        default_factory=list, description="Licence registration numbers (spaces, dashes ignored)."
    )
    domains: list[str] = Field(default_factory=list, description="E-mail domains of its staff.")
    tier: str = Field("standard", description="Support tier, for routing.")

    @field_validator("registration_numbers")
    @classmethod
    def _digits(cls, numbers: list[str]) -> list[str]:
        cleaned = [re.sub(r"[\s-]", "", str(n)) for n in numbers]
        for number in cleaned:
            if not number.isdigit():
                raise ValueError(f"{number!r} is not a number of digits")
        return cleaned

    @field_validator("domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in domains if d.strip()]


class RegistryConfig(Section):
    """Optional customer registry; without one, numbers and names are taken as written."""

    csv: str | None = Field(
        None,
        description="CSV file of customers (name, registration_numbers, domains, tier; "
        "several values separated by ';'), relative to the config file.",
    )
    organizations: list[RegistryOrganization] = Field(
        default_factory=list, description="Customers listed in the config itself."
    )

    def configured(self) -> bool:
        """Whether a registry is in use at all."""
        return bool(self.csv or self.organizations)


class SlaTarget(Section):
    """Targets for one priority, in business hours; omitted means no target."""

    first_response: float | None = Field(
        None, gt=0, description="Business hours until a specialist first responds."
    )
    resolution: float | None = Field(None, gt=0, description="Business hours until resolved.")


def _target(first: float, resolution: float | None) -> SlaTarget:
    return SlaTarget(first_response=first, resolution=resolution)


class SlaConfig(Section):
    """Service levels per priority, and per customer tier (from the registry)."""

    critical: SlaTarget = Field(
        default_factory=lambda: _target(1, 8), description="Targets for critical requests."
    )
    normal: SlaTarget = Field(
        default_factory=lambda: _target(4, 24), description="Targets for normal requests."
    )
    low: SlaTarget = Field(
        default_factory=lambda: _target(8, None), description="Targets for low requests."
    )
    tiers: dict[str, dict[Literal["critical", "normal", "low"], SlaTarget]] = Field(
        default_factory=dict,
        description="Per-tier overrides: [sla.tiers.gold] critical = { first_response = 0.5 }.",
    )


class WorkflowConfig(Section):
    """How a request moves: clarification rounds, replies to closed requests, escalation."""

    max_clarifications: int = Field(
        2, ge=1, description="Clarifications sent before a request goes to `human_queue`."
    )
    human_queue: str = Field(
        "human-review", description="Queue for requests still incomplete after the last round."
    )
    closed_reply: Literal["reopen", "new"] = Field(
        "new",
        description='A reply to a closed request: "reopen" it, or open a "new" one linked to it.',
    )
    escalation_address: str = Field(
        "", description="Where SLA breaches are reported (once per breach); empty: log only."
    )
    escalation_interval: float = Field(
        300.0, gt=0, description="Seconds between checks for breached requests."
    )


class HealthConfig(Section):
    """When `mailroute status` calls the daemon unhealthy (exit code 1)."""

    max_poll_age: float = Field(
        900.0, gt=0, description="Seconds since the last successful mailbox poll."
    )
    max_reply_delay: float = Field(
        3600.0, gt=0, description="Seconds a reply may stay unsent after it was due."
    )


class MetricsConfig(Section):
    """Prometheus metrics over HTTP, for scraping from this host."""

    listen: str = Field(
        "", description='Address to serve /metrics on, e.g. "127.0.0.1:9310"; "" for none.'
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value and not re.fullmatch(r"[\w.:\[\]-]+:\d{1,5}", value):
            raise ValueError(f'{value!r} is not "HOST:PORT"')
        return value


class SecurityConfig(Section):
    """Whose word about a sender to believe."""

    trusted_authserv_id: str = Field(
        "",
        description="authserv-id of our receiving server's Authentication-Results headers "
        '(RFC 8601); a letter failing DMARC there does not join a request by its From; "" '
        "for none (no such header is believed: anyone can write one).",
    )

    @field_validator("trusted_authserv_id")
    @classmethod
    def _one_token(cls, value: str) -> str:
        if value and not re.fullmatch(r"[\w.-]+", value):
            raise ValueError(f"{value!r} is not an authserv-id (a host name, e.g. mx.example.com)")
        return value


class WebConfig(Section):
    """The operators' console and the API (`mailroute web`, or inside `mailroute run`)."""

    listen: str = Field(
        "", description='Address to serve the console and API on, e.g. "127.0.0.1:8025"; '
        '"" for none (the daemon serves nothing; `mailroute web` needs it).'
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses (or networks, e.g. 10.0.0.0/8) of reverse proxies whose "
        "X-Forwarded-For / X-Forwarded-Proto are believed; none by default.",
    )
    session_hours: float = Field(12.0, gt=0, description="How long a login lasts.")
    secure_cookies: bool = Field(
        True,
        description="Mark the session cookie Secure (sent over HTTPS only). Turn off only "
        "for a console reached over plain HTTP on loopback.",
    )
    login_attempts: int = Field(
        5, ge=1, description="Failed logins per address and per name within "
        "`login_window`; more are refused until the window has passed."
    )
    login_window: float = Field(300.0, gt=0, description="Seconds of that window.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        if value and not re.fullmatch(r"[\w.:\[\]-]+:\d{1,5}", value):
            raise ValueError(f'{value!r} is not "HOST:PORT"')
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or network") from None
        return value


WebhookEvent = Literal["request.created", "request.status", "request.breached"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("request.created", "request.status", "request.breached")


class WebhookConfig(Section):
    """One `[[webhooks]]` entry: events POSTed as signed JSON to a URL."""

    url: str = Field(description="Where to POST, http:// or https://.")
    secret_file: str = Field(
        description="File holding the shared secret the body is signed with (HMAC-SHA256)."
    )
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS), description="Which events to send."
    )
    timeout: float = Field(10.0, gt=0, description="Seconds to wait for the receiver.")
    retry_initial: float = Field(
        30.0, gt=0, description="First retry delay after a failed delivery, seconds; "
        "doubled after each further failure."
    )
    retry_max: float = Field(1800.0, gt=0, description="Longest delay between retries, seconds.")
    give_up_hours: float = Field(
        48.0, gt=0, description="Hours after the event when an undelivered one is marked failed."
    )
    secret: SecretStr = Field(SecretStr(""), exclude=True)  # read from secret_file

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not re.match(r"https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class ReportsConfig(Section):
    """The periodic report mailed to managers (`mailroute report` prints one on demand)."""

    recipients: list[str] = Field(
        default_factory=list, description="Who receives the report; empty: nobody."
    )
    schedule: Literal["daily", "weekly", "monthly", "never"] = Field(
        "weekly", description="Report the previous day, ISO week (Mon-Sun) or month."
    )
    send_at: time = Field(
        time(9, 0), description="Local time (desk's zone) the report is queued on its day."
    )


class RetentionConfig(Section):
    """How long letters' bytes and customers' personal data are kept (0: for ever).

    Requests, their history and every figure of the reports are kept whatever these
    say; only raw letters, attachments and personal details go (152-FZ)."""

    raw_days: int = Field(
        0, ge=0, description="Days after which a decided letter's raw bytes, its attachments' "
        "content and the raw replies are deleted; 0 keeps them for ever.",
    )
    anonymize_days: int = Field(
        0, ge=0, description="Days after its closing that a request loses its requester's "
        "address and name, its subject and its letters' text; 0 never.",
    )
    interval: float = Field(
        3600.0, gt=0, description="Seconds between the daemon's retention passes."
    )


class LimitsConfig(Section):
    """Bounds on a letter; a letter beyond them is stored and quarantined, never lost."""

    max_message_bytes: int = Field(
        50 * 1024 * 1024, ge=1024, description="Largest letter processed, in bytes."
    )
    max_parts: int = Field(1000, ge=1, description="Most MIME parts in one letter.")
    max_depth: int = Field(30, ge=1, description="Deepest MIME nesting (incl. forwards).")
    max_header_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest header block of any part, in bytes."
    )
    max_text_chars: int = Field(
        200_000, ge=1000,
        description="Characters of body text analysed; the rest is kept but not read.",
    )
    letter_seconds: float = Field(
        5.0, gt=0, le=3600,
        description="CPU seconds one letter may take to be parsed and analysed; a letter "
        "over it is quarantined naming the stage that overran (the bytes are kept).",
    )


class Config(BaseModel):
    """The whole configuration; every section has working defaults."""

    model_config = ConfigDict(extra="forbid")

    mailbox: MailboxConfig = Field(default_factory=MailboxConfig)  # type: ignore[arg-type]
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)  # type: ignore[arg-type]
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)  # type: ignore[arg-type]
    business_hours: BusinessHoursConfig = Field(default_factory=BusinessHoursConfig)  # type: ignore[arg-type]
    replies: RepliesConfig = Field(default_factory=RepliesConfig)  # type: ignore[arg-type]
    logging: LoggingConfig = Field(default_factory=LoggingConfig)  # type: ignore[arg-type]
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig)  # type: ignore[arg-type]
    routing: RoutingConfig = Field(default_factory=RoutingConfig)  # type: ignore[arg-type]
    registry: RegistryConfig = Field(default_factory=RegistryConfig)  # type: ignore[arg-type]
    sla: SlaConfig = Field(default_factory=SlaConfig)
    workflow: WorkflowConfig = Field(default_factory=WorkflowConfig)  # type: ignore[arg-type]
    health: HealthConfig = Field(default_factory=HealthConfig)  # type: ignore[arg-type]
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)  # type: ignore[arg-type]
    security: SecurityConfig = Field(default_factory=SecurityConfig)  # type: ignore[arg-type]
    reports: ReportsConfig = Field(default_factory=ReportsConfig)  # type: ignore[arg-type]
    limits: LimitsConfig = Field(default_factory=LimitsConfig)  # type: ignore[arg-type]
    retention: RetentionConfig = Field(default_factory=RetentionConfig)  # type: ignore[arg-type]
    web: WebConfig = Field(default_factory=WebConfig)  # type: ignore[arg-type]
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    mailboxes: list[MailboxConfig] = Field(
        default_factory=list,
        description="Several mailboxes in one daemon ([[mailboxes]], each with the keys of "
        "[mailbox]); instead of [mailbox], not beside it.",
    )

    source: Annotated[str | None, Field(exclude=True)] = None

    @model_validator(mode="after")
    def _one_kind_of_mailbox(self) -> Config:
        if not self.mailboxes:
            return self
        if "mailbox" in self.model_fields_set:
            raise ValueError("set [mailbox] or [[mailboxes]], not both")
        labels = [m.label for m in self.mailboxes]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise ValueError(f"two mailboxes are both called {twice[0]!r}: give them a name")
        self.mailbox = self.mailboxes[0]  # what single-mailbox code paths read
        return self

    @property
    def several_mailboxes(self) -> bool:
        return len(self.mailboxes) > 1

    def all_mailboxes(self) -> list[MailboxConfig]:
        """The mailboxes this daemon reads: ``[[mailboxes]]``, else the one ``[mailbox]``."""
        return list(self.mailboxes) or [self.mailbox]

    def desk_addresses(self) -> frozenset[str]:
        """Every address of every mailbox: letters from any of them are loops."""
        found = {self.smtp.from_address.strip().lower()}
        for mailbox in self.all_mailboxes():
            found |= mailbox.own_addresses()
        return frozenset(found - {""})

    def for_mailbox(self, mailbox: MailboxConfig) -> Config:
        """The config as one mailbox sees it: its own hours, templates, queue, reply window
        and, with several mailboxes, its address as the replies' From."""
        if not self.mailboxes:
            return self
        smtp = self.smtp.model_copy(update={
            "from_address": mailbox.address,
            "from_name": mailbox.from_name or self.smtp.from_name,
        })
        replies = self.replies.model_copy(update={
            "templates_dir": mailbox.templates_dir or self.replies.templates_dir,
            "window": mailbox.reply_window or self.replies.window,
        })
        routing = self.routing.model_copy(
            update={"default_queue": mailbox.default_queue or self.routing.default_queue})
        return self.model_copy(update={
            "mailbox": mailbox, "smtp": smtp, "replies": replies, "routing": routing,
            "business_hours": mailbox.business_hours or self.business_hours,
        })


# --------------------------------------------------------------------------- loading


def resolve_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: --config, then $MAILROUTE_CONFIG, then the system path.

    Returns None when nothing was asked for and the system file does not exist, so
    tools like ``explain`` work on embedded defaults.
    """
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if environ.get(ENV_CONFIG_PATH):
        return Path(environ[ENV_CONFIG_PATH])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load(path: str | Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, validate. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    text, data = "", dict[str, Any]()
    if path is not None:
        text, data = _read_toml(Path(path))
    origins = _apply_environment(data, environ)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, text, str(path) if path else None, origins)) from None
    _read_password_files(config, path)
    _read_webhook_secrets(config, path)
    _read_registry_csv(config, path)
    config.source = str(path) if path else None
    return config


def _read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: config file is not UTF-8: {exc}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Fold MAILROUTE_SECTION__KEY variables into ``data``; return key -> variable name."""
    origins: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in Config.model_fields or section == "source":
            raise ConfigError(f"{name}: no config section [{section}]")
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{name}: [{section}] is not a table in the config file")
        target[key] = value
        origins[f"{section}.{key}"] = name
    return origins


def _describe(exc: ValidationError, text: str, path: str | None, origins: Mapping[str, str]) -> str:
    """One line per problem: where (file:line or env var), which key, what is wrong."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join(loc)
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key" + _did_you_mean(loc)
        where = origins.get(".".join(loc[:2]))
        if where is None and path is not None:
            line = _line_of(text, loc)
            where = f"{path}:{line}" if line else path
        lines.append(f"{where + ': ' if where else ''}{key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _did_you_mean(loc: list[str]) -> str:
    """``; did you mean 'window'?`` when an unknown key is close to one of its section's."""
    fields = _fields_at(loc[:-1])
    close = difflib.get_close_matches(loc[-1], fields, n=1, cutoff=0.6) if fields else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _fields_at(path: list[str]) -> list[str]:
    """The field names of the model reached by ``path`` from Config.

    Parts that are not fields (list indexes, dict keys such as a tier name) are skipped.
    """
    model: Any = Config
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            continue
        model = _model_in(field.annotation)
        if model is None:
            return []
    return [name for name in model.model_fields if name != "source"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, directly or as list[...] / dict[str, ...] items."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line number of ``loc`` (section, key) in the TOML text."""
    if not loc:
        return None
    if len(loc) > 1 and loc[1].isdigit():  # an entry of an array of tables: [[mailboxes]]
        return _line_in_array(text, loc[0], int(loc[1]), loc[2] if len(loc) > 2 else None)
    section_re = re.compile(r"^\s*\[\s*([\w.-]+)\s*\]")
    current, section_line = "", None
    for number, line in enumerate(text.splitlines(), start=1):
        header = section_re.match(line)
        if header:
            current = header.group(1)
            if current == loc[0]:
                section_line = number
            continue
        if len(loc) > 1 and current == loc[0] and re.match(rf"^\s*{re.escape(loc[1])}\s*=", line):
            return number
    return section_line


def _line_in_array(text: str, name: str, index: int, key: str | None) -> int | None:
    """The line of ``key`` in the index-th ``[[name]]`` table (or of its header)."""
    header_re = re.compile(r"^\s*\[\[?\s*([\w.-]+)\s*\]\]?")
    seen, header_line = -1, None
    for number, line in enumerate(text.splitlines(), start=1):
        header = header_re.match(line)
        if header:
            if header_line is not None:
                break  # the entry ended without the key
            if line.lstrip().startswith("[[") and header.group(1) == name:
                seen += 1
                if seen == index:
                    header_line = number
            continue
        if header_line is not None and key and re.match(rf"^\s*{re.escape(key)}\s*=", line):
            return number
    return header_line


def _read_password_files(config: Config, path: str | Path | None) -> None:
    sections: list[tuple[str, _Connection]] = [("mailbox", config.mailbox), ("smtp", config.smtp)]
    if config.mailboxes:
        sections[0:1] = [(f"mailboxes.{i}", box) for i, box in enumerate(config.mailboxes)]
    for name, section in sections:
        if not section.password_file:
            continue
        file = _credential_path(section.password_file, path)
        try:
            secret = file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{name}.password_file: cannot read {file}: {exc.strerror}") from None
        section.password = SecretStr(secret)


def _read_webhook_secrets(config: Config, path: str | Path | None) -> None:
    for index, hook in enumerate(config.webhooks):
        file = _credential_path(hook.secret_file, path)
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"webhooks[{index}].secret_file: cannot read {file}: {exc.strerror}"
            ) from None
        if not secret:
            raise ConfigError(f"webhooks[{index}].secret_file: {file} is empty")
        hook.secret = SecretStr(secret)


def _read_registry_csv(config: Config, path: str | Path | None) -> None:
    """Append the customers of ``registry.csv`` (relative to the config file)."""
    if not config.registry.csv:
        return
    file = Path(os.path.expandvars(config.registry.csv))
    if not file.is_absolute() and path is not None:
        file = Path(path).parent / file
    config.registry.organizations.extend(read_csv(file))


_REGISTRY_COLUMNS = {
    "name": "name",
    "organization": "name",
    "registration_numbers": "registration_numbers",
    "registration_number": "registration_numbers",
    "domains": "domains",
    "domain": "domains",
    "tier": "tier",
}


def read_csv(path: Path) -> list[RegistryOrganization]:
    """Customers from a CSV file; a bad row is a ConfigError naming file and line.

    Layout (header row required; several values in a cell separated by ";")::

        name,registration_numbers,domains,tier
        ООО «Ромашка»,800123456;800123457,romashka.ru,gold
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return list(_registry_rows(csv.DictReader(handle), path))
    except OSError as exc:
        raise ConfigError(f"registry.csv: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"registry.csv: {path} is not UTF-8: {exc}") from None


def _registry_rows(reader: csv.DictReader[str], path: Path) -> Iterable[RegistryOrganization]:
    columns = {c: _REGISTRY_COLUMNS.get((c or "").strip().lower()) for c in reader.fieldnames or []}
    if "name" not in columns.values():
        raise ConfigError(f"registry.csv: {path}: header row needs a 'name' column")
    for row in reader:
        data: dict[str, object] = {}
        for column, value in row.items():
            key = columns.get(column)
            if key is None or value is None or not value.strip():
                continue
            data[key] = value.strip() if key in ("name", "tier") else _registry_values(value)
        if not data.get("name"):
            continue
        try:
            yield RegistryOrganization.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}:{reader.line_num}: registry.csv: {problem}") from None


def _registry_values(cell: str) -> list[str]:
    return [v for v in (p.strip() for p in re.split(r"[;|\n]", cell)) if v]


def _credential_path(value: str, config_path: str | Path | None) -> Path:
    expanded = Path(os.path.expandvars(value))
    if expanded.is_absolute():
        return expanded
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        return Path(credentials) / expanded
    base = Path(config_path).parent if config_path else Path.cwd()
    return base / expanded


def masked(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, secrets shown as ``********``."""
    data = config.model_dump(mode="json")
    for name in ("mailbox", "smtp"):
        if data[name].get("password"):
            data[name]["password"] = "********"
    return data
