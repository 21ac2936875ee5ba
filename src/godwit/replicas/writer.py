"""Write-behind for a local replica file: large aligned writes, with O_DIRECT where allowed.

Writes that continue where the previous one ended are copied into one page-aligned buffer (an
anonymous ``mmap``) of ``BUFFER`` bytes, placed so that file offset and buffer position agree modulo
``ALIGN``; a full buffer, or a write elsewhere, hands the buffer to one background thread, which
writes its aligned middle with ``O_DIRECT`` (around the page cache: buffered writes here ran at a
quarter of the disk's speed, docs/benchmarks.md) and any unaligned head or tail through the
ordinary descriptor. Buffers are split only at aligned offsets, so the unaligned pieces are only
where the caller's writes had a gap. Filesystems that refuse direct I/O (tmpfs: EINVAL at open or
at the first write) get ordinary writes of the same large buffers.

Memory is bounded by ``BUFFERS`` buffers per file. ``THREADS`` threads write buffers in the order
they were filled; a buffer waits while an earlier one on the same pages is being written, so a
later write of the same bytes always wins. Nothing is durable before
:meth:`AlignedWriter.flush` returns and the caller fsyncs; the first failure is raised by the next
call.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

ALIGN = 4096
BUFFER = 8 << 20
BUFFERS = 4
THREADS = 2  # two direct writes in flight kept this virtio disk busier than one (docs/benchmarks.md)


@dataclass
class _Run:
    buf: mmap.mmap
    base: int  # file offset of buf[0]; a multiple of ALIGN
    start: int
    end: int
    seq: int = 0

    def pages(self) -> tuple[int, int]:
        return self.base, -(-self.end // ALIGN) * ALIGN


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class AlignedWriter:
    def __init__(self, path: Path, fd: int, *, buffer: int = BUFFER, buffers: int = BUFFERS,
                 threads: int = THREADS, direct: bool = True) -> None:
        self._path = path
        self._fd = fd
        self._size = max(ALIGN, buffer // ALIGN * ALIGN)
        self._direct = direct
        self._dfd: int | None = None  # opened on the first aligned write
        self._nbuf = max(1, buffers)
        self._made = 0
        self._free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self._todo: queue.Queue[_Run | None] = queue.Queue()
        self._cur: _Run | None = None
        self._nthreads = max(1, threads)
        self._threads: list[threading.Thread] = []
        self._seq = 0
        self._busy: dict[int, tuple[int, int]] = {}  # runs queued or being written: seq -> their pages
        self._lock = threading.Condition()
        self._fd_lock = threading.Lock()
        self._error: OSError | None = None
        self.direct_bytes = 0  # how much went around the page cache (for tests and benchmarks)

    # -- caller's side ----------------------------------------------------------------------------

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._raise()
        view = memoryview(data).cast("B")
        while view:
            cur = self._cur
            if cur is None or cur.end != offset:
                self._submit()
                cur = self._cur = _Run(self._buffer(), offset // ALIGN * ALIGN, offset, offset)
            n = min(cur.base + self._size - cur.end, len(view))
            p = cur.end - cur.base
            cur.buf[p:p + n] = view[:n]
            cur.end += n
            offset += n
            view = view[n:]
            if cur.end == cur.base + self._size:  # full, and ends on an aligned offset
                self._submit()

    def flush(self) -> None:
        """Wait until every write made so far is in the file (not yet fsynced); raise the first
        failure."""
        self._submit()
        if self._threads:
            self._todo.join()
        self._raise()

    def reset(self) -> None:
        """Wait for everything queued and forget a failure (before rolling back)."""
        with contextlib.suppress(OSError):
            self.flush()
        self._error = None

    def close(self) -> None:
        """Write out what is pending (failures dropped: nothing unsealed is promised), stop."""
        self.reset()
        for _ in self._threads:
            self._todo.put(None)
        for t in self._threads:
            t.join()
        self._threads = []
        if self._dfd is not None:
            os.close(self._dfd)
            self._dfd = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _buffer(self) -> mmap.mmap:
        if self._made < self._nbuf:
            self._made += 1
            return mmap.mmap(-1, self._size)
        while True:
            try:
                return self._free.get(timeout=1.0)
            except queue.Empty:
                if not any(t.is_alive() for t in self._threads):
                    raise OSError(errno.EIO, "replica writer stopped") from None

    def _submit(self) -> None:
        cur, self._cur = self._cur, None
        if cur is None:
            return
        if cur.end == cur.start:
            self._free.put(cur.buf)
            return
        if not self._threads:
            self._threads = [threading.Thread(target=self._loop, name=f"replica-writer {self._path.name}",
                                              daemon=True) for _ in range(self._nthreads)]
            for t in self._threads:
                t.start()
        self._seq += 1
        cur.seq = self._seq
        with self._lock:  # registered before it is queued: a later run cannot miss it
            self._busy[cur.seq] = cur.pages()
        self._todo.put(cur)

    # -- the writer thread -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            run = self._todo.get()
            if run is None:
                self._todo.task_done()
                return
            self._wait_for_earlier(run)
            try:
                if self._error is None:
                    self._write_run(run)
            except OSError as exc:
                self._error = exc
            finally:
                with self._lock:
                    del self._busy[run.seq]
                    self._lock.notify_all()
                self._free.put(run.buf)
                self._todo.task_done()

    def _wait_for_earlier(self, run: _Run) -> None:
        """Block while a run queued before this one, on any of the same pages, is unwritten."""
        lo, hi = run.pages()

        def clear() -> bool:
            return all(b <= lo or a >= hi for s, (a, b) in self._busy.items() if s < run.seq)

        with self._lock:
            self._lock.wait_for(clear)

    def _direct_fd(self) -> int | None:
        with self._fd_lock:  # two writer threads may get here first together
            if self._dfd is None and self._direct:
                self._dfd = self._open_direct()
            return self._dfd if self._direct else None

    def _open_direct(self) -> int | None:
        try:
            dfd = os.open(self._path, os.O_WRONLY | os.O_DIRECT | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
            self._direct = False  # refused at open: ordinary writes from here on
            return None
        a, b = os.fstat(dfd), os.fstat(self._fd)
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):  # the name was replaced: not ours
            os.close(dfd)
            self._direct = False
            return None
        return dfd

    def _write_run(self, run: _Run) -> None:
        view = memoryview(run.buf)
        lo = -(-run.start // ALIGN) * ALIGN
        hi = run.end // ALIGN * ALIGN
        dfd = self._direct_fd() if hi > lo else None
        if dfd is not None:
            try:
                _pwrite_all(dfd, view[lo - run.base:hi - run.base], lo)
                with self._fd_lock:
                    self.direct_bytes += hi - lo
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                with self._fd_lock:  # refused at a write: the ordinary path, same bytes (the
                    self._direct = False  # descriptor stays open until close: another thread may hold it)
                dfd = None
        if dfd is None:
            _pwrite_all(self._fd, view[run.start - run.base:run.end - run.base], run.start)
            return
        if run.start < lo:
            _pwrite_all(self._fd, view[run.start - run.base:lo - run.base], run.start)
        if hi < run.end:
            _pwrite_all(self._fd, view[hi - run.base:run.end - run.base], hi)
