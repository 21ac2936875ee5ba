"""`godwit mover`: apply committed cycles to the replica disks."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from godwit.cli.common import JsonOpt, ProjectOpt, bounded, err, guarded, out, print_json, project_from, styled
from godwit.cli.progress import disk_progress
from godwit.errors import GodwitError

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
