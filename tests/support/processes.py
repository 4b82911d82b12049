"""Process states read from /proc, for tests that must know a process is really gone.

A zombie counts as gone everywhere here: it has closed its files and sockets, and an
orphaned one is reaped by PID 1 at its own pace (more than a second in some containers).
"""

from __future__ import annotations

from pathlib import Path


def _stat_fields(stat_file: Path) -> list[str] | None:
    """The fields after the parenthesised command (state ppid pgrp ...); None once gone."""
    try:
        stat = stat_file.read_text()
    except OSError:
        return None  # exited meanwhile
    return stat.rsplit(")", 1)[1].split()


def running(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] != "Z"


def live_group_members(group: int) -> list[int]:
    """PIDs in process group *group* that are not zombies."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry / "stat")
        if fields is not None and fields[0] != "Z" and int(fields[2]) == group:
            members.append(int(entry.name))
    return members


def cpu_ticks(pid: int) -> int:
    """User plus system CPU of *pid* in clock ticks; 0 once it is gone."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return int(fields[11]) + int(fields[12]) if fields is not None else 0
