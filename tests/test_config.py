"""Config loading: defaults, environment overrides, errors that name key and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailroute import config
from mailroute.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    loaded = config.load(None, environ={})
    assert loaded.database.url == "sqlite:///mailroute.db"
    assert loaded.business_hours.timezone == "Europe/Moscow"
    assert loaded.replies.window == "business_hours"
    assert loaded.mailbox.effective_port() == 993
    assert loaded.smtp.effective_port() == 587


def test_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "config.example.toml"
    loaded = config.load(example, environ={})
    assert loaded.mailbox.processed_folder == "Processed"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[smtp]\nhost = "mail.example.net"\nport = 25\n')
    loaded = config.load(path, environ={"MAILROUTE_SMTP__PORT": "2525",
                                        "MAILROUTE_MAILBOX__PASSWORD": "s3cret"})
    assert loaded.smtp.port == 2525
    assert loaded.smtp.host == "mail.example.net"
    assert loaded.mailbox.password.get_secret_value() == "s3cret"


def test_error_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[mailbox]\nhost = "imap.example.net"\n\n[smtp]\nport = "many"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert f"{path}:5: smtp.port" in str(caught.value)


def test_unknown_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[replies]\nwindow = "always"\nwindwo = "x"\n')
    with pytest.raises(ConfigError, match=r"config.toml:3: replies.windwo: unknown key"):
        config.load(path, environ={})


def test_bad_choice_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, '[replies]\nwindow = "weekends"\n')
    with pytest.raises(ConfigError, match=r":2: replies.window: .*business_hours.*always"):
        config.load(path, environ={})


def test_error_from_environment_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"MAILROUTE_SMTP__PORT: smtp.port"):
        config.load(None, environ={"MAILROUTE_SMTP__PORT": "x"})


def test_environment_section_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"MAILROUTE_NOPE__KEY: no config section \[nope\]"):
        config.load(None, environ={"MAILROUTE_NOPE__KEY": "1"})


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[mailbox]\nhost = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        config.load(path, environ={})


def test_cleartext_to_remote_host_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[mailbox]\nhost = "imap.example.net"\nsecurity = "none"\n')
    with pytest.raises(ConfigError, match=r":3: mailbox.security: .*in clear"):
        config.load(path, environ={})
    allowed = write(tmp_path, '[mailbox]\nhost = "127.0.0.1"\nsecurity = "none"\n')
    assert config.load(allowed, environ={}).mailbox.security == "none"


def test_password_file_under_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "imap-password").write_text("from-credential\n", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    path = write(tmp_path, '[mailbox]\npassword_file = "imap-password"\n')
    loaded = config.load(path, environ={})
    assert loaded.mailbox.password.get_secret_value() == "from-credential"


def test_missing_password_file_names_key(tmp_path: Path) -> None:
    path = write(tmp_path, f'[smtp]\npassword_file = "{tmp_path}/absent"\n')
    with pytest.raises(ConfigError, match=r"smtp.password_file: cannot read"):
        config.load(path, environ={})


def test_masked_hides_secrets(tmp_path: Path) -> None:
    loaded = config.load(None, environ={"MAILROUTE_SMTP__PASSWORD": "hunter2"})
    shown = config.masked(loaded)
    assert shown["smtp"]["password"] == "********"
    assert "hunter2" not in repr(shown)


def test_resolve_path_order(tmp_path: Path) -> None:
    assert config.resolve_path("x.toml", environ={"MAILROUTE_CONFIG": "y.toml"}) == Path("x.toml")
    assert config.resolve_path(None, environ={"MAILROUTE_CONFIG": "y.toml"}) == Path("y.toml")


def test_example_documents_every_key() -> None:
    """Each field of each section appears in config.example.toml (set or commented)."""
    text = (Path(__file__).resolve().parents[1] / "config.example.toml").read_text("utf-8")
    undocumented = []
    for name, field in config.Config.model_fields.items():
        model = field.annotation
        if name == "source" or not isinstance(model, type):
            continue
        if f"[{name}]" not in text:
            undocumented.append(f"[{name}]")
        for key in getattr(model, "model_fields", {}):
            if f"\n{key} =" not in text and f"\n# {key} =" not in text:
                undocumented.append(f"{name}.{key}")
    assert undocumented == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[replies]\nwindwo = "always"\n',
         r":2: replies.windwo: unknown key; did you mean 'window'\?"),
        ('[mailbx]\nhost = "x"\n', r":1: mailbx: unknown key; did you mean 'mailbox'\?"),
        ('[[registry.organizations]]\nnmae = "A"\n',
         r"registry.organizations.0.nmae: unknown key; did you mean 'name'\?"),
        ('[sla.tiers.gold.critical]\nfirst_respons = "1h"\n',
         r"first_respons: unknown key; did you mean 'first_response'\?"),
    ],
)
def test_unknown_key_suggests_the_closest_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected):
        config.load(path, environ={})


def test_unknown_key_far_from_any_field_gets_no_guess(tmp_path: Path) -> None:
    path = write(tmp_path, '[replies]\nzzzzqq = "x"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert "replies.zzzzqq: unknown key" in str(caught.value)
    assert "did you mean" not in str(caught.value)
