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
