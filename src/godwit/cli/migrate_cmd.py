"""`godwit migrate`, `godwit recovery-points`, `godwit verify`."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from godwit.cli.common import JsonOpt, ProjectOpt, fail, guarded, human_bytes, out, print_json, project_from, styled
from godwit.errors import GodwitError, UsageError

if TYPE_CHECKING:
    from godwit.assess.preparation import Preparation
    from godwit.cli.remote import ServiceClient
    from godwit.migrate.migration import MigrationResult


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate)
    app.command("recovery-points")(recovery_points)
    app.command("verify")(verify)


def point_option(value: str) -> str:
    """``latest`` or a recovery point number that fits the state database (at most 18 digits)."""
    if value == "latest" or (value.isascii() and value.isdigit() and 0 < len(value) <= 18 and int(value) > 0):
        return value
    raise UsageError(f"--recovery-point must be a recovery point number or `latest`, got {value[:40]!r}",
                     hint="list them with `godwit recovery-points NAME`")


@guarded
def migrate(
    name: Annotated[str | None, typer.Argument(help="The server, or `cleanup` followed by the server.",
                                               show_default=False)] = None,
    target: Annotated[str | None, typer.Argument(help="With `cleanup`: the server.", show_default=False)] = None,
    test: Annotated[bool, typer.Option("--test", help="Test migration: replication keeps running.")] = False,
    recovery_point: Annotated[str, typer.Option("--recovery-point", "-r",
                                                help="A recovery point number or `latest` (test only).")] = "latest",
    fmt: Annotated[str, typer.Option("--format", "-f", help="raw, vhd (fixed, for Azure), qcow2, or pageblob "
                                                            "(server-side copy; --out is a container).")] = "raw",
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for NAME-diskN.EXT files "
                                                                     "(a container name with pageblob).")] = None,
    shutdown_command: Annotated[str | None, typer.Option(help="Planned only: a shell command that shuts the "
                                                              "source down before the final cycle.")] = None,
    wave: Annotated[str | None, typer.Option("--wave", help="Migrate every server of this wave instead of NAME "
                                                           "({server} in --shutdown-command is each server's "
                                                           "name).", show_default=False)] = None,
    parallel: Annotated[int, typer.Option(help="With --wave: servers migrated at once.")] = 4,
    at: Annotated[str | None, typer.Option("--at", help="Planned only: run it at this time (YYYY-MM-DDTHH:MM, "
                                                       "local unless it has an offset) from `replicate run`.",
                                           show_default=False)] = None,
    prepare_for: Annotated[str | None, typer.Option("--prepare-for", help="Test only: then prepare the "
                                                    "written disks to boot there (azure; `godwit prepare`).")] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Migrate NAME: a test migration (--test) or a planned one.

    `--test` writes the disks at a recovery point and leaves replication running. Without it: the
    optional shutdown command, a final cycle, apply, write the disks, stop replication.
    `godwit migrate cleanup NAME` removes a test migration's files. With `--at` the planned
    migration is scheduled; `godwit migrate scheduled` lists, `godwit migrate cancel ID` cancels.
    """
    from godwit.cli.remote import service_client
    from godwit.migrate import migration

    recovery_point = point_option(recovery_point)
    if (remote := service_client()) is not None:
        with remote:
            _remote(remote, name, target, test=test, recovery_point=recovery_point, fmt=fmt, out_dir=out_dir,
                    json_=json_, refused={"--shutdown-command": shutdown_command, "--wave": wave, "--at": at,
                                          "--prepare-for": prepare_for})
        return
    if at is not None or (name in ("scheduled", "cancel") and wave is None):
        from godwit.cli.wave_cmd import scheduled_cutovers

        scheduled_cutovers(project, name, target, wave=wave, at=at, test=test, out_dir=out_dir, fmt=fmt,
                           shutdown_command=shutdown_command, parallel=parallel, json_=json_)
        return
    if wave is not None:
        if prepare_for is not None:
            raise UsageError("--prepare-for takes one server", hint="prepare each server's test migration by name")
        if name is not None:
            raise UsageError("give a server NAME or --wave, not both")
        if out_dir is None:
            raise UsageError("--out DIR is required")
        from godwit.cli.wave_cmd import migrate_wave

        migrate_wave(project, wave, test=test, out_dir=out_dir, fmt=fmt, recovery_point=recovery_point,
                      shutdown_command=shutdown_command, parallel=parallel, json_=json_)
        return
    if name is None:
        raise UsageError("give a server NAME or --wave NAME", hint="godwit migrate NAME [--test] --out DIR")
    prepared: Preparation | None = None
    with project_from(project) as p:
        if name == "cleanup" and target is not None:
            _say_removed(target, migration.cleanup(p, target), json_)
            return
        if target is not None:
            raise UsageError(f"unexpected argument {target!r}", hint="godwit migrate NAME [--test] --out DIR")
        if out_dir is None:
            raise UsageError("--out DIR is required")
        if test:
            res = migration.test_migration(p, name, recovery_point=recovery_point, fmt=fmt, out_dir=out_dir)
            if prepare_for is not None:
                from godwit.assess.preparation import prepare

                prepared = prepare(p, name, target=prepare_for)
        else:
            if prepare_for is not None:
                raise UsageError("--prepare-for applies to --test only", hint="prepare a test migration first")
            if recovery_point != "latest":
                raise UsageError("--recovery-point applies to --test only; a planned migration uses a final cycle")
            res = migration.planned_migration(p, name, fmt=fmt, out_dir=out_dir, shutdown_command=shutdown_command)
    _say(res, prepared, prepare_for, json_)


