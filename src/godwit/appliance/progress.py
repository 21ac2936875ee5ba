"""A running cycle's progress, sent to the service from a thread of its own.

The cycle's progress callback only stores the latest figures; the sender posts them at most once
a second, and a slow or absent service never slows the cycle (a failed post is dropped: progress
is a snapshot, the next one replaces it).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from godwit.errors import GodwitError

Post = Callable[[dict[str, Any]], None]


class ProgressSender:
    def __init__(self, post: Post, server: str, cycle: int | None, *, every: float = 1.0,
                 rpo_since: float | None = None) -> None:
        self.post = post
        self.server = server
        self.cycle = cycle
        self.every = every
        self.rpo_since = rpo_since
        self._per_disk: dict[int, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="godwit-progress", daemon=True)

    def __enter__(self) -> ProgressSender:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._changed.set()
        self._thread.join(timeout=10)

    def __call__(self, disk: int, done: int, total: int) -> None:  # the engine's ProgressFn
        with self._lock:
            self._per_disk[disk] = (done, total)
        self._changed.set()

    def snapshot(self, error: str | None = None) -> dict[str, Any]:
        with self._lock:
            done = sum(d for d, _ in self._per_disk.values())
            total = sum(t for _, t in self._per_disk.values())
        elapsed = time.monotonic() - self._t0
        return {"server": self.server, "cycle": self.cycle, "bytes_done": done, "bytes_total": total,
                "throughput_bps": done / elapsed if elapsed > 0 else None,
                "rpo_seconds": max(0.0, time.time() - self.rpo_since) if self.rpo_since else None, "error": error}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.wait()
            if self._stop.is_set():
                return
            self._changed.clear()
            with contextlib.suppress(GodwitError):  # away: the next snapshot, or the cycle report, says more
                self.post(self.snapshot())
            self._stop.wait(self.every)
