"""The daemon serves the console under ``[web] listen``, beside intake: a person logged in
reads the queue while letters keep being filed and answered, through the real `run`."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
from support.configs import write_config
from support.maildir import deliver, empty_maildir
from support.services import free_port
from support.smtp import SmtpSink

MAILROUTE = [sys.executable, "-m", "mailroute"]
LETTERS = 40


def letter(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"user{n}@org{n}.example"  # a domain each: under the domain cap
    message["To"] = "servicedesk@example.com"
    message["Subject"] = f"Ошибка в отчёте {n}"
    message["Message-ID"] = f"<console{n}@romashka.example>"
    message.set_content(f"Отчёт не формируется.\n\nООО «Ромашка»\nрег. номер {800100200 + n}\n")
    return bytes(message)


def test_the_daemon_serves_the_console_while_it_files_letters(
    tmp_path: Path, smtp_sink: SmtpSink, database_url: str
) -> None:
    box = empty_maildir(tmp_path)
    port = free_port()
    config = write_config(tmp_path / "config.toml", account=None, sink=smtp_sink,
                          database_url=database_url, maildir=box,
                          extra={"web": {"listen": f"127.0.0.1:{port}",
                                         "secure_cookies": False}})
    run = lambda *a, **kw: subprocess.run(  # noqa: E731
        [*MAILROUTE, "--config", str(config), *a], capture_output=True, text=True,
        timeout=120, check=False, **kw)
    assert run("db", "upgrade").returncode == 0
    added = run("users", "add", "olga", "--role", "operator", input="daemon-pass-1\n")
    assert added.returncode == 0, added.stderr
    log = (tmp_path / "daemon.log").open("wb")
    daemon = subprocess.Popen([*MAILROUTE, "--config", str(config), "run"],
                              stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=10) as web:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if web.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            else:
                raise AssertionError("the daemon never served /healthz\n"
                                     + (tmp_path / "daemon.log").read_text()[-2000:])
            login_page = web.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login_page.text)
            assert csrf, login_page.text[:500]
            logged = web.post("/login", data={"name": "olga", "password": "daemon-pass-1",
                                              "csrf": csrf.group(1)})
            assert logged.status_code in (200, 303), logged.text[:500]
            pages = 0
            for n in range(LETTERS):  # letters arrive while the queue is being read
                deliver(box, f"{n}.host", letter(n))
                assert web.get("/").status_code == 200
                pages += 1
            while time.monotonic() < deadline and len(smtp_sink.received()) < LETTERS:
                assert web.get("/").status_code == 200
                pages += 1
                time.sleep(0.2)
            queue = web.get("/")
        assert len(smtp_sink.received()) == LETTERS  # every letter answered meanwhile
        assert queue.text.count("SD-0000") >= LETTERS  # and every request on the queue
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        log.close()
    print(f"\n[console in the daemon] {pages} queue pages served while {LETTERS} letters "
          "were filed and answered")
