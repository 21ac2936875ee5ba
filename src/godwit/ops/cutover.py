"""Scheduled cutovers: `godwit migrate NAME|--wave NAME --at TIME` records a planned migration;
the appliance loop (`replicate run`) runs it when it is due; it can be cancelled until it starts."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from godwit.errors import GodwitError, UsageError
from godwit.migrate import migration
from godwit.ops import waves
from godwit.project.project import Project
from godwit.state.views import CutoverView


def schedule(project: Project, target: str, *, wave: bool, at: float, out_dir: Path, fmt: str = "raw",
             shutdown_command: str | None = None, parallel: int = waves.DEFAULT_PARALLEL) -> CutoverView:
    if at <= time.time():
        raise UsageError("--at is in the past", hint="give a later time, or migrate now without --at")
    kind = "wave" if wave else "server"
    options: dict[str, Any] = {"out": str(out_dir.resolve()), "format": fmt, "shutdown_command": shutdown_command,
                               "parallel": parallel}
    with project.db.unit() as u:
        if wave:
            u.waves.get(target)
        else:
            u.servers.get(target)
        if u.cutovers.pending_for(target, kind):
            raise UsageError(f"{kind} {target} already has a scheduled cutover",
                             hint="`godwit migrate cancel ID` it first (`godwit migrate scheduled` lists them)")
        c = u.cutovers.add(target, kind, at, options)
        u.events.add("info", f"cutover {c.id} of {kind} {target} scheduled for {time.ctime(at)}",
                     server=None if wave else target)
    return c


def cancel(project: Project, cutover_id: int) -> CutoverView:
    with project.db.unit() as u:
        c = u.cutovers.cancel(cutover_id)
        u.events.add("info", f"cutover {c.id} of {c.target_kind} {c.target} cancelled")
    return c


def scheduled(project: Project) -> list[CutoverView]:
    with project.db.unit() as u:
        return u.cutovers.all()


def run_due(project: Project, now: float | None = None) -> list[CutoverView]:
    """Run every cutover whose time has come (each claimed first, so only one process runs it)."""
    now = time.time() if now is None else now
    with project.db.unit() as u:
        due = u.cutovers.due(now)
    done: list[CutoverView] = []
    for c in due:
        with project.db.unit() as u:
            if not u.cutovers.claim(c.id):
                continue
        o = c.options
        out_dir, fmt = Path(str(o["out"])), str(o["format"])
        shutdown = o.get("shutdown_command")
        shutdown_s = str(shutdown) if shutdown else None
        try:
            if c.target_kind == "wave":
                rep = waves.migrate_wave(project, c.target, test=False, out_dir=out_dir, fmt=fmt,
                                         shutdown_command=shutdown_s, parallel=int(str(o.get("parallel", 4))))
                result: dict[str, Any] = {**asdict(rep), "failed": [s.server for s in rep.failed]}
                state = "failed" if rep.failed else "done"
            else:
                res = migration.planned_migration(project, c.target, fmt=fmt, out_dir=out_dir,
                                                  shutdown_command=shutdown_s)
                result, state = asdict(res), "done"
        except GodwitError as exc:
            result, state = {"error": exc.message, "hint": exc.hint}, "failed"
        with project.db.unit() as u:
            u.cutovers.finish(c.id, state, result)
            u.events.add("info" if state == "done" else "error",
                         f"scheduled cutover {c.id} of {c.target_kind} {c.target}: {state}",
                         server=c.target if c.target_kind == "server" else None)
            done.append(u.cutovers.get(c.id))
    return done
