"""Who holds a lock: the holder record godwit writes into its lock files, and, for files that
other programs lock (the SQLite database), the processes that have the file open (/proc)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    since: float | None  # epoch seconds; None when unknown
    since_label: str = "since"  # "since" it took the lock or opened its transaction; "started" for a process

    def describe(self) -> str:
        when = f" {self.since_label} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}" \
            if self.since else ""
        return f"pid {self.pid} ({self.command}){when}"


def me() -> Holder:
    prog = "godwit" if sys.argv[0].endswith("__main__.py") else Path(sys.argv[0]).name  # python -m godwit
    return Holder(os.getpid(), _short(" ".join([prog, *sys.argv[1:]])), time.time())


def encode(h: Holder) -> bytes:
    return json.dumps({"pid": h.pid, "command": h.command, "since": h.since}).encode()


def decode(raw: bytes) -> Holder | None:
    try:
        doc = json.loads(raw)
        return Holder(int(doc["pid"]), str(doc["command"]), float(doc["since"]))
    except (ValueError, KeyError, TypeError):
        return None


def _short(command: str, limit: int = 120) -> str:
    command = " ".join(command.split())  # no newlines in a one-line error
    return command if len(command) <= limit else command[:limit - 1] + "…"


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return _short(" ".join(p.decode(errors="replace") for p in raw.split(b"\0") if p)) or "?"


def _started(pid: int) -> float | None:
    """The process's start time: field 22 of /proc/PID/stat, in clock ticks after boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def processes_with_open(path: Path) -> list[Holder]:
    """Other processes that have ``path`` open (those /proc lets us see), oldest first."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    found: list[Holder] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                st = fd.stat()
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                pid = int(entry.name)
                found.append(Holder(pid, _cmdline(pid), _started(pid), "started"))
                break
    return sorted(found, key=lambda h: h.since or 0.0)
