"""Serving the console with uvicorn: in the foreground (`mailroute web`) or in a thread
beside the daemon's intake (`mailroute run` with ``[web] listen``).

uvicorn's own reading of forwarded headers is switched off: the console believes
``X-Forwarded-For`` only from ``[web] trusted_proxies`` (see ``auth.client_address``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

import uvicorn

from mailroute import logs
from mailroute.config import Config
from mailroute.store import Store
from mailroute.web.app import create_app
from mailroute.web.guard import utc_now

log = logs.get("mailroute.web")


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def server_for(
    store: Store, config: Config, listen: str, clock: Callable[[], datetime] = utc_now
) -> uvicorn.Server:
    host, port = split_listen(listen)
    settings = uvicorn.Config(
        create_app(store, config, clock), host=host, port=port, proxy_headers=False,
        server_header=False, log_config=None, access_log=False, lifespan="off")
    return uvicorn.Server(settings)


class ConsoleThread:
    """The console served in a daemon thread of its own, stopped with :meth:`stop`."""

    def __init__(self, server: uvicorn.Server) -> None:
        self.server = server
        self.thread = threading.Thread(target=self._serve, name="console", daemon=True)

    def _serve(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # a console that cannot serve never stops intake
            log.error("console stopped", error=str(exc))

    def start(self, wait: float = 10.0) -> ConsoleThread:
        self.thread.start()
        deadline = time.monotonic() + wait
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.server.started:
            config = self.server.config
            log.info("console serving", listen=f"{config.host}:{config.port}")
        return self

    def stop(self, wait: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(wait)
