"""qcow2, VMDK, VHD (qemu's ``vpc``) and VHDX images, read through ``qemu-nbd`` with libnbd.

This module is the client: opening (which picks the point-in-time view), reads and block status.
The helper process is run by :mod:`godwit.sources.qemu_nbd`; qcow2 snapshots are made by
:mod:`godwit.sources.qcow2_snapshot`.

Reads use a small pool of connections (one request in flight per connection, so threads never
wait on each other's handle) and are copied into the caller's buffer (``pread``): ``aio_pread``
into ``nbd.Buffer.from_buffer`` would spare the copy, but libnbd 1.14's binding never releases the
caller's buffer, so every cycle's read buffers leaked (20 MiB a cycle, found by bench/appliance.py;
a copy of 4 MiB costs well under a millisecond beside qemu-nbd). Measured here with aio_pread on a
warm 1 GiB qcow2: ~1.0–1.2 GB/s from one thread, ~1.3–1.5 GB/s from two; qemu-nbd is the bottleneck
(~0.8 CPU-second per GiB, single-threaded). Requests of 1–32 MiB performed alike; 4 MiB stays
friendly to CPU caches.
``read_many`` (a bitmap cycle's scattered dirty clusters) keeps up to ``AIO_DEPTH`` small reads in
flight on one handle with ``aio_pread``, into buffers that live as long as the process. What leaks
in libnbd 1.14 is one reference to the buffer object per ``aio_pread`` (measured here:
``sys.getrefcount`` of its bytearray grows by one a request): a buffer made for one request is
never freed (its whole size lost), and so is a new ``Buffer.from_buffer`` wrapper (a memoryview,
~200 bytes) around reused memory. A buffer made once and reused only gains references, no
memory: 300,000 requests, RSS flat to the 0.1 MB (tests/integration/test_nbd_aio.py checks it). So
the few ``AIO_SIZE`` buffers of ``_aio_buffers`` are made once per process, and each read is
copied from one into the caller's buffer (64 KiB: microseconds). In flight, 327 scattered 64 KiB
reads on the fleecing export take a fraction of one-by-one ``pread``s inside a cycle, where each
``pread``'s return also waits for the GIL behind the packing and hashing threads (convoy). Larger
pieces (scan's 4 MiB runs) keep the one-by-one ``pread`` of a full request.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from godwit.errors import SourceError
from godwit.sources.base import DiskSource, Extent
from godwit.sources.file import open_for_writing_elsewhere
from godwit.sources.qcow2_snapshot import SNAPSHOT_PREFIX, create_snapshot
from godwit.sources.qemu_nbd import ALLOCATION, NbdServer
from godwit.sources.safe_open import open_readonly

__all__ = ["SNAPSHOT_PREFIX", "NbdSource"]

STATE_ZERO = 2  # NBD_STATE_ZERO: the run reads as zeros (NBD_STATE_HOLE alone does not promise it)
REQUEST_MAX = 4 << 20
BLOCK_STATUS_MAX = 1 << 30  # one block_status request; the protocol allows < 4 GiB
CONNECTIONS = 2
AIO_SIZE = 64 << 10  # a read in flight (read_many): a piece of up to AIO_PIECE_MAX is cut in these
AIO_PIECE_MAX = 256 << 10
AIO_DEPTH = 16  # reads in flight on one handle


class _AioBuffers:
    """AIO_SIZE buffers for ``aio_pread`` that are never freed: libnbd 1.14 keeps a reference to
    every buffer it was given (module docstring), so each is made once and reused. At most
    AIO_DEPTH per ``read_many`` running at once: a handful of MiB for the whole process."""

    def __init__(self) -> None:
        self._free: queue.SimpleQueue[tuple[Any, bytearray]] = queue.SimpleQueue()
        self.made = 0

    def take(self, nbd: Any, n: int) -> list[tuple[Any, bytearray]]:
        out: list[tuple[Any, bytearray]] = []
        while len(out) < n:
            try:
                out.append(self._free.get_nowait())
            except queue.Empty:
                mem = bytearray(AIO_SIZE)
                out.append((nbd.Buffer.from_buffer(mem), mem))
                self.made += 1
        return out

    def give(self, bufs: list[tuple[Any, bytearray]]) -> None:
        for b in bufs:
            self._free.put(b)


_aio_buffers = _AioBuffers()


def _import_nbd() -> Any:
    try:
        import nbd
    except ImportError:
        return None
    return nbd


class NbdSource(DiskSource):
    """A disk image read through qemu-nbd. Open with :meth:`for_image`."""

    def __init__(self, path: Path, fmt: str, server: NbdServer, nbd: Any, *,
                 consistency: str, warnings: list[str]) -> None:
        super().__init__()
        self.path = path
        self.fmt = fmt
        self.description = str(path)
        self.consistency = consistency
        self.warnings.extend(warnings)
        self._nbd = nbd
        self._server = server
        first = server.handles[0]
        self.size = int(first.get_size())
        max_block = int(first.get_block_size(nbd.SIZE_MAXIMUM)) or 32 << 20
        # Requests must be multiples of the server's minimum block (libnbd refuses others).
        self._align = max(1, int(first.get_block_size(nbd.SIZE_MINIMUM)))
        self._request = max(self._align, min(REQUEST_MAX, max_block) // self._align * self._align)
        self._has_allocation = bool(first.can_meta_context(ALLOCATION))
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for h in server.handles:
            self._pool.put(h)
        self._closed = False
        self._close_lock = threading.Lock()
        self._finalizer = weakref.finalize(self, server.release)

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def for_image(cls, path: Path, fmt: str, *, snapshot: bool, temp_tag: str | None = None,
                  connections: int = CONNECTIONS) -> NbdSource:
        """Export ``path`` (in qemu format ``fmt``) with qemu-nbd and connect to it.

        With ``snapshot`` a qcow2 image that no one else writes is read from an internal snapshot
        (``consistency == "crash"``); otherwise the live image is read (``"none"``) and
        ``warnings`` says why. ``temp_tag`` names the snapshot and socket (see temp_names).
        """
        path = Path(path)
        nbd = _import_nbd()
        if nbd is None:
            raise SourceError(f"disk {path}: cannot read {fmt} images, the libnbd Python binding is missing",
                              hint="install python3-libnbd and run `make` (tools/link_libnbd.py) "
                                   "to link it into godwit's venv")
        if shutil.which("qemu-nbd") is None:
            raise SourceError(f"disk {path}: cannot read {fmt} images, qemu-nbd is not installed",
                              hint="install qemu-utils (Debian/Ubuntu) or qemu-img (RHEL/Fedora)")
        fd = open_readonly(path)  # a regular file or block device, never a link or FIFO
        try:
            in_use = open_for_writing_elsewhere(fd) is True
        finally:
            os.close(fd)

        server = NbdServer(path, fmt, temp_tag=temp_tag)
        warnings: list[str] = []
        consistency = "none"
        try:
            if snapshot and fmt == "qcow2":
                if in_use:
                    warnings.append(f"{path} is open for writing by another process: no snapshot taken, "
                                    "the cycle reads the live image (consistency none)")
                else:
                    server.snapshot, why = create_snapshot(path, temp_tag, warnings)
                    if server.snapshot is not None:
                        consistency = "crash"
                    else:
                        warnings.append(f"{path}: no snapshot taken ({why}): the cycle reads the live "
                                        "image (consistency none)")
            elif snapshot:
                warnings.append(f"{path}: {fmt} images have no snapshots godwit can take: the cycle reads "
                                "the live image (consistency none)")
            elif in_use:
                warnings.append(f"{path} is open for writing by another process: the cycle is not "
                                "point-in-time (consistency none)")
            server.start(nbd, max(1, connections))
            return cls(path, fmt, server, nbd, consistency=consistency, warnings=warnings)
        except BaseException:
            server.release()
            raise

    # -- reading ------------------------------------------------------------------------------

    def _check_range(self, offset: int, length: int) -> None:
        if self._closed:
            raise SourceError(f"{self.description} is closed")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SourceError(f"read past the end of {self.description} "
                              f"(offset {offset}, length {length}, size {self.size})")

    def _acquire(self) -> Any:
        h = self._pool.get()
        if h is None:  # closed while we waited
            self._pool.put(None)
            raise SourceError(f"{self.description} is closed")
        return h

    def _error(self, what: str, exc: Exception) -> SourceError:
        detail = getattr(exc, "string", None) or str(exc)
        server_said = self._server.stderr_line()
        if server_said:
            detail = f"{detail}; {server_said}"
        return SourceError(f"{what} {self.description} failed: {detail}",
                           hint="the qemu-nbd helper failed or the image is damaged; "
                                f"check it with `qemu-img check -U {self.path}`")

    def read_into(self, offset: int, buf: memoryview) -> None:
        length = len(buf)
        self._check_range(offset, length)
        end = offset + length
        a = self._align
        lo, hi = offset + (-offset % a), end - end % a  # the aligned middle of the range
        h = self._acquire()
        try:
            if lo >= hi:  # within one or two server blocks
                self._bounce(h, offset, buf)
            else:
                if lo > offset:
                    self._bounce(h, offset, buf[:lo - offset])
                self._pread(h, lo, buf[lo - offset:hi - offset])
                if hi < end:
                    self._bounce(h, hi, buf[hi - offset:])
        except self._nbd.Error as exc:
            raise self._error(f"reading {length} bytes at offset {offset} of", exc) from None
        finally:
            self._pool.put(h)

    def read_many(self, pieces: Sequence[tuple[int, memoryview]]) -> None:
        """Read every piece on one handle (one pool round trip for a task's scattered runs); an
        unaligned piece (a disk's partial last block on a server with a larger minimum block) goes
        through the bounce path. Sequential ``pread``s: see the module's docstring for why not aio."""
        a = self._align
        aligned: list[tuple[int, memoryview]] = []
        for offset, buf in pieces:
            self._check_range(offset, len(buf))
            if offset % a or len(buf) % a:
                self.read_into(offset, buf)
            else:
                aligned.append((offset, buf))
        if not aligned:
            return
        small: list[tuple[int, memoryview]] = []  # AIO_SIZE reads, kept in flight together
        large: list[tuple[int, memoryview]] = []
        for offset, buf in aligned:
            if len(buf) <= AIO_PIECE_MAX and len(buf) % AIO_SIZE == 0:
                small += [(offset + i, buf[i:i + AIO_SIZE]) for i in range(0, len(buf), AIO_SIZE)]
            else:
                large.append((offset, buf))
        if len(small) == 1:
            large += small
            small = []
        h = self._acquire()
        try:
            if small:
                self._aio_read(h, small)
            for offset, buf in large:
                self._pread(h, offset, buf)
        except self._nbd.Error as exc:
            raise self._error(f"reading {len(aligned)} pieces near offset {aligned[0][0]} of", exc) from None
        finally:
            self._pool.put(h)

    def _aio_read(self, h: Any, reqs: list[tuple[int, memoryview]]) -> None:
        """Read AIO_SIZE pieces with up to AIO_DEPTH in flight on ``h``, each through a buffer of
        ``_aio_buffers`` then copied into its place. The buffers go back once nothing is in
        flight; if a broken connection leaves some in flight they are dropped (libnbd may still
        own them), never reused."""
        bufs = _aio_buffers.take(self._nbd, min(AIO_DEPTH, len(reqs)))
        free = list(range(len(bufs)))
        flight: dict[int, tuple[int, memoryview]] = {}  # cookie -> (buffer index, destination)
        i = 0
        try:
            while i < len(reqs) or flight:
                while free and i < len(reqs):
                    k = free.pop()
                    offset, dest = reqs[i]
                    i += 1
                    flight[h.aio_pread(bufs[k][0], offset)] = (k, dest)
                done = h.aio_peek_command_completed()
                if not done:
                    h.poll(-1)  # waits for the server without the GIL
                    continue
                h.aio_command_completed(done)  # raises the command's error
                k, dest = flight.pop(done)
                dest[:] = bufs[k][1]
                free.append(k)
        finally:
            if flight:  # an error: let what is in flight finish before the buffers are reused
                with contextlib.suppress(Exception):
                    while h.aio_in_flight() > 0:
                        h.poll(1000)
                        while c := h.aio_peek_command_completed():
                            with contextlib.suppress(Exception):
                                h.aio_command_completed(c)
            with contextlib.suppress(Exception):
                if not h.aio_in_flight():
                    flight.clear()
            if not flight:
                _aio_buffers.give(bufs)

    def _pread(self, h: Any, offset: int, buf: memoryview) -> None:
        """Read an aligned range into ``buf`` (pread and a copy: see the module's docstring)."""
        done, length = 0, len(buf)
        while done < length:
            n = min(self._request, length - done)
            buf[done:done + n] = h.pread(n, offset + done)
            done += n

    def _bounce(self, h: Any, offset: int, buf: memoryview) -> None:
        """Read an unaligned piece through whole server blocks (VHDX serves 512-byte sectors)."""
        if not buf:
            return
        a = self._align
        start = offset - offset % a
        stop = min(self.size, offset + len(buf) + (-(offset + len(buf)) % a))
        tmp = bytearray(stop - start)
        self._pread(h, start, memoryview(tmp))
        buf[:] = tmp[offset - start:offset - start + len(buf)]

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        self._check_range(offset, length)
        if not self._has_allocation:
            if length:
                yield Extent(offset, length, True)
            return
        end = offset + length
        pos = offset
        pending: Extent | None = None  # adjacent runs of one kind are merged
        while pos < end:
            runs = self._block_status(pos, min(end - pos, BLOCK_STATUS_MAX))
            if not runs:  # the server said nothing: read the rest
                runs = [(end - pos, 0)]
            for run_length, flags in runs:
                n = min(run_length, end - pos)
                if n <= 0:
                    break
                is_data = not flags & STATE_ZERO
                if pending is not None and pending.is_data == is_data:
                    pending = Extent(pending.offset, pending.length + n, is_data)
                else:
                    if pending is not None:
                        yield pending
                    pending = Extent(pos, n, is_data)
                pos += n
        if pending is not None:
            yield pending

    def _block_status(self, offset: int, count: int) -> list[tuple[int, int]]:
        nbd = self._nbd
        entries: list[int] = []

        def collect(metacontext: str, _offset: int, found: list[int], _err: object) -> int:
            if metacontext == ALLOCATION:
                entries.extend(found)
            return 0

        # Ask for whole server blocks; the first run then starts up to align-1 bytes early.
        a = self._align
        skip = offset % a
        start = offset - skip
        count = min(self.size - start, count + skip + (-(count + skip) % a))
        h = self._acquire()  # released before yielding: the caller may pause between extents
        try:
            h.block_status(count, start, collect)
        except nbd.Error as exc:
            raise self._error(f"block status at offset {offset} of", exc) from None
        finally:
            self._pool.put(h)
        runs = [(entries[i], entries[i + 1]) for i in range(0, len(entries) - 1, 2)]
        while runs and skip:  # drop what lies before ``offset``
            n, flags = runs[0]
            if n > skip:
                runs[0] = (n - skip, flags)
                break
            runs.pop(0)
            skip -= n
        return runs

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(queue.Empty):
                while True:
                    self._pool.get_nowait()
            for _ in self._server.handles:  # wakes any thread still waiting for a connection
                self._pool.put(None)
            # weakref.finalize runs its function at most once, also at interpreter exit.
            self.warnings.extend(self._finalizer() or [])

    def __enter__(self) -> NbdSource:
        return self

    @property
    def server_pid(self) -> int | None:
        """The qemu-nbd process id while open (for tests and diagnostics)."""
        proc = self._server.proc
        return proc.pid if proc is not None else None

    @property
    def snapshot_name(self) -> str | None:
        return self._server.snapshot
