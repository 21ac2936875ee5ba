"""`godwit plan`: initial ETA, steady-state bandwidth and RPO, final-sync time, a suggested throttle
schedule — from what godwit measured; `--review` compares a wave's plan with what happened."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from godwit.cli.common import (
    JsonOpt,
    ProjectOpt,
    guarded,
    human_age,
    human_bytes,
    out,
    print_json,
    project_from,
    styled,
)
from godwit.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def _when(s: str) -> datetime:
    try:
        when = datetime.fromisoformat(s)
    except ValueError:
        raise UsageError(f"--by {s!r} is not a date or time (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    return when if when.tzinfo is not None else when.astimezone()  # local time unless a zone is given


def _secs(s: float | None) -> str:
    return "never (under this schedule)" if s is None else human_age(s)


def _mbps(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} Mbps"


@guarded
def plan(
    wave: Annotated[str | None, typer.Option("--wave", help="Plan this wave's servers (default: every "
                                                           "server not migrated).", show_default=False)] = None,
    server: Annotated[list[str] | None, typer.Option("--server", "-s", help="Plan these servers; repeat.",
                                                     show_default=False)] = None,
    bandwidth_mbps: Annotated[float | None, typer.Option(help="The link speed; default: the best measured "
                                                              "unthrottled cycle throughput.",
                                                         show_default=False)] = None,
    by: Annotated[str | None, typer.Option("--by", help="Suggest a throttle schedule that finishes initial "
                                                        "replication by this date (local time unless it has "
                                                        "an offset).", show_default=False)] = None,
    business_hours: Annotated[str, typer.Option(help="With --by: the hours held at --business-mbps.")
                              ] = "08:00-18:00",
    business_mbps: Annotated[float | None, typer.Option(help="With --by: the business-hours cap (default: "
                                                             "[replication.throttle] max_mbps).",
                                                        show_default=False)] = None,
    cutover_gap: Annotated[float | None, typer.Option(help="Seconds from the last cycle to the cutover's final "
                                                           "sync (default: the replication interval).",
                                                      show_default=False)] = None,
    review: Annotated[bool, typer.Option("--review", help="With --wave: predicted against actual initial "
                                                          "replication.")] = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Plan a migration from measured churn and throughput: initial ETA, RPO, final sync, a schedule."""
    from godwit.ops import planner

    if review:
        if wave is None:
            raise UsageError("--review needs --wave NAME")
        with project_from(project) as p:
            rows = planner.review(p, wave)
        if json_:
            print_json([asdict(r) for r in rows])
            return
        table = Table("server", "predicted initial", "actual initial", "error", title=f"wave {(wave)}")
        for r in rows:
            table.add_row((r.server), "-" if r.predicted_initial_seconds is None
                          else human_age(r.predicted_initial_seconds),
                          "not finished" if r.actual_initial_seconds is None else human_age(r.actual_initial_seconds),
                          "-" if r.initial_error is None else f"{r.initial_error:+.0%}")
        out.print(table)
        return
    if wave is not None and server:
        raise UsageError("give --wave or --server, not both")
    with project_from(project) as p:
        rep = planner.plan(p, servers=server or None, wave=wave, bandwidth_mbps=bandwidth_mbps,
                           cutover_gap=cutover_gap, by=_when(by) if by else None, business=business_hours,
                           business_mbps=business_mbps)
    if json_:
        print_json(asdict(rep))
        return
    out.print(f"link {rep.link_mbps:.1f} Mbps ({rep.link_from}); cycles every {human_age(rep.interval_seconds)}")
    table = Table("server", "to send", "initial ETA", "churn needs", "keeps up", "RPO", "final sync")
    for s in rep.servers:
        table.add_row((s.server), human_bytes(s.initial_bytes),
                      "done" if s.initial_done else _secs(s.initial_seconds), _mbps(s.steady_mbps),
                      {True: styled("yes"), False: styled(("no", "red")), None: styled("-")}[s.keeps_up],
                      "-" if s.rpo_seconds is None else human_age(s.rpo_seconds),
                      "-" if s.final_sync_seconds is None else human_age(s.final_sync_seconds))
    out.print(table)
    label = f"wave {(rep.wave)}" if rep.wave else "all together"
    out.print(styled(f"{label}: initial {_secs(rep.wave_initial_seconds)}, churn needs "
                     f"{_mbps(rep.wave_steady_mbps)}",
                     ("" if rep.wave_keeps_up is not False else " (more than the link gives)", "red"),
                     f", final sync {human_age(rep.wave_final_sync_seconds)}"
                     if rep.wave_final_sync_seconds is not None else ""))
    sg = rep.suggestion
    if sg is not None:
        by_s = datetime.fromtimestamp(sg.deadline).strftime("%Y-%m-%d %H:%M")
        if sg.off_hours_mbps is None:
            out.print(styled((f"cannot finish by {by_s}", "red"), f" with {sg.business} at {sg.business_mbps:g} "
                             "Mbps, even with the full link off hours: raise the business-hours cap or move the date"))
        else:
            line = ", ".join(f'"{k}" = {v:g}' for k, v in sg.schedule.items())
            out.print(f"to finish by {by_s}: " + (f"[replication.throttle] schedule = {{ {line} }}"))
