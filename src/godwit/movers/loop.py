"""The appliance loop's mover on PostgreSQL: applies go through the job queue.

`godwit replicate run` on a SQLite project applies each committed cycle in its own process. On
PostgreSQL that would apply beside the `godwit mover worker`s of other machines, kept apart only by
a `flock` that does not cross machines. So there the loop defers the server's apply job after each
commit (coalesced with one already waiting, ``queue.defer``) and, unless told not to, runs one
worker in a thread of its own; the job lock and the advisory lock keep it and every other worker
from applying one server at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import procrastinate

from godwit.errors import GodwitError
from godwit.movers import queue
from godwit.movers.worker import MoverWorker, start_in_thread
from godwit.project.project import Project
from godwit.state.db import Server


class QueueMover:
    """``engine.lifecycle.LoopMover`` through the job queue (one app, opened for the loop's life)."""

    def __init__(self, project: Project, app: procrastinate.App) -> None:
        self.project = project
        self.app = app
        self._lock = threading.Lock()  # cycle threads defer through one sync connection pool

    def after_commit(self, name: str) -> int:
        server = self.project.db.server(name)
        with self._lock:
            self._defer(server)  # False: a job already waits, and it applies this cycle too
        return 0  # applied by a worker, later

    def sweep(self) -> dict[str, int | GodwitError]:
        out: dict[str, int | GodwitError] = {}
        servers = queue.due_servers(self.project)
        with self._lock:
            for s in servers:
                try:
                    self._defer(s)
                except GodwitError as exc:
                    out[s.name] = exc
        return out

    def _defer(self, server: Server) -> bool:
        try:
            return queue.defer(self.app, server)
        except procrastinate.exceptions.ProcrastinateException as exc:
            cause = exc.__cause__ or exc
            raise GodwitError(f"{server.name}: its cycle is committed, but the apply job could not be queued "
                              f"({type(cause).__name__}: {cause})",
                              hint="check the PostgreSQL that holds the state and the mover's job tables "
                                   "(`godwit mover schedule` queues the jobs again); the loop's next sweep "
                                   "retries") from exc


def applied_count(project: Project) -> int:
    """Cycles applied so far, over all servers (the loop's report counts what the queue applied)."""
    return sum(len(project.db.cycles(s.id, ("applied",))) for s in project.db.servers())


@contextmanager
def queue_mover(project: Project, *, worker: bool, drain: bool) -> Iterator[QueueMover]:
    """The loop's mover for the loop's life. ``worker``: one worker in a thread meanwhile;
    ``drain``: at the end, apply every job left (``replicate run --once``) before returning."""
    queue.ensure_schema(project)
    app = queue.build_app(project)
    settings = queue.MoverSettings(name="replicate-run")
    running = start_in_thread(project, settings) if worker and not drain else None
    try:
        with app.open():
            yield QueueMover(project, app)
    finally:
        if running is not None:
            w, thread = running
            w.stop()  # the running apply finishes first
            thread.join(timeout=600)
    if worker and drain:  # one burst worker: it stops once no job is left
        MoverWorker(project, settings, install_signal_handlers=False, wait=False).run()
