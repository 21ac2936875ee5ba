"""The mover's jobs on procrastinate: the app on the project's PostgreSQL, its two tasks, deferring.

- ``godwit.mover.apply(server_uid)``: ``engine.mover.apply_server`` for one server, which applies
  every committed cycle in order and is idempotent after a crash. Deferred with ``lock=<uid>``
  (procrastinate runs jobs of one lock one at a time, in order of deferral, and a unique index
  forbids two running at once) and ``queueing_lock=apply:<uid>`` (at most one job per server
  waits: a second deferral is coalesced into it). A job that finds the server busy (a migration
  holds its apply lock) ends without applying; the next sweep defers it again.
- ``godwit.mover.sweep``: periodic (every ``sweep_seconds``; procrastinate defers one job per tick
  however many workers run). It retries the jobs of workers whose heartbeat stopped (or, when a
  newer job of that server already waits, ends the old one so the newer one can run), then defers
  a job for every server with committed cycles, so no missed deferral loses work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc
from procrastinate.job_context import JobContext
from procrastinate.jobs import Status
from procrastinate.schema import SchemaManager

from godwit.errors import ConflictError, GodwitError, UsageError
from godwit.project.project import Project
from godwit.state import pgjobs
from godwit.state.db import Server, StateDB
from godwit.state.reports import Reports

log = logging.getLogger("godwit.movers")

QUEUE = "godwit-mover"
APPLY = "godwit.mover.apply"
SWEEP = "godwit.mover.sweep"
#: Test-only hook, named as such: "SECONDS:DIR" makes a worker's first write of its first apply
#: touch DIR/<server>.<pid> and sleep, so a test can kill it mid-apply deterministically.
TEST_PAUSE_ENV = "GODWIT_TEST_APPLY_PAUSE"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


@dataclass(frozen=True)
class MoverSettings:
    """How a worker runs. Heartbeats every ``heartbeat_seconds``; a worker silent for
    ``stalled_seconds`` is taken for dead and its job is handed to another one."""

    name: str = "mover"
    concurrency: int = 1
    heartbeat_seconds: float = 10.0
    stalled_seconds: float = 30.0
    sweep_seconds: int = 5
    apply_lock_wait: float = 30.0

    def check(self) -> None:
        if not _NAME.match(self.name):
            raise UsageError(f"worker name {self.name[:80]!r} is not valid",
                             hint="1 to 63 letters, digits, '.', '_' or '-'")
        if not 1 <= self.concurrency <= 64:
            raise UsageError(f"concurrency {self.concurrency} is out of range", hint="1 to 64 jobs at once")
        if not 1 <= self.sweep_seconds <= 59:
            raise UsageError(f"sweep interval {self.sweep_seconds}s is out of range", hint="1 to 59 seconds")
        if not 0.1 <= self.heartbeat_seconds <= 3600:
            raise UsageError(f"heartbeat interval {self.heartbeat_seconds}s is out of range",
                             hint="0.1 to 3600 seconds")
        if self.stalled_seconds < 2 * self.heartbeat_seconds:
            raise UsageError(f"a stalled timeout of {self.stalled_seconds}s is too short for heartbeats every "
                             f"{self.heartbeat_seconds}s", hint="make it at least twice the heartbeat interval")


def identity(settings: MoverSettings) -> str:
    return f"{settings.name} (pid {os.getpid()} on {socket.gethostname()})"


def conninfo(db: StateDB) -> str:
    """libpq's form of the state URL (password included: never print it)."""
    return db.sa_url.set(drivername="postgresql").render_as_string(hide_password=False)


def build_app(project: Project, settings: MoverSettings | None = None, *,
              gate: threading.Lock | None = None) -> procrastinate.App:
    """The job app of ``project`` (PostgreSQL only), with the apply and sweep tasks bound to it."""
    settings = settings or MoverSettings()
    if project.db.backend != "postgresql":
        raise UsageError(f"movers on a job engine need PostgreSQL; this project's state is {project.db.backend}",
                         hint="pass --database-url postgresql+psycopg://USER@HOST/DB, or run `godwit mover run` "
                              "(the in-process mover of SQLite projects)")
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(project.db), min_size=1, max_size=settings.concurrency + 3,
        kwargs={"application_name": f"godwit mover {settings.name}"[:63]})
    app = procrastinate.App(connector=connector)
    who = identity(settings)
    pause = _test_pause()

    @app.task(name=APPLY, queue=QUEUE, pass_context=True)
    def apply(context: JobContext, server_uid: str) -> str:
        return _apply(project, server_uid, settings, who, gate, pause)

    @app.periodic(cron=f"* * * * * */{settings.sweep_seconds}", periodic_id="sweep",
                  queueing_lock="godwit-mover-sweep", priority=10)
    @app.task(name=SWEEP, queue=QUEUE, pass_context=True)
    async def sweep(context: JobContext, timestamp: int) -> str:
        import asyncio

        taken = await _take_over_stalled(context.app, project, settings)
        deferred = await asyncio.to_thread(lambda: due_servers(project))
        n = 0
        for s in deferred:
            if await _defer_async(context.app, s):
                n += 1
        return f"{taken} stalled job(s) handed on, {n} job(s) deferred"

    del apply, sweep  # registered on the app
    return app


