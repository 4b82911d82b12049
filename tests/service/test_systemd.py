"""systemd integration: the sd_notify client against a real datagram socket, and the unit.

The unit file is checked three ways: its directives are parsed and compared with what the
deployment relies on; ``systemd-analyze verify`` must accept it without a warning; and
``systemd-analyze security --offline`` must not score it worse than docs/systemd.md says.
The two ``systemd-analyze`` tests skip without the tool, or fail under
``MAILROUTE_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.services import require_service

from mailroute.service import systemd
from mailroute.service.systemd import Notifier, notify, watchdog_interval

ROOT = Path(__file__).resolve().parents[2]
UNIT_DIR = ROOT / "systemd"
MAIN_UNIT = UNIT_DIR / "mailroute.service"
DOCS = ROOT / "docs" / "systemd.md"
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the trailing NUL

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux AF_UNIX")


# ------------------------------------------------------------------ sd_notify client


class Receiver:
    """The manager's end: a bound AF_UNIX datagram socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value

    def receive(self) -> list[str]:
        data = self.sock.recv(65536)
        return data.decode("utf-8").split("\n")

    def receive_with_pid(self) -> tuple[list[str], int]:
        """Message and the sender's PID as the kernel reports it (what systemd checks)."""
        size = socket.CMSG_SPACE(12)  # struct ucred: pid, uid, gid
        data, ancillary, _flags, _addr = self.sock.recvmsg(65536, size)
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = int.from_bytes(payload[:4], sys.byteorder)
                return data.decode("utf-8").split("\n"), pid
        raise AssertionError("no SCM_CREDENTIALS on the datagram")

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(65536)
        except BlockingIOError:
            return True
        finally:
            self.sock.setblocking(True)
        return False


def _short_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, unless a socket path in it would not fit in sun_path."""
    if len(os.fsencode(tmp_path / "notify.sock")) <= SUN_PATH_MAX:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="mr-sd-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture
def receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A notification socket on the file system, named in $NOTIFY_SOCKET."""
    for directory in _short_dir(tmp_path):
        path = directory / "notify.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(os.fsencode(path))
            sock.settimeout(5)
            if hasattr(socket, "SO_PASSCRED"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            monkeypatch.setenv("NOTIFY_SOCKET", str(path))
            yield Receiver(sock, str(path))


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A notification socket in the abstract namespace ("@name"), as systemd often uses."""
    name = f"mailroute-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")
        yield Receiver(sock, f"@{name}")


@linux_only
def test_notify_sends_fields_as_one_datagram(receiver: Receiver) -> None:
    assert notify("READY=1", "STATUS=serving INBOX") is True
    assert receiver.receive() == ["READY=1", "STATUS=serving INBOX"]


@linux_only
def test_notifier_methods_send_the_protocol_fields(receiver: Receiver) -> None:
    with Notifier() as notifier:
        assert notifier.enabled
        assert notifier.ready("connected to imap, database, smtp")
        assert receiver.receive() == ["READY=1", "STATUS=connected to imap, database, smtp"]
        assert notifier.ready()
        assert receiver.receive() == ["READY=1"]
        assert notifier.status("3 letters in the outbox")
        assert receiver.receive() == ["STATUS=3 letters in the outbox"]
        assert notifier.watchdog()
        assert receiver.receive() == ["WATCHDOG=1"]
        assert notifier.stopping("finishing the letter in hand")
        assert receiver.receive() == ["STOPPING=1", "STATUS=finishing the letter in hand"]


@linux_only
def test_reloading_carries_the_monotonic_timestamp(receiver: Receiver) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier().reloading("re-reading /etc/mailroute/config.toml")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = receiver.receive()
    assert fields[0] == "RELOADING=1"
    assert fields[2] == "STATUS=re-reading /etc/mailroute/config.toml"
    key, _, value = fields[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


@linux_only
def test_abstract_socket_names_work(abstract_receiver: Receiver) -> None:
    address = systemd.socket_address()
    assert address is not None and address.startswith(b"\0")
    assert notify("READY=1") is True
    assert abstract_receiver.receive() == ["READY=1"]
    assert Notifier().watchdog() is True
    assert abstract_receiver.receive() == ["WATCHDOG=1"]


@linux_only
def test_a_newline_in_a_status_cannot_inject_fields(receiver: Receiver) -> None:
    assert Notifier().status("config reload rejected:\nREADY=1\n  smtp.port: bad")
    assert receiver.receive() == ["STATUS=config reload rejected: READY=1   smtp.port: bad"]


@linux_only
def test_undecodable_status_text_is_replaced_not_raised(receiver: Receiver) -> None:
    assert Notifier().status("reading /srv/mail/\udcff.eml")
    assert receiver.receive() == ["STATUS=reading /srv/mail/?.eml"]


@linux_only
def test_pings_from_other_threads_come_from_our_pid(receiver: Receiver) -> None:
    """NotifyAccess=main accepts them: the kernel reports the process, not the thread."""
    notifier = Notifier()
    results: list[bool] = []
    workers = [threading.Thread(target=lambda: results.append(notifier.watchdog()))
               for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert results == [True] * 8
    for _ in range(8):
        fields, pid = receiver.receive_with_pid()
        assert fields == ["WATCHDOG=1"]
        assert pid == os.getpid()


def test_without_notify_socket_nothing_is_sent_and_nothing_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.reloading() is False
    notifier.close()


@pytest.mark.parametrize("value", ["", "@", "relative/notify", "vsock:2:1234"])
def test_unusable_socket_names_count_as_not_under_systemd(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.socket_address() is None
    assert notify("READY=1") is False
    assert Notifier().watchdog() is False


@linux_only
def test_socket_errors_return_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody listening (the manager re-executing, say): False, not an exception."""
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify("READY=1") is False
    notifier = Notifier()
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert notify() is False  # nothing to say is not an error either


@linux_only
def test_notifier_recovers_when_the_socket_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for directory in _short_dir(tmp_path):
        path = directory / "later.sock"
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        notifier = Notifier()
        assert notifier.watchdog() is False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(os.fsencode(path))
            sock.settimeout(5)
            assert notifier.watchdog() is True
            assert sock.recv(100) == b"WATCHDOG=1"
        notifier.close()


def test_watchdog_interval_reads_usec_for_our_pid() -> None:
    env = {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 60.0
    notifier = Notifier({**env, "NOTIFY_SOCKET": "/run/systemd/notify"})
    assert notifier.watchdog_timeout == 60.0
    assert notifier.ping_interval == 30.0


def test_watchdog_interval_without_pid_applies_to_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "1500000"}) == 1.5


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "sixty"},
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"},  # inherited: not ours
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "pid"},
    ],
)
def test_watchdog_interval_none_when_not_for_us(env: dict[str, str]) -> None:
    if env.get("WATCHDOG_PID") == "1" and os.getpid() == 1:
        pytest.skip("the test process is PID 1")
    assert watchdog_interval(env) is None
    assert Notifier(env).ping_interval is None


