"""The write-behind queue of a page-blob replica: requests in flight on a small thread pool.

``submit`` queues one operation's requests and returns, so a delta of scattered extents costs
one round trip per ``concurrency`` requests rather than one each. A request waits for any queued
request on the same pages (later data wins), the payload bytes in flight are bounded, and the
first failure is raised by the next call until :meth:`WriteQueue.drain` forgets it.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from godwit.errors import GodwitError

MAX_PENDING_BYTES = 64 << 20  # payload bytes queued at most


@dataclass(frozen=True)
class Job:
    """One request: its byte range on the blob, the payload bytes it holds, and the call."""

    lo: int
    hi: int
    nbytes: int
    run: Callable[[], None]


@dataclass(frozen=True)
class _Pending:
    lo: int
    hi: int
    nbytes: int
    future: Future[None]
    what: str


class WriteQueue:
    """Requests on one blob, ``concurrency`` at a time; ``fail`` maps an SDK error for the caller."""

    def __init__(self, concurrency: int, fail: Callable[[Exception, str], GodwitError]) -> None:
        self.concurrency = concurrency
        self._fail = fail
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._failed: GodwitError | None = None

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="godwit-pageblob")
            return self._pool

    def submit(self, jobs: list[Job], what: str) -> None:
        """Queue ``jobs`` (one operation's requests, on disjoint pages) behind earlier work."""
        self.raise_failed()
        for job in jobs:
            overlapping = [p.future for p in self._pending if p.lo < job.hi and job.lo < p.hi]
            if overlapping:
                wait(overlapping)
                self._reap()
            future = self._executor().submit(job.run)
            self._pending.append(_Pending(job.lo, job.hi, job.nbytes, future, what))
            self._pending_bytes += job.nbytes
            while self._pending and (self._pending_bytes > MAX_PENDING_BYTES
                                     or len(self._pending) > 4 * self.concurrency):
                wait([self._pending[0].future])
                self._reap()
        self._reap()
        self.raise_failed()

    def _reap(self) -> None:
        """Forget finished requests; remember the first failure."""
        kept: deque[_Pending] = deque()
        for p in self._pending:
            if not p.future.done():
                kept.append(p)
                continue
            self._pending_bytes -= p.nbytes
            error = p.future.exception()
            if error is not None and self._failed is None:
                self._failed = self._fail(error if isinstance(error, Exception) else RuntimeError(error), p.what)
        self._pending = kept

    def raise_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def flush(self) -> None:
        """Wait for every queued request; raise the first that failed."""
        wait([p.future for p in self._pending])
        self._reap()
        self.raise_failed()

    def drain(self) -> None:
        """Wait for every queued request and forget failures (before a rollback or removal)."""
        wait([p.future for p in self._pending])
        self._reap()
        self._failed = None

    def close(self) -> None:
        self.drain()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
