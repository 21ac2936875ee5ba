"""Running a mover worker: in its own process (`godwit mover worker`) or in a thread of the
service (`godwit serve` on PostgreSQL, so that it too applies only through jobs)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from procrastinate.exceptions import ConnectorException
from procrastinate.worker import Worker

from godwit.errors import ProjectError
from godwit.movers.queue import QUEUE, MoverSettings, build_app, ensure_schema
from godwit.project.project import Project


class MoverWorker:
    """One procrastinate worker on the mover's queue; ``stop`` may be called from any thread and
    lets the running applies finish (sync tasks are never cut short)."""

    def __init__(self, project: Project, settings: MoverSettings, *, install_signal_handlers: bool,
                 gate: threading.Lock | None = None, wait: bool = True) -> None:
        settings.check()
        project.store  # noqa: B018 - built once here, not lazily by two job threads at once
        ensure_schema(project)
        self.settings = settings
        self.app = build_app(project, settings, gate=gate)
        self._install = install_signal_handlers
        self._wait = wait  # False: stop once no job is left (tests, one-shot runs)
        self._worker: Worker | None = None
        self._stopping = threading.Event()
        self._url = project.db.url  # without its password

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Process jobs until stopped (SIGTERM/SIGINT when signal handlers are installed)."""
        try:
            asyncio.run(self._main(on_ready))
        except ConnectorException as exc:
            raise ProjectError(f"the mover's job queue in {self._url} failed: {exc.__cause__ or exc}",
                               hint="check that PostgreSQL is reachable, then start the worker again (its "
                                    "running job is handed to another worker)") from None

    async def _main(self, on_ready: Callable[[], None] | None) -> None:
        s = self.settings
        async with self.app.open_async():
            self._worker = Worker(app=self.app, queues=[QUEUE], name=s.name, concurrency=s.concurrency,
                                  install_signal_handlers=self._install, update_heartbeat_interval=s.heartbeat_seconds,
                                  stalled_worker_timeout=s.stalled_seconds, delete_jobs="successful", wait=self._wait,
                                  fetch_job_polling_interval=min(5.0, s.sweep_seconds))
            if on_ready is not None:
                on_ready()
            watch = asyncio.create_task(self._watch_stop(self._worker))
            try:
                await self._worker.run()  # type: ignore[no-untyped-call]
            finally:
                watch.cancel()

    async def _watch_stop(self, worker: Worker) -> None:
        # Worker.run() forgets a stop() that came before it started: relay ours once it runs.
        while not self._stopping.is_set():
            await asyncio.sleep(0.2)
        worker.stop()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        self._stopping.set()


def start_in_thread(project: Project, settings: MoverSettings, *, gate: threading.Lock | None = None
                    ) -> tuple[MoverWorker, threading.Thread]:
    """A worker in a daemon thread (the service's in-process mover on PostgreSQL)."""
    worker = MoverWorker(project, settings, install_signal_handlers=False, gate=gate)
    thread = threading.Thread(target=worker.run, name="godwit-mover-worker", daemon=True)
    thread.start()
    return worker, thread