def test_watchdog_interval_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 20.0


# ------------------------------------------------------------------------- unit file


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd's INI dialect: repeated keys accumulate, "#"/";" comments, "\\" continues."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit(MAIN_UNIT)["Service"]


REQUIRED_SERVICE = {
    "Type": "notify",
    "NotifyAccess": "main",
    "ExecStart": "/usr/bin/mailroute run",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "TimeoutStopSec": "15s",
    "DynamicUser": "yes",
    "StateDirectory": "mailroute",
    "ConfigurationDirectory": "mailroute",
    "WorkingDirectory": "/var/lib/mailroute",
    "Environment": "MAILROUTE_CONFIG=/etc/mailroute/config.toml",
    "StandardError": "journal",
    "SyslogIdentifier": "mailroute",
    "UMask": "0077",
}

HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "PrivateUsers": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateIPC": "yes",
    "PrivateMounts": "yes",
    "ProtectHostname": "yes",
    "ProtectClock": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RemoveIPC": "yes",
    "KeyringMode": "private",
    "DevicePolicy": "closed",
    "SystemCallArchitectures": "native",
}


@pytest.mark.parametrize(("key", "value"), sorted({**REQUIRED_SERVICE, **HARDENING}.items()))
def test_unit_sets(service: dict[str, list[str]], key: str, value: str) -> None:
    assert key in service, f"mailroute.service lacks {key}="
    assert service[key] == [value], f"{key}={service[key]}, expected {key}={value}"


def test_unit_migrates_before_running(service: dict[str, list[str]]) -> None:
    assert service["ExecStartPre"] == ["-/usr/bin/mailroute db upgrade"]


def test_unit_watchdog_and_restart_policy(service: dict[str, list[str]]) -> None:
    assert _seconds(service["WatchdogSec"][-1]) >= 10
    assert _seconds(service["RestartSec"][-1]) > 0
    assert _seconds(service["TimeoutStopSec"][-1]) > 10  # the daemon's own stop limit
    assert set(service["RestartPreventExitStatus"][-1].split()) == {"2", "243"}


def test_unit_system_call_filter(service: dict[str, list[str]]) -> None:
    assert service["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert service["SystemCallErrorNumber"] == ["EPERM"]


def test_unit_passwords_come_as_credentials(service: dict[str, list[str]]) -> None:
    assert service["LoadCredential"] == [
        "imap-password:/etc/mailroute/imap-password",
        "smtp-password:/etc/mailroute/smtp-password",
    ]
    # An environment override would beat the operator's [database] url: none is set.
    assert not any("MAILROUTE_DATABASE__" in env for env in service["Environment"])


def test_unit_still_reaches_the_network(service: dict[str, list[str]]) -> None:
    for key in ("PrivateNetwork", "IPAddressDeny"):
        assert key not in service, f"{key}= would cut mailroute off its IMAP/SMTP servers"
    unit = parse_unit(MAIN_UNIT)
    assert "network-online.target" in unit["Unit"]["After"][0].split()
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value.strip())
    assert match, value
    return float(match.group(1)) * units.get(match.group(2) or "s", 1)


