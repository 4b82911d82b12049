"""Size and shape bombs through the real daemon: stored, decided within the limits, bounded.

Each bomb is delivered into a Maildir followed by an ordinary letter, then
``mailroute run --once`` runs in a subprocess.  For every bomb:

* its raw bytes are in ``letter_bytes.raw``, whole (nothing is lost, whatever it is);
* it is processed, or quarantined with a reason that names the limit it broke;
* the ordinary letter after it is processed (one bad letter blocks nothing);
* the subprocess's peak RSS stays under the bound stated in BOMBS; the figures are
  printed.  It is the child's own ``VmHWM`` (/proc/self/status, read at exit):
  ``ru_maxrss`` from getrusage or wait4 is no good here, because Linux carries the
  parent's high-water mark across fork and exec, so a child of a big pytest process
  "peaks" at pytest's size.

The limits are the defaults of ``[limits]`` (50 MiB, 1000 parts, depth 30, 1 MiB of
header), and for the part and depth bombs also raised, to show the letter is then
read, not refused.  A zip of a gigabyte of zeroes is stored as the 1 MB it is:
nothing in mailroute opens archives.
"""

from __future__ import annotations

import base64
import io
import os
import random
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from support.configs import sample_letters, write_config

from mailroute.core.letter import ParseLimits, parse
from mailroute.errors import LetterUnreadable
from mailroute.store import Store
from mailroute.store import repository as repo
from mailroute.store.models import AttachmentRecord, Blob, Letter, LetterBytes

MAILROUTE = [sys.executable, "-m", "mailroute"]
MB = 1024 * 1024
LIMIT = ParseLimits()
HEAD = (
    b"From: Ivan Petrov <ivan@client.ru>\r\nTo: servicedesk@example.com\r\n"
    b"Subject: %s\r\nMessage-ID: <bomb-%s@client.ru>\r\nDate: Mon, 16 Nov 2026 12:00:00 +0300\r\n"
)
TEXT = "Сервер не запускается после обновления, ошибка при входе в программу. ".encode()


def head(name: str, subject: str = "The server does not start") -> bytes:
    return HEAD % (subject.encode(), name.encode())


