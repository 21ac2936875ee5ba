"""Progress of the cycles this service runs, per server, for the dashboard's live bars."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from godwit.engine.cycle import ProgressFn


class LiveProgress:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._disks: dict[str, dict[int, tuple[int, int]]] = {}

    @contextmanager
    def tracking(self, server: str) -> Iterator[ProgressFn]:
        """A progress callback for one cycle of ``server``; forgotten when the cycle ends."""
        def report(disk: int, done: int, total: int) -> None:
            with self._lock:
                self._disks.setdefault(server, {})[disk] = (done, total)

        with self._lock:
            self._disks[server] = {}
        try:
            yield report
        finally:
            with self._lock:
                self._disks.pop(server, None)

    def fraction(self, server: str) -> float | None:
        """How far the running cycle of ``server`` is (0..1), or None when none runs here."""
        with self._lock:
            disks = self._disks.get(server)
            if disks is None:
                return None
            total = sum(t for _d, t in disks.values())
            return min(1.0, sum(d for d, _t in disks.values()) / total) if total else 0.0
