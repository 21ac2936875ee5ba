"""`godwit sources`: what cycles leave on the source side (fleecing overlays, bitmaps, snapshots)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, out, print_json, project_from

app = typer.Typer(help="Source-side objects godwit makes during cycles.", no_args_is_help=True)


@app.command()
@guarded
def sweep(dry_run: Annotated[bool, typer.Option(help="List what would be removed; change nothing.")] = False,
          project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Remove every fleecing export, job, overlay, stale bitmap and godwit-* qcow2 snapshot that no
    running cycle owns (servers with a running cycle are skipped)."""
    from godwit.engine.sweep import sweep as run_sweep

    with project_from(project) as p:
        found, busy = run_sweep(p, dry_run=dry_run)
    if json_:
        print_json({"leftovers": [asdict(f) for f in found], "skipped": busy})
        return
    if not found:
        out.print("nothing left over")
    else:
        table = Table("server", "disk", "what", "name", "action")
        for f in found:
            table.add_row(escape(f.server), str(f.disk), f.what, escape(f.name), escape(f.action))
        out.print(table)
    for name in busy:
        out.print(f"{escape(name)}: skipped, a cycle is running")
