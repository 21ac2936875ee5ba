"""The enforcement log's measurements: the bytes the store wrapper let through, per occurrence of
each throttle or blackout window, with the average rate and the highest over any 10-second slot.

``note`` is called for every put with the instants it was asked for and finished; its bytes are
spread evenly over that span (a put waits for its tokens first, so that span is when it went out).
An occurrence is closed when the calendar says it is over (on a put or a ``tick``) or when the
meter closes; ``on_close`` gets the record (the project writes it into the state).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from godwit.config.windows import Calendar, Occurrence

#: The slot of the "max over 10 s" figure.
SLOT = 10.0
#: A cap window is kept when its average is within 10% of the cap and no 10-s slot is 25% above it.
AVG_SLACK = 1.10
#: How far back a tick looks for windows it has not seen (a process that was not running saw none).
LOOKBACK = 2 * 86400.0
SLOT_SLACK = 1.25


@dataclass
class WindowRecord:
    window: str
    scope: str
    kind: str  # cap | blackout
    cap_mbps: float | None
    started: float  # the occurrence's start, or when this process first saw it
    ended: float
    bytes: int
    busy_seconds: float  # from the first put asked for to the last one done, inside the window
    max_mbps: float  # the busiest 10-s slot
    kept: bool

    @property
    def avg_mbps(self) -> float:
        return self.bytes * 8 / self.busy_seconds / 1e6 if self.busy_seconds > 0 else 0.0


@dataclass
class _Acc:
    occ: Occurrence
    seen: float
    bytes: int = 0
    first: float | None = None
    last: float | None = None
    slots: dict[int, float] = field(default_factory=dict)

    def add(self, t0: float, t1: float, nbytes: int) -> None:
        t1 = max(t1, t0)
        c0, c1 = max(t0, self.occ.start), min(t1, self.occ.end)
        if t1 > t0:  # only the share of the put's span that lies inside the window counts
            nbytes = int(nbytes * (c1 - c0) / (t1 - t0))
        t0, t1 = c0, c1
        self.bytes += nbytes
        self.first = t0 if self.first is None else min(self.first, t0)
        self.last = t1 if self.last is None else max(self.last, t1)
        span = t1 - t0
        if span <= 0:
            k = int((t1 - self.occ.start) // SLOT)
            self.slots[k] = self.slots.get(k, 0.0) + nbytes
            return
        k = int((t0 - self.occ.start) // SLOT)
        while True:  # spread over the slots the put covered
            s0 = self.occ.start + k * SLOT
            piece = min(t1, s0 + SLOT) - max(t0, s0)
            if piece > 0:
                self.slots[k] = self.slots.get(k, 0.0) + nbytes * piece / span
            if s0 + SLOT >= t1:
                break
            k += 1

    def record(self, ended: float) -> WindowRecord:
        w = self.occ.window
        busy = (self.last - self.first) if self.first is not None and self.last is not None else 0.0
        max_mbps = max(self.slots.values(), default=0.0) * 8 / SLOT / 1e6
        n = self.bytes
        if w.mbps is None:
            kept = n == 0
        else:
            avg = n * 8 / busy / 1e6 if busy > 0 else 0.0
            kept = avg <= w.mbps * AVG_SLACK and max_mbps <= w.mbps * SLOT_SLACK
        return WindowRecord(w.label, w.scope, w.kind, w.mbps, max(self.occ.start, self.seen), ended, n, busy,
                            max_mbps, kept)


class WindowMeter:
    def __init__(self, calendar: Calendar, clock: Callable[[], float],
                 on_close: Callable[[WindowRecord], None]) -> None:
        self.calendar = calendar
        self.clock = clock
        self.on_close = on_close
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, float], _Acc] = {}
        self._closed: dict[tuple[str, str, float], float] = {}  # recently closed → their end
        self._last_tick: float | None = None
        self._puts = 0
        self.tick()

    def tick(self, now: float | None = None) -> None:
        """Open the occurrences seen since the last tick, close the ones that are over. Every
        minute since the last tick is looked at, so a window that began and ended while nothing
        was sent (a blackout, usually) is logged too, with 0 bytes."""
        now = self.clock() if now is None else now
        done: list[WindowRecord] = []
        with self._lock:
            last = self._last_tick if self._last_tick is not None else now
            t = max(last, now - LOOKBACK)
            while True:
                for occ in self.calendar.active(min(t, now)):
                    if occ.key not in self._open and occ.key not in self._closed and occ.end > last:
                        self._open[occ.key] = _Acc(occ, max(last, occ.start))
                if t >= now:
                    break
                t = min((t // 60 + 1) * 60, now)
            for key in [k for k, acc in self._open.items() if acc.occ.end <= now]:
                acc = self._open.pop(key)
                self._closed[key] = acc.occ.end
                done.append(acc.record(acc.occ.end))
            for key in [k for k, end in self._closed.items() if end < now - LOOKBACK]:
                del self._closed[key]
            self._last_tick = max(last, now)
        for rec in done:
            self.on_close(rec)

    def note(self, scopes: tuple[str, ...], t0: float, t1: float, nbytes: int) -> None:
        self.tick(t1)
        with self._lock:
            self._puts += 1
            for acc in self._open.values():
                if acc.occ.window.scope in scopes and t1 > acc.occ.start and t0 < acc.occ.end:
                    acc.add(t0, t1, nbytes)

    def close(self) -> None:
        """Close every open occurrence as seen so far (this process stops watching)."""
        now = self.clock()
        self.tick(now)
        with self._lock:
            # What a process that never sent saw of a window is noise (a mover, a status command).
            done = [acc.record(now) for acc in self._open.values()] if self._puts else []
            self._open.clear()
        for rec in done:
            self.on_close(rec)
