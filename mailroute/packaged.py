"""What ships inside the package, read once at the edge: the built-in rules and reply templates.

The core (:mod:`mailroute.core`) reads no files; the daemon, ``explain``, the worker processes
and the tests all build their rules and templates here and pass them in, so each of them sees
exactly the same ones.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from mailroute.config import ClassificationRule, Config
from mailroute.core import classify
from mailroute.core.compose import KINDS, LANGUAGES, Templates
from mailroute.core.verdict import AnalysisContext


@cache
def builtin_rules() -> tuple[ClassificationRule, ...]:
    """The classification rules shipped in ``mailroute/core/rules.toml``."""
    text = resources.files("mailroute.core").joinpath("rules.toml").read_text(encoding="utf-8")
    return classify.parse_rules(text)


def analysis_context(config: Config) -> AnalysisContext:
    """Everything analysis needs from ``config``, with the built-in rules."""
    return AnalysisContext.from_config(config, builtin_rules())


def load_templates(override_dir: str | None = None) -> Templates:
    """Built-in reply templates, each replaced by ``KIND.LANG.txt`` in ``override_dir``."""
    builtin = resources.files("mailroute") / "templates"
    texts = {}
    for kind in KINDS:
        for lang in LANGUAGES:
            name = f"{kind}.{lang}.txt"
            custom = Path(override_dir) / name if override_dir else None
            source = custom if custom and custom.is_file() else builtin / name
            texts[(kind, lang)] = source.read_text(encoding="utf-8")
    return Templates(texts)
