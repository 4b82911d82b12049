"""Log lines: credentials never reach them, whatever the key is called."""

from __future__ import annotations

import io

import structlog

from mailroute import logs


def test_values_of_credential_keys_are_replaced_and_the_rest_kept() -> None:
    stream = io.StringIO()
    logs.configure("info", stream=stream)
    try:
        logs.get("test").info("login", username="desk", password="hunter2",
                              Access_Token="abc.def", client_secret="s3", uid="42")
        logs.get("test").info("again", password="hunter3")  # the same key, now known
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    assert "hunter2" not in text and "hunter3" not in text
    assert "abc.def" not in text and "s3" not in text
    assert "username=desk" in text and "uid=42" in text
    assert text.count("********") == 4