def ensure_schema(project: Project) -> bool:
    """procrastinate's tables beside godwit's, created once (under an advisory lock)."""
    return pgjobs.ensure_job_schema(project.db, SchemaManager.get_schema(), version("procrastinate"))


def due_servers(project: Project) -> list[Server]:
    """Servers with committed cycles not yet applied, whose disks are not flagged by a failed
    apply (the error is reported; `replicate resync` or the next commit clears the flag)."""
    with project.db.unit() as u:
        waiting = Reports(u.connection).oldest_unapplied()
        servers = [s for s in u.servers.all() if s.name in waiting]
        return [s for s in servers if all(d.state != "error" for d in u.servers.disks(s.id))]


def _job(app: procrastinate.App, server: Server) -> Any:
    return app.configure_task(APPLY, lock=server.uid, queueing_lock=f"apply:{server.uid}", queue=QUEUE)


def defer(app: procrastinate.App, server: Server) -> bool:
    """Defer an apply job for ``server`` (app opened synchronously); False when one already waits."""
    try:
        _job(app, server).defer(server_uid=server.uid)
        return True
    except pexc.AlreadyEnqueued:
        return False


async def _defer_async(app: procrastinate.App, server: Server) -> bool:
    try:
        await _job(app, server).defer_async(server_uid=server.uid)
        return True
    except pexc.AlreadyEnqueued:
        return False


def schedule(project: Project, names: list[str] | None = None) -> dict[str, bool]:
    """Defer a job for every due server (or the named ones): what a commit or a missed deferral
    needs. Returns, per server, whether a new job was queued (False: one already waited)."""
    ensure_schema(project)
    servers = [project.db.server(n) for n in names] if names else due_servers(project)
    app = build_app(project)
    with app.open():
        return {s.name: defer(app, s) for s in servers}


def _by_uid(project: Project, uid: str) -> Server | None:
    return next((s for s in project.db.servers() if s.uid == uid), None)


def _apply(project: Project, uid: str, settings: MoverSettings, who: str, gate: threading.Lock | None,
           pause: Callable[[str], None] | None) -> str:
    from godwit.engine.mover import apply_server

    server = _by_uid(project, uid)
    if server is None:
        return "server removed"
    if not project.db.cycles(server.id, ("committed",)):
        return "nothing committed"
    progress = None if pause is None else (lambda _d, _done, _total: pause(server.name))
    try:
        with pgjobs.server_apply_lock(project.db, uid, wait=settings.apply_lock_wait), \
                (gate if gate is not None else contextlib.nullcontext()):
            t0 = time.monotonic()
            results = apply_server(project, server.name, progress=progress)
    except ConflictError as exc:  # a migration holds the server: the next sweep defers it again
        log.info("%s: busy (%s); the next sweep retries", server.name, exc.message)
        return "busy"
    except GodwitError as exc:
        log.error("%s: %s", server.name, exc.message)
        raise
    if results:
        numbers = [r.cycle for r in results]
        what = f"cycle {numbers[0]}" if len(numbers) == 1 else f"cycles {numbers[0]}-{numbers[-1]}"
        project.db.event("info", f"mover {who} applied {what} in {time.monotonic() - t0:.1f}s",
                         server=server.name, cycle=numbers[-1])
    return f"applied {[r.cycle for r in results]}"


async def _take_over_stalled(app: procrastinate.App, project: Project, settings: MoverSettings) -> int:
    """Hand the jobs of workers that stopped heartbeating to the queue again."""
    import asyncio

    jm = app.job_manager
    n = 0
    for job in await jm.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=settings.stalled_seconds):
        if job.id is None:
            continue
        if job.task_name != APPLY:  # a dead worker's sweep: the next tick runs another; only end it
            with contextlib.suppress(pexc.ConnectorException):
                await jm.finish_job_by_id_async(job.id, Status.FAILED, delete_job=True)
            continue
        uid = str(job.task_kwargs.get("server_uid", ""))
        try:
            await jm.retry_job(job)
            how = "queued again"
        except pexc.ConnectorException:
            # A newer job of this server already waits (its queueing lock): end the old one, so the
            # newer one, which applies everything committed, can run.
            try:
                await jm.finish_job_by_id_async(job.id, Status.FAILED, delete_job=False)
                how = "superseded by the job already queued"
            except pexc.ConnectorException:
                continue  # another sweep dealt with it meanwhile
        n += 1
        server = await asyncio.to_thread(_by_uid, project, uid)
        msg = f"mover job {job.id} was taken over: its worker stopped heartbeating ({how})"
        log.warning("%s", msg)
        await asyncio.to_thread(project.db.event, "warning", msg, server=server.name if server else None)
    return n


def _test_pause() -> Callable[[str], None] | None:
    raw = os.environ.get(TEST_PAUSE_ENV)
    if not raw:
        return None
    seconds, _, folder = raw.partition(":")
    done = threading.Event()
    lock = threading.Lock()

    def pause(server: str) -> None:
        with lock:
            if done.is_set():
                return
            done.set()
        (Path(folder) / f"{server}.{os.getpid()}").touch()
        time.sleep(float(seconds))

    return pause
