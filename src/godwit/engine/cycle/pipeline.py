"""The read, hash and compress pipeline of a cycle.

The disk is cut into tasks of at most CHUNK bytes along the tracker's block runs; a small thread
pool reads, hashes and compresses them (pread, xxhash, blake3 and zstd release the GIL); the
calling thread takes results in order and hands them to the packer. CHANGED runs are read and
hashed, ZERO runs get the known zero digests, UNCHANGED runs get the base's digests (never read).
A block is sent when its digest differs from the base's.
"""

from __future__ import annotations

import mmap
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import zstandard

from godwit.engine.cycle.changes import Run, block_runs, readable
from godwit.engine.cycle.packer import Packer
from godwit.engine.cycle.stats import ProgressFn
from godwit.engine.cycle.work import CHUNK, DIGEST, HOLE_PIECE, ChunkResult, DiskWork
from godwit.format.hashing import Digest, extent_checksum
from godwit.format.pack import CODEC_RAW, CODEC_ZSTD
from godwit.trackers import ChangeTracker, Kind

SAMPLE = 64 << 10  # compressibility sample
SAMPLE_FROM = 256 << 10  # extents at least this long are sampled before being compressed

Task = tuple[DiskWork, int, int, list[Run]]


class _Worker:
    """Per-thread state: a zstd compressor (one shared between threads segfaulted: FIELD-NOTES)."""

    def __init__(self, level: int) -> None:
        self.cctx = zstandard.ZstdCompressor(level=level)


