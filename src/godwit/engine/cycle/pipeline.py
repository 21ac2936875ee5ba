"""The read, hash and compress pipeline of a cycle.

The disk is cut into tasks along the tracker's block runs (at most CHUNK bytes to read, SPAN of
disk); a small thread pool reads each task's CHANGED runs together (``read_many``), hashes and
compresses them (pread, xxhash, blake3 and zstd release the GIL); the
calling thread takes results in order and hands them to the packer. CHANGED runs are read and
hashed, ZERO runs get the known zero digests, UNCHANGED runs get the base's digests (never read).
A block is sent when its digest differs from the base's.

Block digests stream: each task takes its window of the base digests (and of the journaled
blocks) as it is planned, in disk order, and its new digests go to the disk's hash-file writer
as its result is taken. Memory is bounded by the tasks in flight, whatever the disk's size.
"""

from __future__ import annotations

import bisect
import mmap
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import zstandard

from godwit.engine.cycle import buffers
from godwit.engine.cycle.changes import Run, block_runs, readable
from godwit.engine.cycle.digest_runs import Journaled, differs, journaled, subtract
from godwit.engine.cycle.packer import Packer
from godwit.engine.cycle.stats import ProgressFn
from godwit.engine.cycle.work import CHUNK, DIGEST, HOLE_PIECE, ChunkResult, DiskWork
from godwit.format.blockhashes import nonzero_runs
from godwit.format.hashing import Digest, extent_checksum
from godwit.format.pack import CODEC_RAW, CODEC_ZSTD
from godwit.state import hashstore
from godwit.trackers import ChangeTracker, Kind

SAMPLE = 64 << 10  # compressibility sample
SPAN = 256 << 20  # bytes of disk one task may cover (its digests: SPAN / block size * 16 bytes)
SAMPLE_FROM = 256 << 10  # extents at least this long are sampled before being compressed

Task = tuple[DiskWork, int, int, list[Run]]


@dataclass(frozen=True)
class HashTarget:
    """Where this cycle's block-hash files go."""

    hashes_dir: Path
    cycle: int
    algorithm: str


class _Worker:
    """Per-thread state: a zstd compressor (one shared between threads segfaulted: FIELD-NOTES)."""

    def __init__(self, level: int) -> None:
        self.cctx = zstandard.ZstdCompressor(level=level)