def _say_removed(target: str, removed: list[str], json_: bool) -> None:
    if json_:
        print_json({"removed": removed})
    else:
        out.print(f"removed {len(removed)} file(s) of {target}'s test migration")


def _remote(remote: ServiceClient, name: str | None, target: str | None, *, test: bool, recovery_point: str,
            fmt: str, out_dir: Path | None, json_: bool, refused: dict[str, str | None]) -> None:
    """`godwit --service URL migrate …`: the same command, run as an operation of the service."""
    from godwit.cli import remote_ops

    for option, given in refused.items():
        remote_ops.refuse(option, given)
    if name in ("scheduled", "cancel"):
        raise UsageError(f"`migrate {name}` is not offered through --service", hint="run it where the project is")
    if name is None:
        raise UsageError("give a server NAME", hint="godwit --service URL migrate NAME [--test] [--out FOLDER]")
    if name == "cleanup" and target is not None:
        _say_removed(target, remote_ops.cleanup(remote, target), json_)
        return
    if target is not None:
        raise UsageError(f"unexpected argument {target!r}", hint="godwit migrate NAME [--test] --out DIR")
    if not test and recovery_point != "latest":
        raise UsageError("--recovery-point applies to --test only; a planned migration uses a final cycle")
    res = remote_ops.migrate(remote, name, test=test, recovery_point=recovery_point, fmt=fmt, out_dir=out_dir,
                             json_=json_)
    _say(res, None, None, json_)


def _say(res: MigrationResult, prepared: Preparation | None, prepare_for: str | None, json_: bool) -> None:
    if json_:
        print_json({**asdict(res), **({"prepared": prepared.model_dump(mode="json")} if prepared else {})})
        return
    kind = "test migration" if res.kind == "test" else "planned migration"
    out.print(f"{res.server}: {kind} at recovery point {res.recovery_point} ({res.format}) in {res.seconds:.1f}s:")
    for f in res.files:
        out.print(f"  {f}")
    if prepared is not None:
        out.print(f"prepared for {prepare_for}: {len(prepared.changes)} change(s), {len(prepared.refused)} "
                  f"refused (report {prepared.report})")


@guarded
def recovery_points(name: str, project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """List NAME's recovery points: number, time, consistency, disk sizes."""
    from godwit.migrate import migration

    with project_from(project) as p:
        rows = migration.recovery_points(p, name)
    if json_:
        print_json(rows)
        return
    if not rows:
        out.print(f"{name} has no recovery point yet")
        return
    table = Table("recovery point", "sealed", "consistency", "disk sizes")
    for r in rows:
        table.add_row(str(r["number"]), datetime.fromtimestamp(r["sealed"]).strftime("%Y-%m-%d %H:%M:%S"),
                      r["consistency"], ", ".join(human_bytes(s) for s in r["disk_sizes"]))
    out.print(table)


@guarded
def verify(
    name: str,
    recovery_point: Annotated[str, typer.Option("--recovery-point", "-r")] = "latest",
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Re-hash NAME's replica at a recovery point and compare with the recorded block hashes."""
    from godwit.migrate import migration

    recovery_point = point_option(recovery_point)
    with project_from(project) as p:
        report = migration.verify(p, name, recovery_point)
    if json_:
        print_json({"server": report.server, "recovery_point": report.recovery_point, "ok": report.ok,
                    "disks": report.disks})
    else:
        for d in report.disks:
            if d["mismatches"]:
                ranges = ", ".join(f"{o}+{n}" for o, n in d["mismatches"][:10])
                more = f" and {len(d['mismatches']) - 10} more" if len(d["mismatches"]) > 10 else ""
                out.print(styled(f"disk{d['index']}: ", ("MISMATCH", "red"), f" at {ranges}{more}"))
            else:
                out.print(f"disk{d['index']}: ok ({human_bytes(d['size'])})")
    try:
        migration.raise_on_mismatch(report)
    except GodwitError as exc:
        if json_:  # the report is the JSON answer: stdout holds one document
            raise fail(exc) from None
        raise
