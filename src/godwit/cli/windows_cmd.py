"""`godwit replicate windows`: the enforcement log of throttle and blackout windows."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import typer

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, human_bytes, out, print_json, project_from, styled
from godwit.errors import UsageError


def register(_app: typer.Typer) -> None:
    import godwit.cli.replicate_cmd as replicate_cmd

    replicate_cmd.app.command("windows")(windows)


def _since(s: str) -> float:
    units = {"m": 60, "h": 3600, "d": 86400}
    if s[-1:] in units and s[:-1].isdigit():
        return time.time() - int(s[:-1]) * units[s[-1]]
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(f"--since {s!r} is neither a duration (30m, 12h, 7d) nor a date") from None
    return (when if when.tzinfo else when.astimezone()).timestamp()


@guarded
def windows(
    since: Annotated[str | None, typer.Option(help="Only windows that ended after this: 12h, 7d or a date.",
                                              show_default=False)] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show each throttle and blackout window: the rate measured inside it, and whether it was kept."""
    with project_from(project) as p, p.db.unit() as u:
        rows = u.windows.since(_since(since) if since else None)
    if json_:
        print_json([r.model_dump() for r in rows])
        return
    if not rows:
        out.print("no window logged yet (windows are logged while godwit replicates)")
        return
    for r in rows:
        t0 = datetime.fromtimestamp(r.started).strftime("%Y-%m-%d %H:%M")
        head = f"{t0} {r.window} " + ("" if r.scope == "all" else f"({r.scope}) ")
        if r.kind == "blackout":
            body = f"blackout: {r.bytes} bytes sent"
        else:
            body = (f"cap {r.cap_mbps:g} Mbps: measured {r.avg_mbps:.1f} Mbps average, {r.max_mbps:.1f} max "
                    f"over 10 s ({human_bytes(r.bytes)})")
        out.print(styled(head + body, ("" if r.kept else " NOT KEPT", "red")))
