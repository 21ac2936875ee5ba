"""Long operations of the service run in the background: enable (the initial cycle), a cycle now,
test migration, cleanup and planned migration.

A request records the operation (``queued``) and answers ``202 Accepted`` at once; a small pool of
worker threads of this process runs it (``running``, then ``succeeded`` with its typed result or
``failed`` with its error). One operation at a time per server: a second request for a busy server
is refused with a 409 naming the operation that holds it. A row left ``queued`` or ``running`` by a
service that died is marked ``failed`` (type ``Interrupted``) when the next one starts; the engine's
own journal makes the next cycle resume the interrupted one.

The rows live in their own table (revision 0014), not in ``events``: an operation changes state
and carries a result, an event is an immutable line of history.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, delete, insert, select, update

from godwit.engine import lifecycle
from godwit.engine.cycle import ProgressFn
from godwit.errors import ConflictError, GodwitError, NotFoundError, StoreError
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.service import final_cycle
from godwit.service.models import (
    CleanupResult,
    CycleResultView,
    MigrationResultView,
    OperationError,
    OperationView,
    PlannedMigrationRequest,
    TestMigrationRequest,
)
from godwit.service.progress import LiveProgress
from godwit.state import schema as t

log = logging.getLogger("godwit.service.operations")

#: Worker threads: operations of different servers that run at once.
WORKERS = 4
#: Operations waiting for a worker at most; beyond, a request is refused (503) rather than queued forever.
MAX_QUEUED = 256
#: Ended operations older than this are forgotten when the service starts (their effects are in the
#: state's cycles, migrations and events; the row was only how to follow them).
KEEP_SECONDS = 30 * 86400
INTERRUPTED = "interrupted: the service stopped while this operation ran"

Work = Callable[[ProgressFn], BaseModel | None]


def _load(r: Any, live: float | None) -> OperationView:
    return OperationView(
        id=r.id, kind=r.kind, server=r.server, state=r.state,
        progress=live if r.state == "running" and live is not None else r.progress,
        result=json.loads(r.result) if r.result else None, error=json.loads(r.error) if r.error else None,
        created=r.created, started=r.started, finished=r.finished)


def error_of(exc: BaseException) -> OperationError:
    if isinstance(exc, GodwitError):
        return OperationError(error=exc.message, hint=exc.hint, type=type(exc).__name__, exit_code=exc.exit_code)
    return OperationError(error=f"internal error ({type(exc).__name__}); the service's log has the details",
                          hint=None, type="InternalError", exit_code=1)


@dataclass(frozen=True)
class _Job:
    id: int
    server: str
    work: Work


class Operations:
    """The operations table of one project and the bounded pool that runs them."""

    def __init__(self, project: Project, progress: LiveProgress, workers: int = WORKERS) -> None:
        self.project = project
        self.progress = progress
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}  # server -> the operation that holds it (queued or running)
        self._queue: queue.Queue[_Job | None] = queue.Queue(MAX_QUEUED)
        self._closing = threading.Event()
        self._threads = [threading.Thread(target=self._worker, name=f"godwit-op-{i}", daemon=True)
                         for i in range(workers)]

    # -- lifecycle of the pool -------------------------------------------------------------------

    def start(self) -> int:
        """Mark what a dead service left queued or running as failed, forget operations that ended
        more than KEEP_SECONDS ago, then start the workers. Answers how many were marked."""
        error = OperationError(error=INTERRUPTED, hint="run the operation again: a cycle resumes where it stopped",
                               type="Interrupted", exit_code=GodwitError.exit_code)
        with self.project.db.unit() as u:
            left = u.connection.execute(select(t.operations.c.id, t.operations.c.kind, t.operations.c.server)
                                        .where(t.operations.c.state.in_(("queued", "running")))).all()
            u.connection.execute(update(t.operations).where(t.operations.c.id.in_([r.id for r in left]))
                                 .values(state="failed", error=error.model_dump_json(), finished=time.time()))
            u.connection.execute(delete(t.operations).where(t.operations.c.finished < time.time() - KEEP_SECONDS))
            for r in left:
                u.events.add("warning", f"operation {r.id} ({r.kind}) was interrupted: the service stopped "
                                        "while it ran", server=r.server)
        for th in self._threads:
            th.start()
        return len(left)

    def shutdown(self, timeout: float) -> None:
        """Let running operations finish for up to ``timeout`` seconds; what is still running then
        stays ``running`` in the state and the next start marks it interrupted; what is still
        queued is not started."""
        self._closing.set()
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for th in self._threads:
            if th.is_alive():
                th.join(max(0.0, deadline - time.monotonic()))

    # -- requests --------------------------------------------------------------------------------

    def submit(self, kind: str, server: str, params: dict[str, Any], work: Work) -> OperationView:
        """Record a queued operation and hand it to the pool; ConflictError if ``server`` is busy."""
        with self._lock:
            holder = self._busy.get(server)
            if holder is not None:
                held = self.get(holder)
                raise ConflictError(f"server {server} is busy with operation {held.id} ({held.kind}, {held.state})",
                                    hint=f"follow it at /api/v1/operations/{held.id}, then ask again")
            if self._queue.full():
                raise StoreError("the service has too many operations waiting", hint="ask again in a while")
            with self.project.db.unit() as u:
                key = u.connection.execute(insert(t.operations).values(
                    kind=kind, server=server, state="queued", params=json.dumps(params),
                    created=time.time())).inserted_primary_key
                assert key is not None
                op_id = int(key[0])
            self._busy[server] = op_id
            self._queue.put_nowait(_Job(op_id, server, work))
        return self.get(op_id)

    def get(self, op_id: int) -> OperationView:
        with self.project.db.unit() as u:
            r = u.connection.execute(select(t.operations).where(t.operations.c.id == op_id)).first()
        if r is None:
            raise NotFoundError(f"no operation {op_id}", hint="GET /api/v1/operations lists them")
        return _load(r, self.progress.fraction(r.server))

    def list(self, server: str | None = None, limit: int = 50) -> list[OperationView]:
        q = select(t.operations).order_by(t.operations.c.id.desc()).limit(limit)
        if server is not None:
            q = q.where(t.operations.c.server == server)
        with self.project.db.unit() as u:
            rows = u.connection.execute(q).all()
        return [_load(r, self.progress.fraction(r.server)) for r in rows]

    # -- the workers -----------------------------------------------------------------------------

    def _set(self, c: Connection, op_id: int, **values: Any) -> None:
        c.execute(update(t.operations).where(t.operations.c.id == op_id).values(**values))

    def _worker(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._closing.is_set():  # left queued: the next start marks it interrupted
                continue
            try:
                self._run(job)
            except Exception:  # the state was unreachable when it started: keep the worker alive
                log.exception("operation %s could not start", job.id)
            finally:
                with self._lock:
                    self._busy.pop(job.server, None)

    def _run(self, job: _Job) -> None:
        with self.project.db.unit() as u:
            self._set(u.connection, job.id, state="running", started=time.time())
        try:
            with self.progress.tracking(job.server) as report:
                result = job.work(report)
        except Exception as exc:  # every failure is the operation's answer; the service goes on
            if not isinstance(exc, GodwitError):
                log.exception("operation %s failed", job.id)
            values: dict[str, Any] = {"state": "failed", "error": error_of(exc).model_dump_json()}
        else:
            values = {"state": "succeeded", "progress": 1.0,
                      "result": result.model_dump_json() if result is not None else None}
        try:
            with self.project.db.unit() as u:
                self._set(u.connection, job.id, finished=time.time(), **values)
        except GodwitError as exc:  # the state is unreachable: the row stays running, marked at next start
            log.error("operation %s: cannot record its end: %s", job.id, exc.message)


# -- what each kind does ---------------------------------------------------------------------------

def out_dir(export_dir: Path, server: str, kind: str, folder: str | None) -> Path:
    return export_dir / (folder or f"{server}-{kind}-{int(time.time())}")


def work_for(project: Project, gate: threading.Lock, kind: str, server: str, params: dict[str, Any]) -> Work:
    """The callable an operation runs. Migrations take the apply gate, so this service's mover and
    its migrations take the apply locks in turn; a cycle does not need it."""
    def enable(report: ProgressFn) -> BaseModel | None:
        res = lifecycle.start(project, server, progress=report)
        return CycleResultView(**asdict(res)) if res is not None else None

    def cycle(report: ProgressFn) -> BaseModel:
        return CycleResultView(**asdict(lifecycle.cycle(project, server, progress=report)))

    def test(_report: ProgressFn) -> BaseModel:
        with gate:
            return MigrationResultView(**asdict(migration.test_migration(
                project, server, recovery_point=params["recovery_point"], fmt=params["format"],
                out_dir=Path(params["out_dir"]))))

    def cleanup(_report: ProgressFn) -> BaseModel:
        with gate:
            return CleanupResult(removed=migration.cleanup(project, server))

    def planned(_report: ProgressFn) -> BaseModel:
        # An appliance's server: its final cycle runs there; waited for outside the apply gate, so
        # the service's mover goes on meanwhile.
        owner = final_cycle.owner_of(project, server)
        number = None if owner is None else final_cycle.ask_final_cycle(
            project, owner, server, timeout=float(params.get("final_cycle_timeout", 3600)))
        with gate:
            return MigrationResultView(**asdict(migration.planned_migration(
                project, server, fmt=params["format"], out_dir=Path(params["out_dir"]), final_cycle=number)))

    kinds: dict[str, Work] = {"enable": enable, "cycle": cycle, "test": test, "cleanup": cleanup, "planned": planned}
    return kinds[kind]


def submit(request_state: Any, kind: str, server: str, params: dict[str, Any] | None = None) -> OperationView:
    """Submit ``kind`` for ``server`` through the app's state (the API and the dashboard share it)."""
    ops: Operations = request_state.operations
    defaults = {"test": TestMigrationRequest, "planned": PlannedMigrationRequest}.get(kind)
    params = {**(defaults().model_dump() if defaults else {}), **(params or {})}
    ops.project.db.server(server)  # an unknown server is a 404 now, not a failed operation
    if kind in ("enable", "cycle"):
        _refuse_if_an_appliance_replicates(ops.project, server)
    if kind in ("test", "planned"):
        params["out_dir"] = str(out_dir(request_state.settings.export_dir, server, kind, params.pop("folder", None)))
    return ops.submit(kind, server, params, work_for(ops.project, request_state.apply_gate, kind, server, params))


def _refuse_if_an_appliance_replicates(project: Project, server: str) -> None:
    """An appliance's server cycles on the appliance: a cycle here would take a number its chain
    needs (and the service holds the server's cycle lock, so it would only fail after the lock's
    wait). Say so at once, with the way that works."""
    owner = final_cycle.owner_of(project, server)
    if owner is not None:
        raise ConflictError(f"server {server} is replicated by appliance {owner}; the service does not run its cycles",
                            hint=f"queue a command for the appliance: POST /api/v1/appliances/{owner}/commands "
                                 '{"server": "' + server + '", "kind": "cycle"}')
