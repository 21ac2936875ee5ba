"""Waves: create, list, show, remove, and migrate a whole wave (test or planned).

A wave's servers migrate in parallel up to a limit, each with its own shutdown command and final
sync. One server's failure never touches the others: its planned migration already leaves it
replicating (``migrate.migration.planned_migration``), and the report names every outcome.
"""

from __future__ import annotations

import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from godwit.errors import GodwitError, UsageError
from godwit.migrate import migration
from godwit.project.project import NAME_RE, Project
from godwit.state.views import WaveView

#: Servers of one wave migrated at once, unless told otherwise.
DEFAULT_PARALLEL = 4


def create(project: Project, name: str, servers: list[str]) -> WaveView:
    if not NAME_RE.match(name):
        raise UsageError(f"wave name {name!r} is not valid",
                         hint="use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if not servers:
        raise UsageError(f"wave {name} needs at least one --server")
    if len(set(servers)) != len(servers):
        raise UsageError(f"wave {name} names a server twice")
    with project.db.unit() as u:
        ids = {s: u.servers.get(s).id for s in servers}
        wave = u.waves.create(name, ids)
        u.events.add("info", f"wave {name} created with {len(servers)} server(s): {', '.join(servers)}")
    return wave


def list_waves(project: Project) -> list[WaveView]:
    with project.db.unit() as u:
        return u.waves.all()


def show(project: Project, name: str) -> WaveView:
    with project.db.unit() as u:
        return u.waves.get(name)


def remove(project: Project, name: str) -> None:
    """The wave goes; its servers stay, as they are."""
    with project.db.unit() as u:
        u.waves.remove(name)
        u.events.add("info", f"wave {name} removed")


@dataclass
class ServerOutcome:
    server: str
    ok: bool
    state: str  # the server's state afterwards: migrated, replicating, …
    recovery_point: int | None = None
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None


@dataclass
class WaveReport:
    wave: str
    kind: str  # test | planned
    parallel: int
    seconds: float
    servers: list[ServerOutcome]

    @property
    def failed(self) -> list[ServerOutcome]:
        return [s for s in self.servers if not s.ok]


def shutdown_for(template: str | None, server: str) -> str | None:
    """The wave's shutdown command for one server: ``{server}`` becomes its (quoted) name."""
    if template is None:
        return None
    return template.replace("{server}", shlex.quote(server))


def migrate_wave(project: Project, name: str, *, test: bool, out_dir: Path, fmt: str = "raw",
                 recovery_point: str = "latest", shutdown_command: str | None = None,
                 parallel: int = DEFAULT_PARALLEL) -> WaveReport:
    """Migrate every server of the wave, ``parallel`` at a time; returns every server's outcome.

    A failing server is reported (and, for a planned migration, left replicating); the others go on.
    """
    if parallel < 1:
        raise UsageError("--parallel must be at least 1")
    wave = show(project, name)
    kind = "test" if test else "planned"
    _ = project.store  # build the shared store (and its throttle) once, before the threads use it
    t0 = time.perf_counter()
    project.db.event("info", f"wave {name}: {kind} migration of {len(wave.servers)} server(s), "
                             f"{parallel} at a time")

    def one(server: str) -> ServerOutcome:
        start = time.perf_counter()
        try:
            if test:
                res = migration.test_migration(project, server, recovery_point=recovery_point, fmt=fmt,
                                               out_dir=out_dir)
            else:
                res = migration.planned_migration(project, server, fmt=fmt, out_dir=out_dir,
                                                  shutdown_command=shutdown_for(shutdown_command, server))
        except GodwitError as exc:
            return ServerOutcome(server, False, _state(project, server), seconds=time.perf_counter() - start,
                                 error=exc.message, hint=exc.hint)
        return ServerOutcome(server, True, _state(project, server), res.recovery_point, res.files, res.seconds)

    with ThreadPoolExecutor(max_workers=min(parallel, len(wave.servers)), thread_name_prefix="wave") as pool:
        outcomes = list(pool.map(one, wave.servers))
    report = WaveReport(name, kind, parallel, time.perf_counter() - t0, outcomes)
    bad = report.failed
    level = "error" if bad else "info"
    summary = (f"wave {name}: {kind} migration of {len(outcomes) - len(bad)} of {len(outcomes)} server(s) "
               "succeeded" + (f"; failed: {', '.join(f'{o.server} ({o.state})' for o in bad)}" if bad else ""))
    project.db.event(level, summary)
    return report


def _state(project: Project, server: str) -> str:
    try:
        return project.db.server(server).state
    except GodwitError:
        return "unknown"
