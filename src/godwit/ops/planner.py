"""`godwit plan`: per server and per wave, from what godwit measured —

- the initial replication's ETA under the throttle schedule, minute by minute (``ops.rates``);
- the bandwidth the churn needs in steady state, whether the link keeps up, and the RPO that results;
- the final sync at cutover: the churn since the last cycle, sent at the link's speed, plus the
  time a delta cycle takes beyond sending (scan and hash, measured);
- with a deadline, a suggested schedule: business hours at their cap, the least cap outside them.

Every plan is recorded, so that ``review`` can compare it with the initial cycle that followed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from godwit.errors import UsageError
from godwit.ops import rates
from godwit.ops.measure import ServerInputs, link_mbps, server_inputs
from godwit.ops.rates import RateAt
from godwit.project.project import Project


@dataclass
class ServerPlan:
    server: str
    state: str
    inputs: ServerInputs
    initial_bytes: int  # to send: used × compress ratio
    initial_seconds: float | None  # None: not under this schedule within a year
    initial_done: bool
    steady_mbps: float | None  # what the churn needs
    keeps_up: bool | None
    rpo_seconds: float | None
    final_sync_seconds: float | None
    final_sync_bytes: int | None


@dataclass
class Suggestion:
    deadline: float
    business: str  # "08:00-18:00"
    business_mbps: float
    off_hours_mbps: float | None  # None: cannot make the deadline even with the full link off hours
    schedule: dict[str, float] = field(default_factory=dict)  # as [replication.throttle.schedule]


@dataclass
class PlanReport:
    made: float
    link_mbps: float
    link_from: str
    interval_seconds: int
    servers: list[ServerPlan]
    wave: str | None = None
    wave_initial_seconds: float | None = None  # all servers' initial replications sharing the link
    wave_steady_mbps: float | None = None
    wave_keeps_up: bool | None = None
    wave_final_sync_seconds: float | None = None  # every server's final sync at once, sharing the link
    suggestion: Suggestion | None = None


def schedule_rate(project: Project, wave: str | None = None) -> tuple[RateAt, tzinfo | None]:
    """The cap of the windows calendar (caps and blackouts, for all and for the wave) and its zone."""
    from godwit.config.windows import ALL, calendar

    t = project.config.replication.throttle
    cal = calendar(t.zone, t.max_mbps, t.schedule, list(t.blackout), t.scoped)
    return cal.rate_at((ALL, f"wave:{wave}") if wave else (ALL,)), cal.zone


def _server_plan(inp: ServerInputs, *, now: float, rate_at: RateAt, link: float, tz: tzinfo | None,
                 interval: float, gap: float) -> ServerPlan:
    initial_done = inp.used_from == "initial cycle"
    to_send = int(inp.used_bytes * inp.compress_ratio)
    eta = None if initial_done else rates.transfer_seconds(to_send, now, rate_at, link, tz)
    steady = keeps = rpo = final_s = None
    final_b: int | None = None
    if inp.churn_bps is not None:
        steady = inp.churn_bps * inp.compress_ratio * 8 / 1e6
        day_avg = rates.bytes_within(86400, now, rate_at, link, tz) * 8 / 86400 / 1e6
        keeps = steady < day_avg
        overhead = inp.overhead_seconds or 0.0
        per_cycle = rates.transfer_seconds(inp.churn_bps * interval * inp.compress_ratio, now, rate_at, link, tz)
        # Kept up: a change waits at most one interval, then one cycle to be sent.
        rpo = interval + overhead + per_cycle if keeps and per_cycle is not None else None
        final_b = int(inp.churn_bps * gap * inp.compress_ratio)
        sent = rates.transfer_seconds(final_b, now, rate_at, link, tz)
        final_s = overhead + sent if sent is not None else None
    return ServerPlan(inp.server, inp.state, inp, to_send, eta, initial_done, steady, keeps, rpo, final_s, final_b)


def parse_window(spec: str) -> tuple[int, int]:
    try:
        a, b = spec.split("-")
        (h1, m1), (h2, m2) = (map(int, a.split(":")), map(int, b.split(":")))
    except ValueError:
        raise UsageError(f"business hours {spec!r} are not HH:MM-HH:MM") from None
    if not (0 <= h1 <= 24 and 0 <= h2 <= 24 and 0 <= m1 < 60 and 0 <= m2 < 60):
        raise UsageError(f"business hours {spec!r} have an impossible time")
    return h1 * 60 + m1, h2 * 60 + m2


def suggest(nbytes: float, *, now: float, deadline: float, business: str, business_mbps: float, link: float,
            tz: tzinfo | None) -> Suggestion:
    if deadline <= now:
        raise UsageError("--by is in the past")
    window = parse_window(business)
    off = rates.least_off_hours_cap(nbytes, now, deadline, window, business_mbps, link, tz)
    sched = {business: business_mbps}
    if off is not None and off < link:
        s, e = window
        sched[f"{e // 60:02d}:{e % 60:02d}-{s // 60:02d}:{s % 60:02d}"] = off
    return Suggestion(deadline, business, business_mbps, off, sched if off is not None else {})


def plan(project: Project, *, servers: list[str] | None = None, wave: str | None = None,
         bandwidth_mbps: float | None = None, cutover_gap: float | None = None, by: datetime | None = None,
         business: str = "08:00-18:00", business_mbps: float | None = None, now: float | None = None,
         tz: tzinfo | None = None, record: bool = True) -> PlanReport:
    """Plan the given servers (default: the wave's, else every server not migrated)."""
    now = time.time() if now is None else now
    link, link_from = link_mbps(project, bandwidth_mbps)
    interval = project.config.replication.interval_seconds
    gap = float(interval if cutover_gap is None else cutover_gap)
    if wave is not None:
        with project.db.unit() as u:
            servers = u.waves.get(wave).servers
    elif servers is None:
        servers = [s.name for s in project.db.servers() if s.state != "migrated"]
    rate_at, zone = schedule_rate(project, wave)
    tz = tz if tz is not None else zone
    plans = [_server_plan(server_inputs(project, s, link=link, now=now, tz=tz), now=now, rate_at=rate_at, link=link,
                          tz=tz, interval=interval, gap=gap) for s in servers]
    report = PlanReport(now, link, link_from, interval, plans, wave=wave)
    pending = sum(p.initial_bytes for p in plans if not p.initial_done)
    report.wave_initial_seconds = rates.transfer_seconds(pending, now, rate_at, link, tz)
    steady = [p.steady_mbps for p in plans if p.steady_mbps is not None]
    if steady:
        report.wave_steady_mbps = sum(steady)
        report.wave_keeps_up = report.wave_steady_mbps < rates.bytes_within(86400, now, rate_at, link, tz) * 8 / 86400e6
    finals = [p for p in plans if p.final_sync_bytes is not None]
    if finals:
        sent = rates.transfer_seconds(sum(p.final_sync_bytes or 0 for p in finals), now, rate_at, link, tz)
        if sent is not None:
            report.wave_final_sync_seconds = max(p.inputs.overhead_seconds or 0.0 for p in finals) + sent
    if by is not None:
        cap = business_mbps if business_mbps is not None else project.config.replication.throttle.max_mbps
        if cap is None:
            raise UsageError("--by needs the business-hours cap", hint="pass --business-mbps N")
        report.suggestion = suggest(pending, now=now, deadline=by.timestamp(), business=business,
                                    business_mbps=cap, link=link, tz=tz)
    if record:
        with project.db.unit() as u:
            for p in plans:
                u.measured.record_prediction(u.servers.get(p.server).id, initial_bytes=p.initial_bytes,
                                             initial_seconds=p.initial_seconds, final_seconds=p.final_sync_seconds,
                                             link_mbps=link)
    return report


@dataclass
class ReviewRow:
    server: str
    predicted_initial_seconds: float | None
    actual_initial_seconds: float | None
    initial_error: float | None  # (predicted − actual) / actual
    predicted_at: float | None


def review(project: Project, wave: str) -> list[ReviewRow]:
    """Per server of the wave: the last prediction made before its initial cycle started, against
    that cycle's measured time."""
    rows: list[ReviewRow] = []
    with project.db.unit() as u:
        for name in u.waves.get(wave).servers:
            server = u.servers.get(name)
            initial = next((c for c in u.measured.committed_cycles(server.id) if c.kind == "initial"), None)
            before = [p for p in u.measured.predictions(server.id)
                      if p.initial_seconds is not None and (initial is None or p.made <= initial.started)]
            pred = before[-1] if before else None
            actual = initial.t_wall if initial else None
            err = ((pred.initial_seconds - actual) / actual if pred and pred.initial_seconds is not None
                   and actual else None)
            rows.append(ReviewRow(name, pred.initial_seconds if pred else None, actual, err,
                                  pred.made if pred else None))
    return rows
