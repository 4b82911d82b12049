"""Skip-or-fail policy for tests that need an external service.

On a developer machine a missing Dovecot or PostgreSQL should only skip the tests that need
it. In CI (``MAILROUTE_REQUIRE_SERVICES=1``) a skip would hide a broken environment, so the
same condition fails the test instead.
"""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest

REQUIRE_SERVICES_ENV = "MAILROUTE_REQUIRE_SERVICES"


def services_required() -> bool:
    """True when missing services must fail tests rather than skip them (CI)."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "") == "1"


def require_service(name: str, reason: str) -> NoReturn:
    """Skip the current test because *name* is unavailable, or fail it in CI."""
    if services_required():
        pytest.fail(
            f"{name} is required ({REQUIRE_SERVICES_ENV}=1) but unavailable: {reason}",
            pytrace=False,
        )
    pytest.skip(f"{name} unavailable: {reason}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (servers bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
