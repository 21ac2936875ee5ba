"""`godwit mover`: apply committed cycles to the replica disks."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from godwit.cli.common import JsonOpt, ProjectOpt, bounded, err, guarded, out, print_json, project_from, styled
from godwit.cli.progress import disk_progress
from godwit.errors import ConfigError, GodwitError

if TYPE_CHECKING:
    from godwit.project.project import Project

app = typer.Typer(help="The mover: committed cycles into replica disks, recovery points.", no_args_is_help=True)


@app.command()
@guarded
def run(
    once: Annotated[bool, typer.Option(help="Apply what is committed now, then exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between passes when not --once.")] = 10.0,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Apply every server's committed cycles in order, seal recovery points, release the cache."""
    from godwit.engine.mover import apply_server

    bounded(interval, "--interval", 0.1, 86400)
    failures: list[GodwitError] = []
    with project_from(project) as p:
        while True:
            summary: dict[str, object] = {}
            for s in p.db.servers():
                if not p.db.cycles(s.id, ("committed",)):
                    continue
                try:
                    with disk_progress(f"{s.name} apply", not json_) as prog:
                        results = apply_server(p, s.name, progress=prog)
                    summary[s.name] = [r.cycle for r in results]
                    if not json_:
                        for r in results:
                            rate = r.bytes_written / r.seconds / 1e6 if r.seconds else 0
                            out.print(f"{s.name}: recovery point {r.cycle} sealed ({r.bytes_written >> 20} MiB "
                                      f"in {r.seconds:.1f}s, {rate:.0f} MB/s)")
                except GodwitError as exc:
                    failures.append(exc)
                    summary[s.name] = {"error": exc.message}
                    err.print(styled((f"{s.name}: error: ", "red"), exc.message
                                     + (f" (hint: {exc.hint})" if exc.hint else "")))
            if json_:
                print_json(summary)
            elif not summary and once:
                out.print("nothing to apply")
            if once:
                break
            time.sleep(interval)
    if failures:
        raise typer.Exit(max(f.exit_code for f in failures))


def _postgresql_only(p: Project, command: str) -> None:
    if p.db.backend != "postgresql":
        raise ConfigError(f"`godwit mover {command}` needs the project's state on PostgreSQL (it is on "
                          f"{p.db.backend}: {p.db.url})",
                          hint="pass --database-url postgresql+psycopg://USER@HOST/DB (or set [state] url); on "
                               "SQLite the mover runs in-process: `godwit mover run` or `godwit replicate run`")


@app.command()
@guarded
def worker(
    database_url: Annotated[str | None, typer.Option(
        "--database-url", envvar="GODWIT_DATABASE_URL", show_default=False,
        help="The project's PostgreSQL state (postgresql+psycopg://USER@HOST/DB).")] = None,
    concurrency: Annotated[int, typer.Option(help="Servers applied at once by this worker.")] = 1,
    name: Annotated[str | None, typer.Option(help="This worker's name in events and logs "
                                                  "(default: mover-HOST-PID).")] = None,
    heartbeat: Annotated[float, typer.Option(help="Seconds between this worker's heartbeats.")] = 10.0,
    stalled_after: Annotated[float, typer.Option(
        help="Seconds without a heartbeat after which a worker is taken for dead and its job handed on.")] = 30.0,
    sweep_interval: Annotated[int, typer.Option(
        help="Seconds between sweeps that defer jobs for committed cycles and hand on stalled jobs (1-59).")] = 5,
    project: ProjectOpt = None,
) -> None:
    """Apply committed cycles as jobs from the project's PostgreSQL until SIGTERM (graceful: the
    running applies finish). Start any number of workers, on any machine with the project folder;
    cycles of a server stay in order and never run on two workers at once."""
    import os
    import socket

    from godwit.movers.queue import MoverSettings
    from godwit.movers.worker import MoverWorker

    bounded(concurrency, "--concurrency", 1, 64)
    bounded(heartbeat, "--heartbeat", 0.1, 3600)
    bounded(stalled_after, "--stalled-after", 0.2, 86400)
    bounded(sweep_interval, "--sweep-interval", 1, 59)
    if database_url:
        os.environ["GODWIT_DATABASE_URL"] = database_url
    settings = MoverSettings(name=name or f"mover-{socket.gethostname()}-{os.getpid()}", concurrency=concurrency,
                             heartbeat_seconds=heartbeat, stalled_seconds=stalled_after, sweep_seconds=sweep_interval)
    with project_from(project) as p:
        _postgresql_only(p, "worker")
        w = MoverWorker(p, settings, install_signal_handlers=True)

        def ready() -> None:
            sys.stdout.write(f"godwit mover worker {settings.name}: ready on {p.db.url} "
                             f"(concurrency {concurrency})\n")
            sys.stdout.flush()

        w.run(on_ready=ready)
    sys.stdout.write(f"godwit mover worker {settings.name}: stopped\n")


@app.command()
@guarded
def schedule(
    servers: Annotated[list[str] | None, typer.Argument(help="Servers to queue (default: every server with "
                                                             "committed cycles).", show_default=False)] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Queue an apply job for every server with committed cycles (PostgreSQL): what a commit does;
    the workers' own sweep does it too, so this only shortens the wait."""
    from godwit.movers.queue import schedule as defer

    with project_from(project) as p:
        _postgresql_only(p, "schedule")
        queued = defer(p, servers or None)
    if json_:
        print_json(queued)
        return
    if not queued:
        out.print("nothing to apply")
    for s, new in queued.items():
        out.print(f"{s}: {'queued' if new else 'already queued'}")