class Pipeline:
    def __init__(self, *, tracker: ChangeTracker, bs: int, digest: Digest,
                 compression_level: int, workers: int, progress: ProgressFn | None) -> None:
        self.tracker = tracker
        self.bs = bs
        self.digest = digest
        self.zero_digest = digest(bytes(bs))
        self.level = compression_level
        self.workers = workers
        self.progress = progress
        self._local = threading.local()
        self.t_read = self.t_cpu = 0.0

    def run(self, works: list[DiskWork], packer: Packer) -> None:
        """Read every task, in order into the packer; returns when every pack is stored."""
        # Read buffers travel with their chunk's result until its extents are copied into a pack.
        self._read_bufs: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(self.workers * 2 + 1):
            self._read_bufs.put(mmap.mmap(-1, CHUNK))
        with ThreadPoolExecutor(self.workers, thread_name_prefix="godwit-read") as rpool:
            inflight: deque[Future[ChunkResult]] = deque()
            try:
                for task in self.tasks(works):
                    inflight.append(rpool.submit(self._process, *task))
                    while len(inflight) >= self.workers * 2:
                        self._take(inflight.popleft().result(), packer)
                while inflight:
                    self._take(inflight.popleft().result(), packer)
                packer.finish()
            except BaseException:
                for fr in inflight:
                    fr.cancel()
                packer.cancel()
                raise

    def _runs(self, w: DiskWork) -> Iterator[Run]:
        regions = self.tracker.regions(w.tracked, w.source, w.base_cycle)
        return readable(block_runs(regions, w.size, self.bs, self.tracker.name), w, self.bs)

    def tasks(self, works: list[DiskWork]) -> Iterator[Task]:
        """Tasks of at most CHUNK bytes of disk, each a list of block-aligned runs. Small runs share
        a task: a disk of 1 MiB data runs between holes would otherwise cost one task per run, and
        per-task overhead then rivals the read itself. Runs that are not read (ZERO, UNCHANGED)
        of CHUNK or more are tasks of their own."""
        for w in works:
            group: list[Run] = []
            for off, length, kind in self._runs(w):
                if kind != Kind.CHANGED and length >= CHUNK:
                    if group:
                        yield w, group[0][0], sum(n for _, n, _ in group), group
                        group = []
                    end = off + length
                    while off < end:
                        n = min(HOLE_PIECE, end - off)
                        yield w, off, n, [(off, n, kind)]
                        off += n
                    continue
                end = off + length
                while off < end:
                    room = CHUNK - (off - group[0][0]) if group else CHUNK
                    if room <= 0:
                        yield w, group[0][0], sum(n for _, n, _ in group), group
                        group = []
                        continue
                    n = min(room, end - off)
                    group.append((off, n, kind))
                    off += n
            if group:
                yield w, group[0][0], sum(n for _, n, _ in group), group

    def _compress(self, chunk: memoryview) -> tuple[bytes | memoryview, int]:
        """zstd when it pays; otherwise the bytes themselves (by reference, no copy)."""
        wk: _Worker | None = getattr(self._local, "w", None)
        if wk is None:
            wk = self._local.w = _Worker(self.level)
        cctx = wk.cctx
        if len(chunk) >= SAMPLE_FROM:
            # Random data (encrypted volumes, media, compressed files) does not shrink: a sample
            # says so for a fraction of the cost of compressing the whole extent.
            sample = cctx.compress(chunk[:SAMPLE])
            if len(sample) >= SAMPLE * 0.97:
                return chunk, CODEC_RAW
        blob = cctx.compress(chunk)
        if len(blob) >= len(chunk):
            return chunk, CODEC_RAW
        return blob, CODEC_ZSTD

    def _process(self, w: DiskWork, offset: int, length: int, runs: list[Run]) -> ChunkResult:
        buf = self._read_bufs.get() if any(k == Kind.CHANGED for _, _, k in runs) else None
        try:
            return self._process_in(w, offset, length, runs, buf)
        except BaseException:
            if buf is not None:
                self._read_bufs.put(buf)
            raise

    def _digests(self, w: DiskWork, offset: int, subruns: list[Run], mv: memoryview | None
                 ) -> tuple[bytes, int, float]:
        """The task's block digests, the bytes read and the seconds spent reading."""
        bs = self.bs
        t_read = 0.0
        bytes_read = 0
        parts: list[bytes] = []
        for soff, slen, kind in subruns:  # block-aligned, except a disk's partial last block
            if kind == Kind.CHANGED:
                assert mv is not None
                smv = mv[soff - offset:soff - offset + slen]
                t0 = time.perf_counter()
                w.source.read_into(soff, smv)
                t_read += time.perf_counter() - t0
                bytes_read += slen
                parts.append(b"".join([self.digest(smv[i:i + bs]) for i in range(0, slen, bs)]))
            elif kind == Kind.UNCHANGED:  # the base's digests, carried forward (readable() checked them)
                assert w.base is not None
                g = soff // bs
                parts.append(w.base[g * DIGEST:(g - (-slen // bs)) * DIGEST])
            else:  # a hole reads as zeros: its digests are known without reading
                nb = -(-slen // bs)
                stail = slen - (nb - 1) * bs
                parts.append(self.zero_digest * (nb - 1)
                             + (self.zero_digest if stail == bs else self.digest(bytes(stail))))
        return b"".join(parts), bytes_read, t_read

    def _process_in(self, w: DiskWork, offset: int, length: int, subruns: list[Run],
                    buf: mmap.mmap | None) -> ChunkResult:
        bs = self.bs
        first = offset // bs
        nblocks = -(-length // bs)
        t1 = time.perf_counter()
        mv = memoryview(buf)[:length] if buf is not None else None
        digests, bytes_read, t_read = self._digests(w, offset, subruns, mv)
        tail = length - (nblocks - 1) * bs  # bytes in the last block of this task
        tail_zero = self.zero_digest if tail == bs else self.digest(bytes(tail))
        base = w.base
        lo, hi = first * DIGEST, (first + nblocks) * DIGEST
        skip = w.skip
        unchanged = base is not None and len(base) >= hi and base[lo:hi] == digests
        data: list[tuple[int, int, bytes | memoryview, int, bytes]] = []
        zeros: list[tuple[int, int]] = []
        if not unchanged:
            runs: list[list[int]] = []  # [first block, end block, is_zero]
            for b in range(nblocks):
                g = first + b
                if skip is not None and skip[g]:
                    continue
                d = digests[b * DIGEST:(b + 1) * DIGEST]
                if base is not None and len(base) >= (g + 1) * DIGEST and base[g * DIGEST:(g + 1) * DIGEST] == d:
                    continue
                z = 1 if d == (tail_zero if b == nblocks - 1 else self.zero_digest) else 0
                if runs and runs[-1][1] == b and runs[-1][2] == z:
                    runs[-1][1] = b + 1
                else:
                    runs.append([b, b + 1, z])
            for rb, re_, z in runs:
                a, e = rb * bs, min(re_ * bs, length)
                if z:
                    zeros.append((offset + a, e - a))
                    continue
                assert mv is not None
                chunk = mv[a:e]
                blob, codec = self._compress(chunk)
                data.append((offset + a, e - a, blob, codec, extent_checksum(chunk)))
        t_cpu = time.perf_counter() - t1 - t_read
        return ChunkResult(w, offset, length, digests, data, zeros, bytes_read, t_read, t_cpu, buf)

    def _take(self, r: ChunkResult, packer: Packer) -> None:
        """Fold one chunk's result into the disk's digests and the packer (in order)."""
        self.t_read += r.t_read
        self.t_cpu += r.t_cpu
        w = r.work
        first = r.offset // self.bs
        nblocks = len(r.digests) // DIGEST
        lo = first * DIGEST
        if w.skip is None:
            w.new[lo:lo + len(r.digests)] = r.digests
        else:  # keep the journaled digests of blocks already sent
            for b in range(nblocks):
                if not w.skip[first + b]:
                    w.new[lo + b * DIGEST:lo + (b + 1) * DIGEST] = r.digests[b * DIGEST:(b + 1) * DIGEST]
        w.zeros.extend(r.zeros)
        w.bytes_read += r.bytes_read
        try:
            packer.take(r)
        finally:
            r.data.clear()  # drop views into the read buffer before it is reused
            if r.buf is not None:
                self._read_bufs.put(r.buf)
        w.done += r.length
        if self.progress is not None:
            self.progress(w.disk.idx, w.done, w.size)
