"""The throttle schedule: a default cap plus time windows, as the appliance's throttling schedule
(`[replication.throttle]`). Parsed with the configuration; enforced by ``stores.throttle``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from godwit.errors import ConfigError

#: Bandwidth caps godwit accepts, in Mbps: below the minimum a pack would take days (and a
#: near-zero rate overflows the sleep); above the maximum a cap means nothing.
MBPS_MIN = 0.1
MBPS_MAX = 1_000_000.0

_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Window:
    start: int  # minutes after midnight
    end: int  # exclusive; a window may wrap past midnight
    mbps: float

    def covers(self, minute: int) -> bool:
        if self.start <= self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _valid_mbps(value: object) -> bool:
    """A finite number in range: NaN compares false to everything, so it would mean no cap."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and MBPS_MIN <= value <= MBPS_MAX)


class BandwidthSchedule:
    """A default cap plus time windows (local time). The first matching window wins."""

    def __init__(self, default_mbps: float | None = None, windows: list[Window] | None = None) -> None:
        self.default_mbps = default_mbps
        self.windows = windows or []

    @classmethod
    def parse(cls, default_mbps: float | None, schedule: Mapping[str, object]) -> BandwidthSchedule:
        windows = []
        for spec, value in schedule.items():
            m = _WINDOW.match(spec)
            if not m:
                raise ConfigError(f"throttle window {spec!r} is not HH:MM-HH:MM",
                                  hint='write windows like "08:00-18:00" = 50')
            h1, m1, h2, m2 = (int(g) for g in m.groups())
            if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59 or (h1 == 24 and m1) or (h2 == 24 and m2):
                raise ConfigError(f"throttle window {spec!r} has an impossible time")
            if not _valid_mbps(value):
                raise ConfigError(f"throttle window {spec!r} needs a positive number of Mbps from {MBPS_MIN:g} to "
                                  f"{MBPS_MAX:g}, got {value!r}")
            windows.append(Window(h1 * 60 + m1, h2 * 60 + m2, float(value)))  # type: ignore[arg-type]
        if default_mbps is not None and not _valid_mbps(default_mbps):
            raise ConfigError(f"[replication.throttle] max_mbps must be a positive number of Mbps from "
                              f"{MBPS_MIN:g} to {MBPS_MAX:g}, got {default_mbps!r}", hint="leave it out for no cap")
        return cls(default_mbps, windows)

    def mbps_at(self, when: datetime) -> float | None:
        minute = when.hour * 60 + when.minute
        for w in self.windows:
            if w.covers(minute):
                return w.mbps
        return self.default_mbps
