"""A sliding-window limit per client address, for registration attempts."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateLimiter:
    """At most ``limit`` attempts per ``window`` seconds per key; ``retry_after`` says how long
    until the next one is allowed (0 = allowed now, and counted)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> float:
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > 10_000:  # forget idle clients rather than grow without bound
                self._hits = {k: q for k, q in self._hits.items() if q and q[-1] > now - self.window}
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= self.limit:
                return q[0] + self.window - now
            q.append(now)
            return 0.0
