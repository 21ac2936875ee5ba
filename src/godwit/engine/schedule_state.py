"""What the appliance loop's scheduler needs from the state, and what it tells status.

``candidates`` reads every enabled server, its disk count and its newest commit in one unit of
work (two grouped queries, not two per server: issue 13.4). ``write``/``read`` keep the live
schedule in ``state/schedule.json`` (a small file, replaced atomically, written only when it
changes), so `replicate status` in another process can say what runs, what waits and why; it is
trusted only while the loop that wrote it is alive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from godwit.engine.scheduler import Candidate, Scheduler
from godwit.project.project import Project
from godwit.state import schema as t

SCHEDULE_FILE = "schedule.json"
ENABLED = ("replicating", "paused")


def candidates(project: Project) -> list[Candidate]:
    """Every server whose replication is enabled, with its disk count and newest commit."""
    with project.db.unit() as u:
        c = u.connection
        servers = [(r.id, r.name) for r in c.execute(
            select(t.servers.c.id, t.servers.c.name).where(t.servers.c.state.in_(ENABLED)).order_by(t.servers.c.id))]
        ndisks = {r[0]: int(r[1]) for r in c.execute(
            select(t.disks.c.server_id, func.count()).group_by(t.disks.c.server_id))}
        last = {r[0]: r[1] for r in c.execute(
            select(t.cycles.c.server_id, func.max(t.cycles.c.committed))
            .where(t.cycles.c.state.in_(("committed", "applied"))).group_by(t.cycles.c.server_id))}
    return [Candidate(name, ndisks.get(sid, 0), float(last[sid]) if last.get(sid) is not None else None)
            for sid, name in servers]


class Candidates:
    """``candidates`` read at most once a second; in between, a commit the loop saw is noted in
    memory (a round of 200 servers would otherwise read them 200 times)."""

    def __init__(self, project: Project, max_age: float = 1.0) -> None:
        self.project = project
        self.max_age = max_age
        self._rows: list[Candidate] = []
        self._at = -math.inf

    def get(self) -> list[Candidate]:
        if time.monotonic() - self._at >= self.max_age:
            self._rows = candidates(self.project)
            self._at = time.monotonic()
        return self._rows

    def committed(self, name: str) -> None:
        now = time.time()
        self._rows = [dataclasses.replace(c, last_commit=now) if c.name == name else c for c in self._rows]


def with_committed(project: Project) -> list[str]:
    """Servers with committed cycles the mover has not applied yet."""
    with project.db.unit() as u:
        return [r[0] for r in u.connection.execute(
            select(t.servers.c.name).where(t.servers.c.id.in_(
                select(t.cycles.c.server_id).where(t.cycles.c.state == "committed"))).order_by(t.servers.c.id))]


def _path(project: Project) -> Path:
    return project.state_dir / SCHEDULE_FILE


class ScheduleFile:
    """The loop's side: rewrite the file when the schedule changes, remove it at the end."""

    def __init__(self, project: Project) -> None:
        self.path = _path(project)
        self._last: dict[str, Any] | None = None
        self._written = -math.inf

    def write(self, sched: Scheduler, *, at_most_every: float = 0.0) -> None:
        if time.monotonic() - self._written < at_most_every:
            return
        slots = {s.server: {"state": s.state, "reason": s.reason} for s in sched.slots()}
        doc = {"format": 1, "pid": os.getpid(), "parallel_disks": sched.parallel_disks,
               "in_flight": sched.in_flight, "servers": slots}
        if doc == self._last:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            tmp.write_text(json.dumps({**doc, "updated": time.time()}))
            os.replace(tmp, self.path)
            self._last = doc
            self._written = time.monotonic()
        except OSError:  # status loses a hint; the loop goes on
            with contextlib.suppress(OSError):
                tmp.unlink()

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read(project: Project) -> dict[str, str]:
    """Per server, what the running loop's scheduler says (empty when no loop runs)."""
    try:
        doc = json.loads(_path(project).read_text())
        if doc.get("format") != 1 or not isinstance(doc.get("pid"), int) or not _alive(doc["pid"]):
            return {}
        return {str(name): f"{v['reason']}" for name, v in doc["servers"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no loop, or a file being replaced: no schedule to show
