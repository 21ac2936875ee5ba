"""`godwit wave`: create, list, show and remove waves (servers that cut over together)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from godwit.cli.common import JsonOpt, ProjectOpt, error_json, fail, guarded, out, print_json, project_from, styled

app = typer.Typer(help="Waves: groups of servers that are migrated together.", no_args_is_help=True)


@app.command("create")
@guarded
def create(
    name: Annotated[str, typer.Argument(help="Wave name (letters, digits, '.', '_', '-').")],
    server: Annotated[list[str], typer.Option("--server", "-s", help="A server of the wave; repeat. A server "
                                                                      "is in at most one wave.")],
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a wave of servers."""
    from godwit.ops import waves

    with project_from(project) as p:
        wave = waves.create(p, name, server)
    if json_:
        print_json(wave.model_dump())
        return
    out.print(f"created wave {(wave.name)} with {len(wave.servers)} server(s): "
              f"{(', '.join(wave.servers))}")


@app.command("list")
@guarded
def list_(project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """List the waves and their servers."""
    from godwit.ops import waves

    with project_from(project) as p:
        rows = waves.list_waves(p)
    if json_:
        print_json([w.model_dump() for w in rows])
        return
    if not rows:
        out.print("no waves yet: `godwit wave create NAME --server A --server B`")
        return
    table = Table("wave", "servers", "created")
    for w in rows:
        table.add_row((w.name), (", ".join(w.servers)),
                      datetime.fromtimestamp(w.created).strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@app.command("show")
@guarded
def show(name: str, project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """A wave's servers with their replication state."""
    from godwit.ops import waves

    with project_from(project) as p:
        wave = waves.show(p, name)
        states = {s: p.db.server(s).state for s in wave.servers}
        with p.db.unit() as u:
            pending = u.cutovers.pending_for(name, "wave")
    if json_:
        print_json({**wave.model_dump(), "states": states, "cutovers": [c.model_dump() for c in pending]})
        return
    table = Table("server", "state", title=f"wave {(wave.name)}")
    for s in wave.servers:
        table.add_row((s), states[s])
    out.print(table)
    for c in pending:
        at_s = datetime.fromtimestamp(c.at).strftime("%Y-%m-%d %H:%M")
        out.print(f"cutover {c.id} at {at_s}: {c.state} (`godwit migrate cancel {c.id}` cancels it)")


@app.command("remove")
@guarded
def remove(name: str, project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Remove a wave (its servers stay as they are)."""
    from godwit.ops import waves

    with project_from(project) as p:
        waves.remove(p, name)
    if json_:
        print_json({"removed": name})
    else:
        out.print(f"removed wave {(name)}")


def migrate_wave(project: Path | None, wave: str, *, test: bool, out_dir: Path, fmt: str, recovery_point: str,
                  shutdown_command: str | None, parallel: int, json_: bool) -> None:
    """`godwit migrate --wave`: every server's outcome, then an error if any failed."""
    from godwit.errors import MigrationError, UsageError
    from godwit.ops import waves

    if not test and recovery_point != "latest":
        raise UsageError("--recovery-point applies to --test only; a planned migration uses a final cycle")
    with project_from(project) as p:
        report = waves.migrate_wave(p, wave, test=test, out_dir=out_dir, fmt=fmt, recovery_point=recovery_point,
                                    shutdown_command=shutdown_command, parallel=parallel)
    bad = report.failed
    failure = None
    if bad:
        left = ", ".join(f"{o.server} ({o.state})" for o in bad)
        failure = MigrationError(f"wave {wave}: {len(bad)} of {len(report.servers)} server(s) failed: {left}",
                                 hint="the others are done; fix the failed ones and migrate them by name"
                                      + ("" if test else " (they keep replicating)"))
    if json_:  # one document: the report, and the error when a server failed
        print_json({**asdict(report), "failed": [o.server for o in bad],
                    **(error_json(failure) if failure else {})})
    else:
        kind = "test migration" if test else "planned migration"
        out.print(f"wave {(wave)}: {kind}, {parallel} at a time, {report.seconds:.1f}s")
        for o in report.servers:
            if o.ok:
                out.print(styled(f"  {o.server}: ", ("ok", "green"), f" at recovery point {o.recovery_point} "
                                 f"({len(o.files)} file(s), {o.seconds:.1f}s), now {o.state}"))
            else:
                out.print(styled(f"  {o.server}: ", ("FAILED", "red"), f": {o.error or ''}; now {o.state}"))
    if failure is not None:
        raise fail(failure)  # the message and hint on stderr; the JSON is printed above


def scheduled_cutovers(project: Path | None, name: str | None, target: str | None, *, wave: str | None,
                       at: str | None, test: bool, out_dir: Path | None, fmt: str, shutdown_command: str | None,
                       parallel: int, json_: bool) -> None:
    """`godwit migrate NAME|--wave NAME --at TIME`, `migrate scheduled`, `migrate cancel ID`."""
    from godwit.errors import UsageError
    from godwit.ops import cutover

    with project_from(project) as p:
        if at is None and name == "scheduled":
            rows = cutover.scheduled(p)
            if json_:
                print_json([c.model_dump() for c in rows])
                return
            if not rows:
                out.print("no scheduled cutover")
            for c in rows:
                at_s = datetime.fromtimestamp(c.at).strftime("%Y-%m-%d %H:%M")
                out.print(f"{c.id}: {c.target_kind} {c.target} at {at_s}: {c.state}")
            return
        if at is None and name == "cancel":
            if target is None or not target.isdigit():
                raise UsageError("godwit migrate cancel ID", hint="`godwit migrate scheduled` lists the ids")
            c = cutover.cancel(p, int(target))
            if json_:
                print_json(c.model_dump())
            else:
                out.print(f"cancelled cutover {c.id} of {c.target_kind} {c.target}")
            return
        if test:
            raise UsageError("--at schedules a planned migration; a test migration runs now")
        if out_dir is None:
            raise UsageError("--out DIR is required")
        if (name is None) == (wave is None) or target is not None:
            raise UsageError("give a server NAME or --wave NAME with --at")
        try:
            when = datetime.fromisoformat(at or "")
        except ValueError:
            raise UsageError(f"--at {at!r} is not a time (YYYY-MM-DDTHH:MM)") from None
        when = when if when.tzinfo is not None else when.astimezone()
        c = cutover.schedule(p, wave or name or "", wave=wave is not None, at=when.timestamp(), out_dir=out_dir,
                             fmt=fmt, shutdown_command=shutdown_command, parallel=parallel)
    if json_:
        print_json(c.model_dump())
    else:
        out.print(f"cutover {c.id}: planned migration of {c.target_kind} {c.target} at "
                         f"{when:%Y-%m-%d %H:%M %Z}; `godwit replicate run` runs it, "
                         f"`godwit migrate cancel {c.id}` cancels it")
