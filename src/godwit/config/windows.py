"""The window calendar: throttle caps and blackouts (no replication traffic at all), for every
server, one wave or one server, in local time of an explicit zone (``[replication.throttle] zone``),
across midnight and DST changes.

Rules. Within one scope (all / a wave / a server) the first matching cap window wins, else that
scope's ``max_mbps``. A put of a server is held to the lowest cap of its three scopes, and to 0
while any blackout of them is active (a blackout inside a cap window wins). Occurrences are found
from local wall times and turned into instants through the zone, so a window of 08:00-18:00 on the
day the clocks go back lasts 11 hours, and its transitions are at the right instants.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from godwit.config.schedule import MBPS_MAX, MBPS_MIN, _valid_mbps
from godwit.errors import ConfigError

_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
ALL = "all"

#: The cap (Mbps) at a local time: None = no cap, 0 = blackout.
RateAtLocal = Callable[[datetime], float | None]


def parse_span(spec: str, where: str) -> tuple[int, int]:
    m = _SPAN.match(spec)
    if not m:
        raise ConfigError(f"{where} window {spec!r} is not HH:MM-HH:MM", hint='write windows like "08:00-18:00"')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
        raise ConfigError(f"{where} window {spec!r} has an impossible time")
    return h1 * 60 + m1, h2 * 60 + m2


@dataclass(frozen=True)
class CalWindow:
    label: str  # "08:00-18:00"
    start: int  # minutes after local midnight
    end: int  # exclusive; may wrap past midnight; 1440 = 24:00
    scope: str  # all | wave:NAME | server:NAME
    mbps: float | None  # None: a blackout

    @property
    def kind(self) -> str:
        return "blackout" if self.mbps is None else "cap"

    def covers(self, minute: int) -> bool:
        if self.start == self.end:
            return False  # as documented since the first schedule: covers nothing
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True)
class Occurrence:
    window: CalWindow
    start: float  # instants (UTC timestamps)
    end: float

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.window.scope, self.window.label, self.start)


def _at(day: datetime, minute: int, zone: tzinfo | None) -> float:
    """The instant of local ``minute`` on ``day`` (a local wall time). A time inside a DST gap
    (02:30 on the night the clocks go forward) does not exist: it is the instant the gap ends
    (03:00), the first one whose wall time is not earlier, so that the minutes a window covers and
    the instants its occurrence spans agree."""
    base = datetime.combine(day.date(), time(0), tzinfo=zone)
    wall = base + timedelta(minutes=minute)  # aware + timedelta is wall-clock arithmetic
    naive = wall.replace(tzinfo=None)
    t = wall.timestamp()
    if _wall(t, zone) == naive:
        return t
    # In the gap, fold=1 lands before the transition and fold=0 after it: find the transition.
    lo, hi = sorted((int(wall.replace(fold=1).timestamp()), int(t)))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, zone) >= naive:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _wall(t: float, zone: tzinfo | None) -> datetime:
    return datetime.fromtimestamp(t, zone).replace(tzinfo=None)


@dataclass
class Calendar:
    zone: tzinfo | None  # None: the host's local time
    windows: list[CalWindow] = field(default_factory=list)
    defaults: dict[str, float] = field(default_factory=dict)  # scope → max_mbps

    def local(self, ts: float) -> datetime:
        # Whole seconds: windows change on minutes, and fromtimestamp would round up a hair's breadth.
        return datetime.fromtimestamp(math.floor(ts), self.zone)

    def active(self, ts: float) -> list[Occurrence]:
        """The occurrences of every window active at instant ``ts``."""
        when = self.local(ts)
        minute = when.hour * 60 + when.minute
        out = []
        for w in self.windows:
            if not w.covers(minute):
                continue
            day = when if (w.start < w.end or minute >= w.start) else when - timedelta(days=1)
            start = _at(day, w.start, self.zone)
            end = _at(day + timedelta(days=1) if w.end <= w.start else day, w.end, self.zone)
            out.append(Occurrence(w, start, end))
        return out

    def cap(self, ts: float, scopes: tuple[str, ...] = (ALL,)) -> float | None:
        """The cap (Mbps) for traffic of ``scopes`` at ``ts``: 0 in a blackout, None if uncapped."""
        active = self.active(ts)
        caps: list[float] = []
        for scope in scopes:
            mine = [o.window for o in active if o.window.scope == scope]
            if any(w.mbps is None for w in mine):
                return 0.0
            first = next((w.mbps for w in mine if w.mbps is not None), self.defaults.get(scope))
            if first is not None:
                caps.append(first)
        return min(caps) if caps else None

    def rate_at(self, scopes: tuple[str, ...] = (ALL,)) -> RateAtLocal:
        """For the planner: the cap at a local datetime (the zone's wall time)."""
        def rate(when: datetime) -> float | None:
            return self.cap(when.timestamp(), scopes)

        return rate

    @property
    def scopes(self) -> set[str]:
        return {w.scope for w in self.windows} | set(self.defaults)


def zone_of(name: str | None) -> tzinfo | None:
    """The zone of the windows; None is the host's local time (with its own DST rules)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"[replication.throttle] zone {name!r} is not a known time zone",
                          hint='use an IANA name like "Europe/Berlin" or "UTC"') from None


def _scope_windows(scope: str, where: str, max_mbps: object, schedule: Mapping[str, object],
                   blackout: list[object]) -> tuple[list[CalWindow], float | None]:
    if max_mbps is not None and not _valid_mbps(max_mbps):
        raise ConfigError(f"{where} max_mbps must be a positive number of Mbps from {MBPS_MIN:g} to {MBPS_MAX:g}, "
                          f"got {max_mbps!r}"[:200], hint="leave it out for no cap")
    out = []
    for spec in blackout:  # first: a blackout wins over a cap window that covers the same time
        if not isinstance(spec, str):
            raise ConfigError(f"{where} blackout entries are \"HH:MM-HH:MM\" strings")
        s, e = parse_span(spec, f"{where} blackout")
        out.append(CalWindow(spec, s, e, scope, None))
    for spec, value in schedule.items():
        s, e = parse_span(spec, f"{where} throttle")
        if not _valid_mbps(value):
            raise ConfigError(f"{where} throttle window {spec!r} needs a positive number of Mbps from {MBPS_MIN:g} "
                              f"to {MBPS_MAX:g}, got {value!r}"[:200])
        out.append(CalWindow(spec, s, e, scope, float(value)))  # type: ignore[arg-type]
    return out, float(max_mbps) if max_mbps is not None else None  # type: ignore[arg-type]


def calendar(zone: str | None, max_mbps: float | None, schedule: Mapping[str, object], blackout: list[object],
             scoped: Mapping[str, Mapping[str, object]] | None = None) -> Calendar:
    """The calendar of ``[replication.throttle]``; ``scoped`` maps ``server:NAME`` / ``wave:NAME``
    to tables with the same keys (max_mbps, schedule, blackout)."""
    cal = Calendar(zone_of(zone))
    sections: list[tuple[str, str, object, Mapping[str, object], list[object]]] = [
        (ALL, "[replication.throttle]", max_mbps, schedule, blackout)]
    for scope, table in (scoped or {}).items():
        kind, _, name = scope.partition(":")
        where = f"[replication.throttle.{kind}s.{name}]"
        extra = set(table) - {"max_mbps", "schedule", "blackout"}
        if extra:
            raise ConfigError(f"{where} has unknown key(s): {', '.join(sorted(extra))}")
        sched = table.get("schedule", {})
        black = table.get("blackout", [])
        if not isinstance(sched, dict) or not isinstance(black, list):
            raise ConfigError(f"{where} schedule is a table and blackout a list")
        sections.append((scope, where, table.get("max_mbps"), sched, black))
    for scope, where, cap, sched, black in sections:
        windows, default = _scope_windows(scope, where, cap, sched, black)
        cal.windows.extend(windows)
        if default is not None:
            cal.defaults[scope] = default
    return cal
