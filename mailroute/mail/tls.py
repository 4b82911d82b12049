"""TLS contexts for IMAP and SMTP: verification on unless switched off, built once.

``ssl.create_default_context`` loads the system's CA bundle, which costs
milliseconds; a context is safe to share between connections, so one is made
per (verify, CA file) and reused.
"""

from __future__ import annotations

import ssl
from functools import lru_cache


@lru_cache(maxsize=8)
def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verification by default; a private CA can be added."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
