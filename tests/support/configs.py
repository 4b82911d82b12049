"""Config files for tests: a real mailroute config pointing at the test's servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailroute.config import Config
from support.dovecot import ImapAccount
from support.smtp import SmtpSink

SAMPLES = Path(__file__).resolve().parents[2] / "mailroute" / "samples"


def imap_desk_config(host: str, port: int, database_url: str, username: str, password: str,
                     **mailbox: object) -> Config:
    """A config (no file) reading one IMAP folder without TLS into ``database_url``,
    replying at any hour: what tests that call ``drain`` directly need."""
    return Config.model_validate({
        "mailbox": {"host": host, "port": port, "security": "none", "username": username,
                    "password": password, **mailbox},
        "database": {"url": database_url},
        "replies": {"window": "always"},
    })


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_config(
    path: Path,
    *,
    account: ImapAccount | None,
    sink: SmtpSink | None,
    database_url: str,
    maildir: Path | None = None,
    window: str = "always",
    extra: dict[str, dict[str, Any]] | None = None,
    mailboxes: list[tuple[ImapAccount, dict[str, Any]]] | None = None,
) -> Path:
    """Write a config TOML for these servers and return its path. With ``mailboxes``,
    one ``[[mailboxes]]`` table per (account, its keys) instead of ``[mailbox]``."""
    sections: dict[str, dict[str, Any]] = {
        "mailbox": {"address": "servicedesk@example.com", "poll_interval": 0.5},
        "smtp": {"from_address": "servicedesk@example.com", "from_name": "ServiceDesk"},
        "database": {"url": database_url},
        "replies": {"window": window, "send_interval": 0.5, "retry_initial": 1},
        "logging": {"level": "info"},
    }
    if account is not None:
        sections["mailbox"] |= {
            "host": account.host, "port": account.port, "security": "none",
            "username": account.username, "password": account.password,
        }
    if maildir is not None:
        sections["mailbox"]["maildir"] = str(maildir)
    if sink is not None:
        sections["smtp"] |= {"host": sink.host, "port": sink.port, "security": "none"}
    for name, values in (extra or {}).items():
        sections.setdefault(name, {}).update(values)
    lines = []
    for name, values in sections.items():
        if mailboxes is not None and name == "mailbox":
            continue
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    for box_account, keys in mailboxes or []:
        table = {"poll_interval": 0.5, "host": box_account.host, "port": box_account.port,
                 "security": "none", "username": box_account.username,
                 "password": box_account.password} | keys
        lines.append("[[mailboxes]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def sample_letters() -> list[bytes]:
    """The bundled sample letters, in delivery order."""
    return [item.read_bytes() for item in sorted(SAMPLES.glob("*.eml"))]
