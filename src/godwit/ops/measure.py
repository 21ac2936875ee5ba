"""The planner's inputs, all measured: per disk the used (allocated, non-zero) size, how well what
was sent compressed, the churn and throughput per cycle, and the link speed."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from itertools import pairwise
from pathlib import Path

from godwit.errors import GodwitError, UsageError
from godwit.project.project import Project
from godwit.sources import open_source
from godwit.state.models import Cycle, Server
from godwit.state.network import NetworkRecords
from godwit.state.views import ChurnHour

#: Churn is averaged over the delta cycles of this many last hours.
CHURN_HOURS = 24.0
#: A cycle counts for the link speed if it sent at least this much and the throttle held it back
#: for less than this share of its time.
LINK_MIN_BYTES = 1 << 20
LINK_MAX_THROTTLED = 0.05


@dataclass
class CycleFigures:
    number: int
    kind: str
    started: float
    seconds: float
    bytes_changed: int
    bytes_sent: int
    mbps: float | None  # sent over wall time
    throttled_seconds: float


@dataclass
class ServerInputs:
    server: str
    state: str
    used_bytes: int  # allocated, non-zero data of all disks
    used_from: str  # "initial cycle" (measured exactly) | "allocation map" (not replicated yet)
    compress_ratio: float  # bytes sent / bytes changed (1.0 = incompressible)
    ratio_from: str  # "this server" | "other servers" | "none measured"
    initial_seconds: float | None  # the measured initial cycle, if done
    churn_bps: float | None  # bytes changed per second over the last CHURN_HOURS
    overhead_seconds: float | None  # a delta cycle's time beyond sending its bytes (scan, hash, commit)
    last_cycle_started: float | None
    cycles: list[CycleFigures] = field(default_factory=list)
    churn_by_hour: list[ChurnHour] = field(default_factory=list)  # the daily pattern, in the windows' zone


def figures(c: Cycle) -> CycleFigures:
    return CycleFigures(c.number, c.kind, c.started, c.t_wall, c.bytes_changed, c.bytes_sent,
                        (c.bytes_sent * 8 / c.t_wall / 1e6) if c.t_wall > 0 else None, c.t_throttle)


def measured_link_mbps(cycles: list[Cycle]) -> float | None:
    """The best unthrottled throughput of the last ten cycles that sent enough to tell."""
    rates = [c.bytes_sent * 8 / c.t_wall / 1e6 for c in cycles
             if c.t_wall > 0 and c.bytes_sent >= LINK_MIN_BYTES and c.t_throttle <= LINK_MAX_THROTTLED * c.t_wall]
    return max(rates[-10:]) if rates else None


def link_mbps(project: Project, override: float | None) -> tuple[float, str]:
    """The link speed and where it came from: --bandwidth-mbps, else the last `network bench`, else
    measured cycle throughput."""
    if override is not None:
        if override <= 0:
            raise UsageError("--bandwidth-mbps must be positive")
        return override, "--bandwidth-mbps"
    with project.db.unit() as u:
        bench = NetworkRecords(u.connection).last_bench()
        measured = measured_link_mbps(u.measured.committed_cycles())
    if bench and float(bench.get("upload_mbps") or 0) > 0:
        # `network bench` measured the path itself; a cycle's rate may be held by its source or CPU
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(bench["at"])))
        return float(bench["upload_mbps"]), f"network bench of {when} ({bench.get('path')})"
    if measured is None:
        raise UsageError("no cycle has measured the link yet (none sent 1 MiB or more unthrottled)",
                         hint="pass --bandwidth-mbps N, run `godwit network bench`, or replicate a server first")
    return measured, "measured cycle throughput"


def _allocated(project: Project, server: Server) -> int:
    """Allocated bytes of the server's disks from their allocation maps (nothing is read)."""
    total = 0
    for d in project.db.disks(server.id):
        try:
            with open_source(Path(d.spec), d.format) as src:
                total += sum(e.length for e in src.extents(0, src.size) if e.is_data)
        except GodwitError:
            total += d.size  # cannot open it now: assume it is full
    return total


def _overhead(deltas: list[Cycle], link: float | None) -> float | None:
    """The median time a delta cycle spends beyond sending its bytes at the link's speed."""
    if not deltas:
        return None
    rest = []
    for c in deltas:
        send = c.bytes_sent * 8 / (link * 1e6) if link else 0.0
        rest.append(max(0.0, c.t_wall - c.t_throttle - send))
    return statistics.median(rest)


def server_inputs(project: Project, name: str, *, link: float | None, now: float | None = None,
                  churn_hours: float = CHURN_HOURS, tz: tzinfo | None = None) -> ServerInputs:
    now = time.time() if now is None else now
    with project.db.unit() as u:
        server = u.servers.get(name)
        cycles = u.measured.committed_cycles(server.id)
        everyone = u.measured.committed_cycles()
        by_hour = [h for h in u.measured.churn_by_hour(server.id, lambda ts: datetime.fromtimestamp(ts, tz).hour)
                   if h.cycles]
    initial = next((c for c in cycles if c.kind == "initial"), None)
    used, used_from = ((initial.bytes_changed, "initial cycle") if initial is not None
                       else (_allocated(project, server), "allocation map"))
    mine = [c for c in cycles if c.bytes_changed > 0]
    pool, ratio_from = (mine, "this server") if mine else (
        [c for c in everyone if c.bytes_changed > 0], "other servers")
    changed = sum(c.bytes_changed for c in pool)
    ratio = sum(c.bytes_sent for c in pool) / changed if changed else 1.0
    if not changed:
        ratio_from = "none measured"
    deltas = [c for c in cycles if c.kind != "initial"]
    recent = [(prev, c) for prev, c in pairwise(cycles)
              if c.kind != "initial" and c.started >= now - churn_hours * 3600]
    span = sum(c.started - prev.started for prev, c in recent)
    churn = sum(c.bytes_changed for _, c in recent) / span if recent and span > 0 else None
    return ServerInputs(
        server=name, state=server.state, used_bytes=used, used_from=used_from, compress_ratio=ratio,
        ratio_from=ratio_from, initial_seconds=initial.t_wall if initial else None, churn_bps=churn,
        overhead_seconds=_overhead(deltas[-10:], link), last_cycle_started=cycles[-1].started if cycles else None,
        cycles=[figures(c) for c in cycles[-20:]], churn_by_hour=by_hour)
