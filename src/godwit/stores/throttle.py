"""Bandwidth limiting for the data plane, like the appliance's throttling schedule.

A :class:`BandwidthSchedule` maps times of day to a cap in megabits per second; a
:class:`TokenBucket` enforces the cap across every upload thread; :class:`ThrottledStore` wraps
any store so that only bytes put are counted (the data plane is the upload).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime

from godwit.errors import ConfigError
from godwit.stores.base import ObjectStore

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


class TokenBucket:
    """Thread-safe byte-rate limiter. ``rate`` is read on each call so schedules take effect live.

    The burst is a quarter of a second of traffic, so a 50 Mbps cap is not exceeded by more than
    that over any window. Time spent waiting is accumulated in ``held_seconds``.
    """

    def __init__(self, rate: Callable[[], float | None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._last = clock()
        self.held_seconds = 0.0

    def consume(self, nbytes: int) -> None:
        """Take ``nbytes`` from the bucket, sleeping off any debt (the bucket may go negative, so a
        large put waits in proportion to its size and concurrent callers queue fairly)."""
        bps = self._rate()
        if bps is None or nbytes <= 0:
            return
        bytes_per_s = bps * 1e6 / 8
        burst = max(bytes_per_s / 4, 64 * 1024)
        with self._lock:
            now = self._clock()
            self._tokens = min(burst, self._tokens + (now - self._last) * bytes_per_s)
            self._last = now
            self._tokens -= nbytes
            wait = -self._tokens / bytes_per_s if self._tokens < 0 else 0.0
            self.held_seconds += wait
        if wait > 0:
            self._sleep(wait)


class ThrottledStore(ObjectStore):
    """Counts every put against the bucket before it goes out."""

    def __init__(self, inner: ObjectStore, bucket: TokenBucket) -> None:
        self.inner = inner
        self.bucket = bucket
        self.description = inner.description

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        self.bucket.consume(len(data))
        self.inner.put(key, data, overwrite=overwrite)

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(key, offset, length)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.inner.close()
