"""The window-aware throttle: every put is held by the project's bucket (the ``all`` scope) and
by the buckets of its server's and wave's scopes, each following the calendar (caps, blackouts),
and is counted by the meter of the enforcement log."""

from __future__ import annotations

import mmap
import threading
from collections.abc import Callable, Iterator

from godwit.config.windows import ALL, Calendar
from godwit.stores.base import ObjectStore
from godwit.stores.meter import WindowMeter
from godwit.stores.throttle import TokenBucket

#: Scopes of a key: ("all",) or ("all", "server:NAME", "wave:NAME").
ScopeOf = Callable[[str], tuple[str, ...]]


class WindowedStore(ObjectStore):
    def __init__(self, inner: ObjectStore, bucket: TokenBucket, calendar: Calendar, scope_of: ScopeOf,
                 meter: WindowMeter | None, *, clock: Callable[[], float], bucket_clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.inner = inner
        self.bucket = bucket
        self.calendar = calendar
        self.scope_of = scope_of
        self.meter = meter
        self.description = inner.description
        self._clock = clock
        self._bucket_clock = bucket_clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._scoped: dict[str, TokenBucket] = {}

    def _bucket(self, scope: str) -> TokenBucket:
        with self._lock:
            b = self._scoped.get(scope)
            if b is None:
                b = self._scoped[scope] = TokenBucket(lambda: self.calendar.cap(self._clock(), (scope,)),
                                                      clock=self._bucket_clock, sleep=self._sleep)
            return b

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        scopes = self.scope_of(key)
        to_wall = self._clock() - self._bucket_clock()
        pairs = [(ALL, self.bucket)] + [(sc, self._bucket(sc)) for sc in scopes
                                         if sc != ALL and sc in self.calendar.scopes]
        now = self._clock()
        caps = [self.bucket.rate()] + [self.calendar.cap(now, (sc,)) for sc, _ in pairs[1:]]
        # The tightest scope (a blackout first) pays the put slice by slice; the others are charged
        # first and then waited off, so their wait overlaps it and only their real contention
        # (other servers of the wave, say) adds to it.
        binding = min(range(len(pairs)), key=lambda i: (caps[i] is None, caps[i] or 0.0))
        others = [b for i, (_, b) in enumerate(pairs) if i != binding]
        for other in others:
            other.charge(len(data))
        holder = pairs[binding][1]
        before = holder.held_seconds
        pieces = holder.consume(len(data))
        extra = sum(other.settle() for other in others)
        if holder is not self.bucket:  # the cycle's throttle time counts every scope's wait
            self.bucket.add_held(holder.held_seconds - before)
        if extra and self.bucket not in others:
            self.bucket.add_held(extra)
        t0 = self._clock()
        self.inner.put(key, data, overwrite=overwrite)
        if self.meter is not None:
            # When the bytes went: the pieces the holding bucket paid, else the put itself.
            if pieces:
                for a, b_, n in pieces:
                    self.meter.note(scopes, a + to_wall, b_ + to_wall, n)
            else:
                self.meter.note(scopes, t0, self._clock(), len(data))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self.inner.get(key, offset, length)

    def read_into(self, key: str, buf: mmap.mmap, offset: int = 0, length: int | None = None) -> memoryview | None:
        return self.inner.read_into(key, buf, offset, length)  # reads are not throttled, as get

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        if self.meter is not None:
            self.meter.close()
        self.inner.close()