# ------------------------------------------------------------------- systemd-analyze


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        require_service(
            "systemd-analyze",
            "not installed (Debian/Ubuntu: apt-get install systemd)",
        )
    return tool


def _host_unit_dir() -> Path | None:
    for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        path = Path(candidate)
        if (path / "sysinit.target").exists():
            return path
    return None


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file-system root for ``--root``: the host's stock units, ours, and stub binaries.

    ``verify`` insists that every Exec*= binary exists and that units such as
    sysinit.target load; with --root it looks for both inside this tree, so the test does
    not need mailroute installed in /usr/bin, nor anything of ours on the host.
    """
    _systemd_analyze()
    stock = _host_unit_dir()
    if stock is None:
        require_service("systemd unit directory", "no sysinit.target in /usr/lib/systemd")
    root = tmp_path_factory.mktemp("sysroot")
    shutil.copytree(stock, root / "usr/lib/systemd/system", symlinks=True)
    target = root / "etc/systemd/system"
    target.mkdir(parents=True)
    for unit in sorted(UNIT_DIR.glob("*.service")):
        shutil.copy(unit, target / unit.name)
        for key, values in parse_unit(unit)["Service"].items():
            if key.startswith("Exec"):
                for value in values:
                    binary = shlex.split(value.lstrip("-@:+!"))[0]
                    stub = root / binary.lstrip("/")
                    stub.parent.mkdir(parents=True, exist_ok=True)
                    stub.write_text("#!/bin/sh\nexit 0\n")
                    stub.chmod(0o755)
    return root


def test_systemd_analyze_verify_accepts_the_units(fake_root: Path) -> None:
    tool = _systemd_analyze()
    units = sorted((fake_root / "etc/systemd/system").glob("*.service"))
    assert units, "no unit files in systemd/"
    result = subprocess.run(
        [tool, "verify", "--man=no", f"--root={fake_root}", *map(str, units)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    # verify exits 0 on an unknown or unparsable key ("..., ignoring"): any remark on our
    # units counts as a failure.
    ours = [line for line in output.splitlines()
            if any(unit.name in line or str(unit) in line for unit in units)]
    assert not ours, "\n".join(ours)


def test_systemd_analyze_verify_catches_a_typo(fake_root: Path, tmp_path: Path) -> None:
    """The check above can fail: a misspelt key in a copy of the unit is reported."""
    tool = _systemd_analyze()
    broken = fake_root / "etc/systemd/system/mailroute-typo.service"
    broken.write_text(MAIN_UNIT.read_text().replace("LockPersonality=", "LockPersonalty="))
    try:
        result = subprocess.run(
            [tool, "verify", "--man=no", f"--root={fake_root}", str(broken)],
            capture_output=True, text=True, timeout=120, check=False,
        )
    finally:
        broken.unlink()
    assert "LockPersonalty" in result.stdout + result.stderr


def documented_exposure() -> float:
    match = re.search(r"Overall exposure level for mailroute\.service: (\d+\.\d+)",
                      DOCS.read_text(encoding="utf-8"))
    assert match, f"{DOCS} does not record the exposure score"
    return float(match.group(1))


def test_systemd_analyze_security_score_is_as_documented(fake_root: Path) -> None:
    tool = _systemd_analyze()
    usage = subprocess.run([tool, "security", "--help"], capture_output=True, text=True,
                           timeout=60, check=False)
    if "--offline" not in usage.stdout + usage.stderr:
        require_service("systemd-analyze security --offline", "this systemd is older than 250")
    result = subprocess.run(
        [tool, "security", "--offline=yes", f"--root={fake_root}", "--no-pager",
         str(fake_root / "etc/systemd/system/mailroute.service")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for mailroute\.service: (\d+\.\d+)", output)
    assert match, output
    assert float(match.group(1)) <= documented_exposure(), output


@linux_only
def test_a_manager_that_does_not_read_never_blocks_the_notifier(receiver: Receiver) -> None:
    """The manager's queue holds a few datagrams; once it is full, watchdog pings are
    dropped at once and other messages give up after a short wait, instead of holding
    the daemon's main loop (and SIGTERM) until somebody reads."""
    notifier = Notifier()
    answers: list[bool] = []

    def ping() -> None:
        answers.extend(notifier.watchdog() for _ in range(200))
        answers.append(notifier.status("still here"))

    pinger = threading.Thread(target=ping, daemon=True)
    pinger.start()
    pinger.join(60)
    assert not pinger.is_alive()
    assert answers[0] is True and answers[-2] is False  # the queue filled, then dropped
    assert answers[-1] is False
    notifier.close()
