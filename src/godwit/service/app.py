"""The FastAPI application: routers, error bodies, metrics middleware, the in-process mover."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from godwit import __version__
from godwit.errors import ConflictError, GodwitError, NotFoundError, StoreError, UsageError
from godwit.project.project import Project
from godwit.service.metrics import Metrics
from godwit.service.progress import LiveProgress
from godwit.service.ratelimit import RateLimiter

log = logging.getLogger("godwit.service")


@dataclass(frozen=True)
class ServiceSettings:
    export_dir: Path  # test and planned migrations write under it, nowhere else
    mover_interval: float = 5.0  # seconds between in-process mover rounds; 0: no mover
    registrations_per_minute: int = 10


def status_of(exc: GodwitError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, ConflictError):
        return 409
    return 409  # the request is valid but the system's state refused it (source, replica, migration)


def _mover_loop(project: Project, interval: float, stop: threading.Event, gate: threading.Lock) -> None:
    from godwit.engine.mover import run_mover

    while not stop.wait(interval):
        try:
            with gate:
                run_mover(project)
        except GodwitError as exc:
            log.error("mover: %s", exc.message)
        except Exception:  # the service must outlive one bad round; the next round retries
            log.exception("mover round failed")


def _allowed(app: FastAPI, request: Request) -> set[str]:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return methods


def create_app(project: Project, settings: ServiceSettings) -> FastAPI:
    from godwit.service.operations import Operations
    from godwit.service.routers import appliances, dashboard, events, migrations, replication, servers, system, tokens
    from godwit.service.routers import operations as ops_router

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        halt: Callable[[], None] = stop.set
        interrupted = ops.start()
        if interrupted:
            log.warning("%d operation(s) left running by a service that stopped are marked failed", interrupted)
        thread = None
        if settings.mover_interval > 0 and project.db.backend == "postgresql":
            # On PostgreSQL the service applies only through the job queue, as one more mover
            # worker (godwit.movers): it and `godwit mover worker`s elsewhere never apply one server at once.
            from godwit.movers.queue import MoverSettings
            from godwit.movers.worker import start_in_thread

            sweep = min(59, max(1, math.ceil(settings.mover_interval)))
            worker, thread = start_in_thread(project, MoverSettings(name="serve", sweep_seconds=sweep), gate=gate)
            halt = worker.stop
        elif settings.mover_interval > 0:
            thread = threading.Thread(target=_mover_loop, args=(project, settings.mover_interval, stop, gate),
                                      name="godwit-mover", daemon=True)
            thread.start()
        try:
            yield
        finally:
            halt()
            ops.shutdown(timeout=20)
            if thread is not None:
                thread.join(timeout=60)

    from godwit.service.routers import errors

    app = FastAPI(title="godwit", version=__version__, lifespan=lifespan, responses=errors(400),
                  description="The godwit service: servers, replication, recovery points, migrations, "
                              "events, appliances and API tokens of one project.")
    # The in-process mover and this service's migrations take the apply locks in turn, not in a race
    # (a migration would otherwise find its own service's mover holding the lock: a needless 409).
    gate = threading.Lock()
    app.state.apply_gate = gate
    app.state.project = project
    app.state.settings = settings
    app.state.metrics = Metrics(project)
    app.state.progress = LiveProgress()
    ops = app.state.operations = Operations(project, app.state.progress)
    app.state.registrations = RateLimiter(settings.registrations_per_minute, 60.0)
    project.store  # noqa: B018 - built once here, not lazily by two request threads at once

    @app.exception_handler(GodwitError)
    async def godwit_error(_request: Request, exc: GodwitError) -> JSONResponse:
        return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=status_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(sorted(_allowed(app, request)))
        return JSONResponse({"error": str(exc.detail), "hint": None}, status_code=exc.status_code,
                            headers=headers or None)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        t0 = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        app.state.metrics.observe(request.method, route, response.status_code, time.perf_counter() - t0)
        return response

    for module in (system, servers, replication, migrations, ops_router, events, appliances, tokens, dashboard):
        app.include_router(module.router)
    from godwit.service.routers import appliance_protocol

    appliance_protocol.install(app, project)
    return app