class Pipeline:
    def __init__(self, *, tracker: ChangeTracker, bs: int, digest: Digest,
                 compression_level: int, workers: int, progress: ProgressFn | None, hashes: HashTarget) -> None:
        self.tracker = tracker
        self.hashes = hashes
        self.bs = bs
        self.digest = digest
        self.zero_digest = digest(bytes(bs))
        self.level = compression_level
        self.workers = workers
        self.progress = progress
        self._local = threading.local()
        self.t_read = self.t_cpu = 0.0

    def run(self, works: list[DiskWork], packer: Packer, *, reads_done: Callable[[], None] | None = None) -> None:
        """Read every task, in order into the packer; returns when every pack is stored and every
        disk's new hash file is written (not yet published: the commit does that). ``reads_done``
        is called once no source is read any more (the last pack is not stored yet)."""
        # Read buffers travel with their chunk's result until its extents are copied into a pack.
        self._read_bufs: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        nbufs = self.workers * 2 + 1
        for b in buffers.take(CHUNK, nbufs):
            self._read_bufs.put(b)
        h = self.hashes
        try:
            for w in works:
                w.new = hashstore.writer(h.hashes_dir, w.disk.uid, h.cycle, h.algorithm, self.bs, w.size)
            self._run(works, packer, reads_done)
            # Every task is done and its buffer back (a failed run leaves them to the collector).
            buffers.give(self._read_bufs.get() for _ in range(nbufs))
        except BaseException:
            for w in works:
                if w.new is not None:
                    w.new.abort()
            raise
        finally:
            for w in works:
                if w.base is not None:
                    w.base.close()

    def _run(self, works: list[DiskWork], packer: Packer, reads_done: Callable[[], None] | None) -> None:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="godwit-read") as rpool:
            inflight: deque[Future[ChunkResult]] = deque()
            jpos = {id(w): 0 for w in works}
            try:
                for w, off, n, runs in self.tasks(works):
                    first, end = off // self.bs, -(-(off + n) // self.bs)
                    base = w.base.window(first, end) if w.base is not None else None
                    jn, jpos[id(w)] = journaled(w.journaled, jpos[id(w)], first, end)
                    inflight.append(rpool.submit(self._process, w, off, n, runs, base, jn))
                    while len(inflight) >= self.workers * 2:
                        self._take(inflight.popleft().result(), packer)
                while inflight:
                    self._take(inflight.popleft().result(), packer)
                if reads_done is not None:
                    reads_done()
                # The last pack's put and the hash files' fsync are independent: overlap them.
                packer.flush()
                for w in works:
                    assert w.new is not None
                    w.new.finish()
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
        """Tasks of at most CHUNK bytes to read and SPAN bytes of disk, each a list of block-aligned
        runs. Small runs share a task: a disk of 1 MiB data runs between holes, or a bitmap's
        scattered dirty clusters, would otherwise cost one task (and one server round trip) per
        run, and per-task overhead then rivals the read itself. An UNCHANGED gap between reads
        joins the task (it is never read: its digests are the base's); other runs that are not
        read (ZERO, UNCHANGED) of CHUNK or more are tasks of their own."""
        for w in works:
            group: list[Run] = []
            read = 0  # CHANGED bytes in the group: they share one CHUNK buffer
            for off, length, kind in self._runs(w):
                if kind == Kind.UNCHANGED and read and off + length - group[0][0] <= SPAN:
                    group.append((off, length, kind))
                    continue
                if kind != Kind.CHANGED and length >= CHUNK:
                    if group:
                        yield w, group[0][0], group[-1][0] + group[-1][1] - group[0][0], group
                        group, read = [], 0
                    end = off + length
                    while off < end:
                        n = min(HOLE_PIECE, end - off)
                        yield w, off, n, [(off, n, kind)]
                        off += n
                    continue
                end = off + length
                while off < end:
                    room = SPAN - (off - group[0][0]) if group else SPAN
                    if kind == Kind.CHANGED:
                        room = min(room, CHUNK - read)
                    if room <= 0:
                        yield w, group[0][0], group[-1][0] + group[-1][1] - group[0][0], group
                        group, read = [], 0
                        continue
                    n = min(room, end - off)
                    group.append((off, n, kind))
                    read += n if kind == Kind.CHANGED else 0
                    off += n
            if group:
                yield w, group[0][0], group[-1][0] + group[-1][1] - group[0][0], group

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

    def _process(self, w: DiskWork, offset: int, length: int, runs: list[Run], base: bytes | None,
                 jn: Journaled) -> ChunkResult:
        buf = self._read_bufs.get() if any(k == Kind.CHANGED for _, _, k in runs) else None
        try:
            return self._process_in(w, offset, length, runs, base, jn, buf)
        except BaseException:
            if buf is not None:
                self._read_bufs.put(buf)
            raise

    def _digests(self, w: DiskWork, offset: int, subruns: list[Run], slots: list[tuple[int, int, int]],
                 buf: memoryview | None, base: bytes | None) -> tuple[bytes, int, float]:
        """The task's block digests, the bytes read and the seconds spent reading. The CHANGED
        runs are read together (one request each, in flight at once) into their ``slots``."""
        bs = self.bs
        t_read = 0.0
        bytes_read = 0
        if slots:
            assert buf is not None
            t0 = time.perf_counter()
            w.source.read_many([(offset + s, buf[p:p + n]) for s, n, p in slots])
            t_read = time.perf_counter() - t0
            bytes_read = sum(n for _, n, _ in slots)
        parts: list[bytes] = []
        si = 0
        for soff, slen, kind in subruns:  # block-aligned, except a disk's partial last block
            if kind == Kind.CHANGED:
                assert buf is not None
                _, _, p = slots[si]
                si += 1
                smv = buf[p:p + slen]
                parts.append(b"".join([self.digest(smv[i:i + bs]) for i in range(0, slen, bs)]))
            elif kind == Kind.UNCHANGED:  # the base's digests, carried forward (readable() checked them)
                assert base is not None
                g = (soff - offset) // bs
                part = base[g * DIGEST:(g - (-slen // bs)) * DIGEST]
                assert len(part) == -(-slen // bs) * DIGEST
                parts.append(part)
            else:  # a hole reads as zeros: its digests are known without reading
                nb = -(-slen // bs)
                stail = slen - (nb - 1) * bs
                parts.append(self.zero_digest * (nb - 1)
                             + (self.zero_digest if stail == bs else self.digest(bytes(stail))))
        return b"".join(parts), bytes_read, t_read

    def _process_in(self, w: DiskWork, offset: int, length: int, subruns: list[Run], base: bytes | None,
                    jn: Journaled, buf: mmap.mmap | None) -> ChunkResult:
        """``base``: the base digests of the task's blocks (shorter past the base's end, None
        without a base); ``jn``: its journaled blocks, which are not sent again. Only CHANGED runs
        are read, packed one after another in the buffer (``slots``: task-relative start, length,
        buffer position); data to send lies inside them (adjacent CHANGED runs sit adjacent)."""
        bs = self.bs
        first = offset // bs
        nblocks = -(-length // bs)
        t1 = time.perf_counter()
        slots: list[tuple[int, int, int]] = []
        pos = 0
        for soff, slen, kind in subruns:
            if kind == Kind.CHANGED:
                slots.append((soff - offset, slen, pos))
                pos += slen
        assert pos <= CHUNK
        mv = memoryview(buf) if buf is not None else None
        digests, bytes_read, t_read = self._digests(w, offset, subruns, slots, mv, base)
        tail = length - (nblocks - 1) * bs  # bytes in the last block of this task
        tail_zero = self.zero_digest if tail == bs else self.digest(bytes(tail))
        unchanged = base is not None and base == digests
        data: list[tuple[int, int, bytes | memoryview, int, bytes]] = []
        zeros: list[tuple[int, int]] = []
        if not unchanged:
            if mv is None:  # nothing read: every block reads as zeros or as the base
                runs = self._unread_changes(digests, base, nblocks, tail_zero, first, jn)
            else:
                runs = self._changes(digests, base, subruns, offset, nblocks, tail_zero, first, jn)
            starts = [s for s, _, _ in slots]
            for rb, re_, z in runs:
                a, e = rb * bs, min(re_ * bs, length)
                if z:
                    zeros.append((offset + a, e - a))
                    continue
                assert mv is not None
                s, n, p = slots[bisect.bisect_right(starts, a) - 1]
                assert s <= a < s + n
                chunk = mv[p + a - s:p + e - s]
                blob, codec = self._compress(chunk)
                data.append((offset + a, e - a, blob, codec, extent_checksum(chunk)))
        if jn:  # the new hash file holds the journaled digests (the bytes that were sent)
            out = bytearray(digests)
            for f, d in jn:
                out[(f - first) * DIGEST:(f - first) * DIGEST + len(d)] = d
            digests = bytes(out)
        t_cpu = time.perf_counter() - t1 - t_read
        return ChunkResult(w, offset, length, digests, data, zeros, bytes_read, t_read, t_cpu, buf)

    def _changes(self, digests: bytes, base: bytes | None, subruns: list[Run], offset: int, nblocks: int,
                 tail_zero: bytes, first: int, jn: Journaled) -> list[list[int]]:
        """Runs [first block, end block, is_zero] of a read task's blocks to send. UNCHANGED runs
        carry the base's own digests, so only CHANGED and ZERO runs (at most CHUNK of either) are
        looked at, block by block: a loop per block is cheap beside the read."""
        bs = self.bs
        skip = bytearray(nblocks)
        for f, d in jn:
            skip[f - first:f - first + len(d) // DIGEST] = b"\x01" * (len(d) // DIGEST)
        have = 0 if base is None else len(base) // DIGEST
        runs: list[list[int]] = []
        for soff, slen, kind in subruns:
            if kind == Kind.UNCHANGED:
                continue
            for b in range((soff - offset) // bs, -(-(soff - offset + slen) // bs)):
                if skip[b]:
                    continue
                d = digests[b * DIGEST:(b + 1) * DIGEST]
                if b < have and base is not None and base[b * DIGEST:(b + 1) * DIGEST] == d:
                    continue
                z = 1 if d == (tail_zero if b == nblocks - 1 else self.zero_digest) else 0
                if runs and runs[-1][1] == b and runs[-1][2] == z:
                    runs[-1][1] = b + 1
                else:
                    runs.append([b, b + 1, z])
        return runs

    def _unread_changes(self, digests: bytes, base: bytes | None, nblocks: int, tail_zero: bytes, first: int,
                        jn: Journaled) -> list[list[int]]:
        """The zero runs to send of a task that was not read (up to HOLE_PIECE long), found by
        runs rather than block by block: its blocks are ZERO (a zero digest) or UNCHANGED (the
        base's own), so they can differ from the base only where the base is not a zero block."""
        have = 0 if base is None else min(len(base) // DIGEST, nblocks)
        diff: list[tuple[int, int]] = []
        if base is not None and have:
            last = nblocks - 1 if tail_zero != self.zero_digest else nblocks  # a partial last block: alone
            for a, b in nonzero_runs(base, self.zero_digest, 0, min(have, last)):
                diff.extend(differs(digests, base, a, b))
            if last < have:
                diff.extend(differs(digests, base, last, last + 1))
        if have < nblocks:
            diff.append((have, nblocks))  # past the base (or without one): every block is new
        cuts = sorted((f - first, f - first + len(d) // DIGEST) for f, d in jn)
        runs: list[list[int]] = []
        for a, b in diff:
            for x, y in subtract(a, b, cuts):
                if runs and runs[-1][1] == x:
                    runs[-1][1] = y
                else:
                    runs.append([x, y, 1])
        return runs

    def _take(self, r: ChunkResult, packer: Packer) -> None:
        """Fold one chunk's result into the disk's digests and the packer (in order)."""
        self.t_read += r.t_read
        self.t_cpu += r.t_cpu
        w = r.work
        assert w.new is not None
        w.new.add(r.offset // self.bs, r.digests)
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

