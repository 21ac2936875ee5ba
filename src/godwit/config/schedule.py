"""The throttle schedule: a default cap plus time windows, as the appliance's throttling schedule
(`[replication.throttle]`). Parsed with the configuration; enforced by ``stores.throttle``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from godwit.errors import ConfigError

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
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"throttle window {spec!r} needs a positive Mbps number, got {value!r}")
            windows.append(Window(h1 * 60 + m1, h2 * 60 + m2, float(value)))
        if default_mbps is not None and default_mbps <= 0:
            raise ConfigError("max_mbps must be positive")
        return cls(default_mbps, windows)

    def mbps_at(self, when: datetime) -> float | None:
        minute = when.hour * 60 + when.minute
        for w in self.windows:
            if w.covers(minute):
                return w.mbps
        return self.default_mbps