def attachment_letter(size: int) -> bytes:
    """A short request with one base64 attachment, `size` bytes in all."""
    payload = random.Random(1).randbytes((size - 2000) * 57 // 78)
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    return (
        head("attachment") + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT + b"\r\n--B\r\n"
        b"Content-Type: application/octet-stream; name=dump.bin\r\n"
        b"Content-Disposition: attachment; filename=dump.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--B--\r\n"
    )


def text_letter(size: int) -> bytes:
    """A plain-text body of `size` bytes (logs pasted into the letter)."""
    line = TEXT + b"\r\n"
    return head("text") + b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + line * (
        size // len(line)
    )


def no_blank_line(size: int) -> bytes:
    """Two headers and then body lines with no blank line between: all of it a header
    section to a naive splitter."""
    return head("noblank")[:-2] + b"\r\n" + b"body line\r\n" * (size // 11)


def many_header_lines(size: int) -> bytes:
    """Tens of megabytes of tiny header fields: refused, but only after splitting them
    all (3.3 GB and 23 s) before parse read no further than the limit."""
    return head("headers") + b"X:y\r\n" * (size // 5) + b"\r\nbody\r\n"


def many_parts(count: int) -> bytes:
    parts = b"".join(
        b"--B\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(count)
    )
    top = b"Content-Type: multipart/mixed; boundary=B\r\n\r\n"
    return head("parts") + top + parts + b"--B--\r\n"


def nested(depth: int) -> bytes:
    inner = TEXT + b"\r\n"
    for level in reversed(range(depth)):
        b = b"n%d" % level
        inner = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n"
                 + inner + b"\r\n--" + b + b"--\r\n")  # fmt: skip
    return head("nested") + inner


def long_header(size: int) -> bytes:
    return head("header") + b"X-Long: " + b"a" * size + b"\r\n\r\n" + TEXT + b"\r\n"


def zip_of_zeroes() -> tuple[bytes, bytes]:
    """A 1 MB zip that inflates to 1 GiB of zeroes, and the letter carrying it."""
    buffer = io.BytesIO()
    chunk = bytes(MB)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("zeroes.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(1024):
            member.write(chunk)
    data = buffer.getvalue()
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    raw = (
        head("zip") + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT + b"\r\n--B\r\n"
        b"Content-Type: application/zip; name=logs.zip\r\n"
        b"Content-Disposition: attachment; filename=logs.zip\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"--B--\r\n"
    )
    return data, raw


@dataclass(frozen=True)
class Bomb:
    """One bomb: how to build it, what must become of it, the RSS bound in MiB."""

    build: Callable[[], bytes]
    state: str
    reason: str | None  # a fragment of the quarantine reason
    rss_mb: int
    limits: dict[str, int] = field(default_factory=dict)
    slow: bool = False


# Peak RSS measured on the 2-core CI machine (November 2026): an ordinary letter 88 MiB;
# every 50 MB letter 430-460 MiB, SQLite or PostgreSQL, read or refused alike: the
# peak is in fetching and updating the row that holds the raw bytes, not in parse (see
# the report in docs/reliability.md).  Before parse bounded the text it reads, the
# 50 MB text letter took 2.4 GiB and 109 s, and 50 MB of header lines 3.3 GiB.
BIG = 600

BOMBS: dict[str, Bomb] = {
    # 50 MB, just under the 50 MiB limit: read, attachment stored.
    "50mb-attachment": Bomb(lambda: attachment_letter(50_000_000), "processed", None, BIG,
                            slow=True),
    # 50 MB of text: read, the text analysed is the first 200 000 characters.
    "50mb-text": Bomb(lambda: text_letter(50_000_000), "processed", None, BIG, slow=True),
    "50mb-no-blank-line": Bomb(lambda: no_blank_line(50_000_000), "processed", None, BIG,
                               slow=True),
    "over-50mib": Bomb(lambda: text_letter(LIMIT.max_bytes + MB), "quarantined",
                       f"limit is {LIMIT.max_bytes}", BIG, slow=True),
    "50mb-of-header-lines": Bomb(lambda: many_header_lines(50_000_000), "quarantined",
                                 "header section is", BIG, slow=True),
    "10000-parts": Bomb(lambda: many_parts(10_000), "quarantined",
                        "letter has 10001 MIME parts; limit is 1000", 200),
    "10000-parts-allowed": Bomb(lambda: many_parts(10_000), "processed", None, 250,
                                limits={"max_parts": 20_000}),
    "nested-100": Bomb(lambda: nested(100), "quarantined",
                       "MIME parts nested 31 deep; limit is 30", 200),
    "nested-100-allowed": Bomb(lambda: nested(100), "processed", None, 200,
                               limits={"max_depth": 200}),
    "5mb-header-line": Bomb(lambda: long_header(5_000_000), "quarantined",
                            "header section is 5000", 250),
}


@dataclass
class Run:
    """A finished ``mailroute run --once``: exit code, peak RSS, wall time, stderr."""

    returncode: int
    rss_mb: float
    seconds: float
    stderr: str


# `python -m mailroute ARGS`, writing the process's VmHWM to $HWM_FILE at exit.
MEASURED = (
    "import atexit, os, runpy, sys\n"
    "def hwm():\n"
    "    with open('/proc/self/status') as status:\n"
    "        kb = next(line.split()[1] for line in status if line.startswith('VmHWM:'))\n"
    "    with open(os.environ['HWM_FILE'], 'w') as out:\n"
    "        out.write(kb)\n"
    "atexit.register(hwm)\n"
    "sys.argv[0] = 'mailroute'\n"
    "runpy.run_module('mailroute', run_name='__main__')\n"
)


def run_measured(args: list[str], cwd: Path) -> Run:
    """Run the CLI with these arguments and read its own peak RSS."""
    log, hwm = cwd / "stderr.log", cwd / "hwm.kb"
    started = time.monotonic()
    with log.open("wb") as err:
        result = subprocess.run([sys.executable, "-c", MEASURED, *args], stdout=subprocess.DEVNULL,
                                stderr=err, cwd=cwd, env={**os.environ, "HWM_FILE": str(hwm)},
                                timeout=600, check=False)
    seconds = time.monotonic() - started
    return Run(result.returncode, int(hwm.read_text()) / 1024, seconds,
               log.read_text(errors="replace"))


def rows(url: str, model: type) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            order = model.__table__.primary_key.columns  # type: ignore[attr-defined]
            return list(connection.execute(select(model).order_by(*order)))
    finally:
        engine.dispose()


def setup_maildir(root: Path, raws: list[bytes]) -> Path:
    box = root / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    base = time.time() - 100
    for order, raw in enumerate(raws):
        path = box / "new" / f"{1_700_000_000 + order}.bomb{order}.host"
        path.write_bytes(raw)
        os.utime(path, (base + order, base + order))
    return box


def deliver_and_run(
    root: Path, database_url: str, raws: list[bytes], limits: dict[str, int] | None = None
) -> Run:
    box = setup_maildir(root, raws)
    config = write_config(root / "config.toml", account=None, sink=None,
                          database_url=database_url, maildir=box,
                          extra={"replies": {"enabled": False}, "limits": limits or {}})
    upgrade = subprocess.run([*MAILROUTE, "--config", str(config), "db", "upgrade"],
                             capture_output=True, text=True, timeout=120, check=False)
    assert upgrade.returncode == 0, upgrade.stderr
    return run_measured(["--config", str(config), "run", "--once"], root)


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[bomb] {line}")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Peak RSS of a run that reads one ordinary letter: the interpreter and imports."""
    root = tmp_path_factory.mktemp("baseline")
    result = deliver_and_run(root, f"sqlite:///{root / 'db.sqlite'}", [sample_letters()[0]])
    assert result.returncode == 0, result.stderr[-2000:]
    return result.rss_mb


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if b.slow else n for n, b in BOMBS.items()],
)
def test_bomb(
    name: str, tmp_path: Path, database_url: str, baseline: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bomb = BOMBS[name]
    raw = bomb.build()
    ordinary = sample_letters()[0]
    size = len(raw)

    result = deliver_and_run(tmp_path, database_url, [raw, ordinary], bomb.limits)
    del raw

    assert result.returncode == 0, result.stderr[-3000:]
    letters = rows(database_url, Letter)
    assert len(letters) == 2
    first, second = letters
    stored = {row.letter_id: row.raw for row in rows(database_url, LetterBytes)}
    assert first.size == size and len(stored[first.id]) == size  # stored whole, whatever it is
    assert first.state == bomb.state, (first.state, first.stage, (first.error or "")[:300])
    if bomb.reason is not None:
        assert first.stage == "parse" and bomb.reason in first.error, first.error
    assert second.state == "processed", (second.state, second.error)
    report(capsys, f"{name} on {database_url.split(':')[0]}: {size / MB:.1f} MiB → "
                   f"{first.state}{' (' + first.error + ')' if first.error else ''}; "
                   f"peak RSS {result.rss_mb:.0f} MiB (baseline {baseline:.0f}), "
                   f"{result.seconds:.1f} s")
    assert result.rss_mb < bomb.rss_mb, f"peak RSS {result.rss_mb:.0f} MiB"


def test_zip_of_zeroes_is_stored_not_expanded(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The archive is an attachment like any other: recorded, kept in its letter's bytes
    and read back from them byte for byte, never opened."""
    data, raw = zip_of_zeroes()
    assert len(data) < 1_100_000
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # what it would become if opened
        assert archive.infolist()[0].file_size == 1024 * MB

    result = deliver_and_run(tmp_path, database_url, [raw, sample_letters()[0]])

    assert result.returncode == 0, result.stderr[-3000:]
    assert [x.state for x in rows(database_url, Letter)] == ["processed", "processed"]
    (record,) = rows(database_url, AttachmentRecord)
    assert (record.filename, record.content_type, record.size) == (
        "logs.zip", "application/zip", len(data))
    assert rows(database_url, Blob) == []  # not stored a second time beside the letter
    store = Store(database_url)
    try:
        with store.reading() as session:
            found = session.get(AttachmentRecord, record.id)
            assert found is not None
            assert repo.attachment_content(session, found, ParseLimits()) == data
    finally:
        store.dispose()
    report(capsys, f"zip of 1 GiB of zeroes ({len(data) / MB:.1f} MiB) on "
                   f"{database_url.split(':')[0]}: stored as {record.size} bytes; "
                   f"peak RSS {result.rss_mb:.0f} MiB, {result.seconds:.1f} s")
    assert result.rss_mb < 250


# ------------------------------------------------------------------ parse alone


def test_text_analysed_is_bounded() -> None:
    """A 50 MB body is read up to max_text_chars, cut after a line, and says so."""
    parsed = parse(text_letter(50_000_000))
    assert len(parsed.text) <= LIMIT.max_text_chars
    assert len(parsed.text) > LIMIT.max_text_chars * 0.9
    assert parsed.text.endswith("программу.")
    assert any("read the first" in d for d in parsed.defects)
    assert any("body text cut to its first" in d for d in parsed.defects)


def test_many_text_parts_are_read_up_to_the_bound() -> None:
    parts = b"".join(
        b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT * 400 + b"\r\n"
        for _ in range(900)
    )
    raw = head("many") + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + parts + b"--B--"
    parsed = parse(raw)
    assert LIMIT.max_text_chars * 0.9 < len(parsed.text) <= LIMIT.max_text_chars


def test_header_section_is_refused_without_splitting_all_of_it() -> None:
    """50 MB of "X:y" lines: refused in well under a second (was 23 s and 3.3 GB)."""
    raw = many_header_lines(50_000_000)
    started = time.thread_time()
    with pytest.raises(LetterUnreadable, match=r"header section is \d+ bytes; limit is 1048576"):
        parse(raw)
    assert time.thread_time() - started < 1


def test_header_line_cut_by_the_limit_still_counts_as_header() -> None:
    """A header longer than the limit and no blank line: refused, not read as body."""
    raw = head("cut") + b"X-Long: " + b"a" * (2 * MB)
    with pytest.raises(LetterUnreadable, match="header section is"):
        parse(raw)
    small = head("fits") + b"this line is body\r\n" + b"more body\r\n" * 300_000
    assert parse(small).text.startswith("this line is body")
