"""`godwit doctor`: check the host (and the project, inside one) before a long migration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, out, print_json
from godwit.errors import ProjectError

STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}
LABEL = {"pass": "ok", "warn": "WARN", "fail": "FAIL"}
FixOpt = Annotated[bool, typer.Option("--fix", help="Make Debian's libnbd binding importable from this "
                                      "environment (links python3-libnbd into its site-packages), then check.")]


def _project_root(project: Path | None) -> Path | None:
    """An explicit --project / GODWIT_PROJECT must be a project; the current folder may not be one."""
    from godwit.project.project import CONFIG_NAME

    explicit = project if project is not None else (Path(os.environ["GODWIT_PROJECT"])
                                                      if os.environ.get("GODWIT_PROJECT") else None)
    if explicit is None:
        return Path(".") if (Path(".") / CONFIG_NAME).is_file() else None
    if not (explicit / CONFIG_NAME).is_file():
        raise ProjectError(f"no godwit project at {explicit.resolve()} ({CONFIG_NAME} not found)",
                           hint="leave out --project (and GODWIT_PROJECT) to check only the host")
    return explicit


@guarded
def doctor(project: ProjectOpt = None, json_: JsonOpt = False, fix: FixOpt = False) -> None:
    """Check the host for a long migration: QEMU tools, libnbd, clock; in a project its cache and state.

    Exits 1 if any check fails (warnings alone exit 0); each failure names its fix.
    """
    from godwit.checks.doctor import EXIT_FAILED, run_doctor

    report = run_doctor(_project_root(project), fix=fix)
    if json_:
        print_json(report.as_dict())
    else:
        for line in report.fixed:
            out.print(Text(f"fixed: {line}"))
        width = max((len(f.name) for f in report.findings), default=0)
        for f in report.findings:  # one line per check, then its fix: readable at any terminal width
            row = Text(f"{LABEL[f.status]:<5} ", style=STYLE[f.status])
            row.append(f"{f.name:<{width}}  {f.detail}")
            out.print(row)
            if f.status != "pass" and f.fix:
                out.print(Text(f"      {'':<{width}}  fix: {f.fix}", style=STYLE[f.status]))
        n = report.counts()
        where = f"project {report.project}" if report.project else "host only (not in a project)"
        summary = f"{n['pass']} passed, {n['warn']} warned, {n['fail']} failed — {where}"
        out.print(Text(summary, style="bold red" if n["fail"] else ("yellow" if n["warn"] else "green")))
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
