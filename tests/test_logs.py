"""Log lines: credentials never reach them, whatever the key is called; each line is
structlog's logfmt line."""

from __future__ import annotations

import io

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

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


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(alphabet=st.sampled_from(list('ab =\\"\n\tй<>@.')), max_size=12),
)
_KEYS = st.one_of(st.sampled_from(logs.KEY_ORDER), st.from_regex(r"[a-z_]{1,8}", fullmatch=True))


@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_a_line_is_what_structlogs_logfmt_renderer_writes(event: dict[str, object]) -> None:
    """``KeyValueLine`` is a faster copy of structlog's renderer: the same line for any
    keys and values (quotes, backslashes, line breaks, flags, missing ordered keys)."""
    theirs = structlog.processors.LogfmtRenderer(key_order=logs.KEY_ORDER, drop_missing=True)
    assert logs.KeyValueLine(logs.KEY_ORDER)(None, "info", dict(event)) == theirs(
        None, "info", dict(event))


def test_a_key_with_a_space_is_refused_as_structlog_refuses_it() -> None:
    with pytest.raises(ValueError, match="Invalid key"):
        logs.KeyValueLine(logs.KEY_ORDER)(None, "info", {"bad key": 1})
