"""Bandwidth limiting for the data plane, like the appliance's throttling schedule.

The schedule (``config.schedule``) maps times of day to a cap in megabits per second; a
:class:`TokenBucket` enforces the cap across every upload thread; :class:`ThrottledStore` wraps
any store so that only bytes put are counted (the data plane is the upload).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from godwit.stores.base import ObjectStore

#: How often a blackout is re-checked (seconds of the bucket's clock).
BLACKOUT_POLL = 0.2


class Interrupted(KeyboardInterrupt):
    """A throttled wait ended by :func:`interrupt`: the process is stopping. A KeyboardInterrupt,
    so that no retry or error handler takes it for a failure of the store."""


_stopping = threading.Event()


def interrupt() -> None:
    """End every throttled wait of this process within one slice, and refuse new ones: on Ctrl-C
    a put held by the cap (a 32 MiB pack at 8 Mbps is half a minute) must not keep the process
    alive; the interrupted cycle resumes from its journal."""
    _stopping.set()


def _check() -> None:
    if _stopping.is_set():
        raise Interrupted("throttled upload interrupted: the process is stopping")


#: A piece of a put's bytes and the span of the bucket's clock it went out in.
Piece = tuple[float, float, int]

#: A put pays its bytes in slices of this many seconds, each at the rate of that moment, so a
#: change of the schedule (a new cap, a blackout) takes effect within one slice.
SLICE = 0.25


class TokenBucket:
    """Thread-safe byte-rate limiter. ``rate`` is read on every slice, so schedules take effect live.

    Callers pay their bytes one at a time (a lock), slice by slice at the current rate: the bytes
    of all upload threads together never exceed the cap, and the pieces say when they went. A rate
    of 0 is a blackout: nothing is paid until it ends. Idle time earns a burst of a quarter of a
    second of traffic. Time spent waiting is accumulated in ``held_seconds``.
    """

    def __init__(self, rate: Callable[[], float | None], clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()  # one payer at a time
        self._held_lock = threading.Lock()
        self._tok_lock = threading.Lock()  # the tokens: the payer and charge() both change them
        self._tokens = 0.0
        self._last = clock()
        self.held_seconds = 0.0

    def consume(self, nbytes: int) -> list[Piece] | None:
        """Pay ``nbytes``; returns the pieces (start, end, bytes) they went out in, or None if no
        cap applied (nothing waited)."""
        if nbytes <= 0 or self._rate() is None:
            return None
        t0 = self._clock()
        pieces: list[Piece] = []
        with self._lock:
            left = float(nbytes)
            while left >= 1:  # fractions of a byte are float dust
                _check()
                bps = self._rate()
                now = self._clock()
                if bps is None:  # the cap ended while this waited
                    pieces.append((now, now, int(left)))
                    break
                if bps == 0:
                    self._sleep(BLACKOUT_POLL)
                    with self._tok_lock:  # no tokens accrue in a blackout
                        self._tokens, self._last = min(self._tokens, 0.0), self._clock()
                    continue
                rate = bps * 1e6 / 8
                burst = max(rate / 4, 64 * 1024)
                with self._tok_lock:
                    self._accrue(now, rate, burst)
                    if self._tokens >= left:
                        self._tokens -= left
                        pieces.append((now, now, int(left)))
                        break
                    wait = min(SLICE, (left - self._tokens) / rate)
                self._sleep(wait)
                end = self._clock()
                if self._rate() == 0:  # a blackout began in this slice: its bytes go after it
                    continue
                with self._tok_lock:  # paid for the time that really passed: oversleeping never loses rate
                    self._tokens += (end - self._last) * rate
                    self._last = end
                    take = max(0.0, min(left, self._tokens))
                    self._tokens = min(burst, self._tokens - take)
                left -= take
                if take:
                    pieces.append((now, end, int(take)))
        with self._held_lock:
            self.held_seconds += self._clock() - t0
        return pieces

    def rate(self) -> float | None:
        """The cap now, in Mbps (None: uncapped, 0: a blackout)."""
        return self._rate()

    def _accrue(self, now: float, rate: float, burst: float) -> None:
        self._tokens = min(burst, self._tokens + (now - self._last) * rate)
        self._last = now

    def charge(self, nbytes: int) -> None:
        """Count bytes that went out while another bucket held them (a tighter scope's): no wait
        here, but this bucket's next payers wait off the debt, so its scope's total stays capped."""
        bps = self._rate()
        if not bps or nbytes <= 0:
            return
        rate = bps * 1e6 / 8
        with self._tok_lock:
            self._accrue(self._clock(), rate, max(rate / 4, 64 * 1024))
            self._tokens -= nbytes

    def settle(self) -> float:
        """Wait until this bucket owes nothing (the debt that ``charge`` and other payers left);
        returns the seconds waited."""
        t0 = self._clock()
        while True:
            _check()
            bps = self._rate()
            if bps is None:
                break
            if bps == 0:
                self._sleep(BLACKOUT_POLL)
                continue
            rate = bps * 1e6 / 8
            with self._tok_lock:
                self._accrue(self._clock(), rate, max(rate / 4, 64 * 1024))
                debt = -self._tokens
            if debt <= 0:
                break
            self._sleep(min(SLICE, debt / rate))
        waited = self._clock() - t0
        self.add_held(waited)
        return waited

    def add_held(self, seconds: float) -> None:
        with self._held_lock:
            self.held_seconds += seconds


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
