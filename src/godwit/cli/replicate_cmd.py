"""`godwit replicate`: start, cycle, run, stop, status."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from godwit.cli.common import (
    JsonOpt,
    ProjectOpt,
    bounded,
    err,
    guarded,
    human_age,
    human_bytes,
    out,
    print_json,
    project_from,
    styled,
)
from godwit.cli.progress import disk_progress
from godwit.config.schedule import MBPS_MAX, MBPS_MIN
from godwit.engine import lifecycle as replication
from godwit.engine.cycle import CycleResult
from godwit.errors import GodwitError
from godwit.project.project import Project

app = typer.Typer(help="Replication: initial and delta cycles into the cache store.", no_args_is_help=True)

MaxMbps = Annotated[float | None, typer.Option("--max-mbps", help="Cap the data plane (megabits per second), "
                                                                  "overriding the configured schedule.")]


def _say(res: CycleResult, json_: bool) -> None:
    if json_:
        print_json({**asdict(res), "bottleneck": res.bottleneck})
        return
    for w in res.warnings:
        err.print(styled(("warning: ", "yellow"), w))
    rate = res.bytes_read / res.t_wall / 1e6 if res.t_wall else 0.0
    resumed = f", resumed ({res.packs_reused} pack(s) already stored)" if res.resumed else ""
    out.print(f"{res.server}: cycle {res.number} ({res.kind}) committed{resumed}: read {human_bytes(res.bytes_read)}, "
              f"changed {human_bytes(res.bytes_changed)}, sent {human_bytes(res.bytes_sent)} in "
              f"{res.t_wall:.1f}s ({rate:.0f} MB/s read), consistency {res.consistency}, "
              f"bottleneck: {res.bottleneck}")


def _check_mbps(max_mbps: float | None) -> None:
    """Checked before the project opens, so a bad value fails before any work starts."""
    if max_mbps is not None:
        bounded(max_mbps, "--max-mbps", MBPS_MIN, MBPS_MAX)


def _limit(p: object, max_mbps: float | None) -> None:
    if max_mbps is not None:
        p.max_mbps_override = bounded(max_mbps, "--max-mbps", MBPS_MIN, MBPS_MAX)  # type: ignore[attr-defined]


@app.command()
@guarded
def start(name: str, project: ProjectOpt = None, max_mbps: MaxMbps = None, json_: JsonOpt = False) -> None:
    """Enable replication of NAME and run its initial cycle."""
    from godwit.cli import remote_ops
    from godwit.cli.remote import service_client

    _check_mbps(max_mbps)
    if (remote := service_client()) is not None:
        remote_ops.no_mbps(max_mbps)
        with remote:
            res = remote_ops.enable(remote, name, not json_)
    else:
        with project_from(project) as p, disk_progress(f"{name} initial", not json_) as prog:
            _limit(p, max_mbps)
            res = replication.start(p, name, progress=prog)
    if res is None:
        if json_:
            print_json({"server": name, "enabled": True, "cycle": None})
        else:
            out.print(f"replication of {name} enabled (already has committed cycles)")
    else:
        _say(res, json_)


@app.command()
@guarded
def cycle(name: str, project: ProjectOpt = None, max_mbps: MaxMbps = None, json_: JsonOpt = False) -> None:
    """Run one delta cycle of NAME now (resumes an interrupted cycle first)."""
    from godwit.cli import remote_ops
    from godwit.cli.remote import service_client

    _check_mbps(max_mbps)
    if (remote := service_client()) is not None:
        remote_ops.no_mbps(max_mbps)
        with remote:
            res = remote_ops.cycle(remote, name, not json_)
    else:
        with project_from(project) as p, disk_progress(f"{name} delta", not json_) as prog:
            _limit(p, max_mbps)
            res = replication.cycle(p, name, progress=prog)
    _say(res, json_)


@app.command()
@guarded
def stop(name: str, project: ProjectOpt = None) -> None:
    """Stop replicating NAME (committed cycles and replicas are kept)."""
    from godwit.cli.remote import service_client

    if (remote := service_client()) is not None:
        with remote:
            remote.stop_replication(name)
    else:
        with project_from(project) as p:
            replication.stop(p, name)
    out.print(f"replication of {name} stopped")


@app.command()
@guarded
def run(
    interval: Annotated[float | None, typer.Option(help="Seconds between cycles of a server "
                                                        "(default: replication.interval_seconds).")] = None,
    once: Annotated[bool, typer.Option(help="One round over every enabled server, then exit.")] = False,
    continuous: Annotated[bool, typer.Option(help="Start a server's next cycle as soon as the last one "
                                                  "commits (at most every --min-interval seconds).")] = False,
    min_interval: Annotated[float, typer.Option(help="With --continuous: seconds between cycle starts.")] = 1.0,
    mover: Annotated[bool, typer.Option(help="Apply committed cycles here (local cache or replicas). On "
                                             "PostgreSQL applies always go through the job queue; --no-mover "
                                             "leaves them to `godwit mover worker`s.")] = True,
    project: ProjectOpt = None,
    max_mbps: MaxMbps = None,
    json_: JsonOpt = False,
) -> None:
    """The appliance loop: cycles for every enabled server, and the mover when the project is local."""
    _check_mbps(max_mbps)
    if interval is not None:
        bounded(interval, "--interval", 1, 86400 * 7)
    with project_from(project) as p:
        _limit(p, max_mbps)

        def on_error(server: str, exc: GodwitError) -> None:
            err.print(styled((f"{server}: error: ", "red"), exc.message
                             + (f" (hint: {exc.hint})" if exc.hint else "")))

        # Progress bars only when one cycle runs at a time: parallel cycles would fight over one terminal.
        bars = not json_ and p.config.replication.parallel_disks == 1

        def loop(loop_mover: replication.LoopMover | None, apply: bool) -> replication.LoopReport:
            return replication.run_loop(
                p, interval=interval, once=once, continuous=continuous, min_interval=min_interval,
                progress_for=(lambda s: disk_progress(f"{s}", True)) if bars else None,
                on_cycle=None if json_ else (lambda r: _say(r, False)), on_error=on_error,
                on_round=lambda: _run_cutovers(p), mover=loop_mover, apply=apply)

        try:
            if p.db.backend == "postgresql":  # never beside other machines' workers: through the queue
                from godwit.movers.loop import applied_count, queue_mover

                before = applied_count(p)
                with queue_mover(p, worker=mover, drain=once) as qm:
                    report = loop(qm, True)
                report.applied = applied_count(p) - before
            else:
                report = loop(None, mover)
        except KeyboardInterrupt:
            # The second Ctrl-C: stop now, running cycles included (each resumes from its journal,
            # as after a kill -9); waiting for their threads would be the first Ctrl-C again.
            err.print("stopped; interrupted cycles resume on the next run")
            os._exit(130)
    if json_:
        print_json({"cycles": [asdict(c) for c in report.cycles], "applied": report.applied,
                    "errors": [{"server": s, "error": e.message} for s, e in report.errors]})
    if report.errors:
        raise typer.Exit(max(e.exit_code for _, e in report.errors))


def _run_cutovers(p: Project) -> None:
    from godwit.ops.cutover import run_due

    for c in run_due(p):
        err.print(f"scheduled cutover {c.id} of {c.target_kind} {c.target}: {c.state}")


@app.command()
@guarded
def status(name: Annotated[str | None, typer.Argument()] = None, project: ProjectOpt = None,
           json_: JsonOpt = False) -> None:
    """Per server and disk: state, last cycle, bytes, throughput, RPO and the bottleneck."""
    from godwit.cli.remote import service_client

    if (remote := service_client()) is not None:
        rows = remote.status(name)
    else:
        with project_from(project) as p:
            rows = replication.status(p, name)
    if json_:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    if not rows:
        out.print("no servers yet")
        return
    table = Table("server", "disk", "state", "last cycle", "RPO", "read", "sent", "stored", "MB/s",
                  "bottleneck", "recovery point")
    for s in rows:
        last = s.cycles[-1] if s.cycles else None
        for d in s.disks:
            first = d.index == 0
            tp = d.throughput_bps
            table.add_row(
                s.server if first else "", str(d.index), d.state,
                str(s.last_cycle or "-") + (f" (open: {s.open_cycle})" if s.open_cycle else ""),
                human_age(d.rpo_seconds) + (f" (max {human_age(d.rpo_max_seconds)})" if d.rpo_max_seconds else ""),
                human_bytes(d.bytes_read), human_bytes(d.bytes_sent),
                human_bytes(d.bytes_stored), f"{tp / 1e6:.0f}" if tp else "",
                (last.bottleneck if last else "-") if first else "",
                str(s.latest_recovery_point or "-") if first else "")
    out.print(table)
    for s in rows:
        net = s.network
        if net.path or net.last_check:
            verdict = "passed" if net.last_check_ok else "FAILED"
            checked = f"{human_age(time.time() - net.last_check)} ago ({verdict})" if net.last_check else "never"
            out.print(f"{s.server} network: {net.path or '-'}, {human_bytes(net.bytes_sent or 0)} sent in cycle "
                      f"{net.cycle or '-'}; last network check: {checked}", markup=False)
        if s.schedule:
            out.print(f"{s.server} schedule: {s.schedule}", markup=False)
        if s.error:
            err.print(styled((f"{s.server}: ", "red"), str(s.error)))
        if s.cycles:
            c = s.cycles[-1]
            out.print(f"{s.server} cycle {c.number}: read {c.t_read:.2f}s, hash+compress "
                      f"{c.t_cpu:.2f}s, upload {c.t_upload:.2f}s, throttled {c.t_throttle:.2f}s, "
                      f"wall {c.t_wall:.2f}s, committed {human_age(time.time() - c.committed)} ago"
                      if c.committed else f"{s.server} cycle {c.number}: {c.state}")


@app.command()
@guarded
def check(name: str, project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Re-read NAME's committed cycles from the cache store and check every manifest and pack."""
    from godwit.errors import CorruptObjectError

    with project_from(project) as p:
        rows = replication.check_cache(p, name)
    if json_:
        print_json(rows)
    else:
        for r in rows:
            verdict: list[str | tuple[str, str]] = ["ok"] if r["ok"] else [("DAMAGED", "red"), f": {r['error']}"]
            out.print(styled(f"cycle {r['cycle']}: ", *verdict))
        if not rows:
            out.print(f"{name}: no committed cycles waiting in the cache")
    if any(not r["ok"] for r in rows):
        raise typer.Exit(CorruptObjectError.exit_code)


@app.command()
@guarded
def resync(name: str, project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Discard NAME's cycles that are not applied yet; the next cycle resends their changes.

    For a cycle with a damaged pack, or an interrupted cycle you do not want to resume: the next
    cycle is computed against the latest recovery point and so resends every change since then.
    """
    with project_from(project) as p:
        discarded = replication.resync(p, name)
    if json_:
        print_json({"discarded": discarded})
    else:
        out.print(f"{name}: discarded cycle(s) {', '.join(map(str, discarded)) or 'none'}; "
                  f"run `godwit replicate cycle {name}` to resend the changes")
