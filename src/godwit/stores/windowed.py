"""The window-aware throttle: every put is held by the project's bucket (the ``all`` scope) and
by the buckets of its server's and wave's scopes, each following the calendar (caps, blackouts),
and is counted by the meter of the enforcement log."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from godwit.config.windows import ALL, Calendar
from godwit.stores.base import ObjectStore
from godwit.stores.meter import WindowMeter
from godwit.stores.throttle import Piece, TokenBucket

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
        paid = [self.bucket.consume(len(data))]
        for scope in scopes:
            if scope != ALL and scope in self.calendar.scopes:
                b = self._bucket(scope)
                before = b.held_seconds
                paid.append(b.consume(len(data)))
                self.bucket.add_held(b.held_seconds - before)  # the cycle's throttle time counts every scope
        t0 = self._clock()
        self.inner.put(key, data, overwrite=overwrite)
        if self.meter is not None:
            # When the bytes went: the pieces of the bucket that held them longest, else the put itself.
            held: list[list[Piece]] = [p for p in paid if p]
            if held:
                slowest = max(held, key=lambda p: p[-1][1] - p[0][0])
                for a, b_, n in slowest:
                    self.meter.note(scopes, a + to_wall, b_ + to_wall, n)
            else:
                self.meter.note(scopes, t0, self._clock(), len(data))

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
        if self.meter is not None:
            self.meter.close()
        self.inner.close()
