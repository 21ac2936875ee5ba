"""Running one cycle of one server: read, find changes, pack, upload, commit.

The shape (docs/architecture.md, "A cycle"): the disk is cut into block-aligned chunks; a small
thread pool reads, hashes and compresses chunks (pread, xxhash, blake3 and zstd release the GIL);
the calling thread takes results in order and fills packs; an upload pool puts packs and journals
each one. The manifest is put last, with a conditional create: a cycle without a manifest does
not exist. An open cycle found at start (the process died) is resumed: its journaled packs are
not sent again.
"""

from __future__ import annotations

import logging
import mmap
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import zstandard
from sqlalchemy import select

from godwit.errors import CorruptObjectError, GodwitError, ObjectExistsError, ObjectMissingError, SourceError
from godwit.format import blockhashes, journal, manifest
from godwit.format.hashing import block_digest, extent_checksum
from godwit.format.keys import manifest_key, pack_key
from godwit.format.pack import CODEC_RAW, CODEC_ZSTD, ENTRY, TRAILER, PackBuilder
from godwit.project.project import Project
from godwit.sources import DiskSource, open_source
from godwit.state import hashstore
from godwit.state import schema as t
from godwit.state.db import Cycle, Disk, Server
from godwit.state.locks import server_lock

log = logging.getLogger("godwit.cycle")

CHUNK = 4 << 20
SAMPLE = 64 << 10  # compressibility sample
SAMPLE_FROM = 256 << 10  # extents at least this long are sampled before being compressed
DIGEST = 16
HOLE_PIECE = 1 << 30

ProgressFn = Callable[[int, int, int], None]  # disk index, bytes done, bytes total


@dataclass
class DiskWork:
    disk: Disk
    source: DiskSource
    size: int
    previous_size: int
    base: bytes | None  # digests as of the parent cycle; None means send everything
    new: bytearray
    skip: bytearray | None = None  # 1 for blocks already sent in a journaled pack
    zeros: list[tuple[int, int]] = field(default_factory=list)
    extents: list[manifest.Extent] = field(default_factory=list)
    bytes_read: int = 0
    bytes_changed: int = 0
    bytes_sent: int = 0
    done: int = 0


@dataclass
class ChunkResult:
    work: DiskWork
    offset: int
    length: int
    digests: bytes
    data: list[tuple[int, int, bytes | memoryview, int, bytes]]  # offset, length, blob, codec, checksum
    zeros: list[tuple[int, int]]
    bytes_read: int
    t_read: float
    t_cpu: float
    buf: mmap.mmap | None = None  # the read buffer raw blobs point into; back to the pool after _take


@dataclass
class CycleResult:
    server: str
    number: int
    kind: str
    consistency: str
    resumed: bool
    packs_uploaded: int
    packs_reused: int
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    t_read: float
    t_cpu: float
    t_upload: float
    t_throttle: float
    t_wall: float
    warnings: list[str]
    disks: list[dict[str, int]]

    @property
    def bottleneck(self) -> str:
        return bottleneck(self.t_read, self.t_cpu, self.t_upload, self.t_throttle)


def bottleneck(t_read: float, t_cpu: float, t_upload: float, t_throttle: float) -> str:
    stages = {"source": t_read, "cpu": t_cpu, "store": t_upload - t_throttle, "throttle": t_throttle}
    name, value = max(stages.items(), key=lambda kv: kv[1])
    return name if value > 0 else "none"


def block_runs(source: DiskSource, size: int, bs: int) -> Iterator[tuple[int, int, bool]]:
    """Block-aligned (offset, length, is_data) runs covering the disk; a block with any data is data."""
    runs: list[list[int]] = []  # [first_block, end_block) of data
    for ext in source.extents(0, size):
        if not ext.is_data or ext.length == 0:
            continue
        first, end = ext.offset // bs, -(-(ext.offset + ext.length) // bs)
        if runs and first <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([first, end])
    pos = 0
    for first, end in runs:
        if first * bs > pos:
            yield pos, first * bs - pos, False
        stop = min(end * bs, size)
        yield first * bs, stop - first * bs, True
        pos = stop
    if pos < size:
        yield pos, size - pos, False


class _Worker:
    """Per-thread state: a zstd compressor (one shared between threads segfaulted: FIELD-NOTES)."""

    def __init__(self, level: int) -> None:
        self.cctx = zstandard.ZstdCompressor(level=level)


class CycleRunner:
    def __init__(self, project: Project, server: Server, *, progress: ProgressFn | None = None,
                 workers: int = 2) -> None:
        self.project = project
        self.server = server
        self.cfg = project.config
        self.bs = self.cfg.replication.block_size
        self.digest = block_digest(self.cfg.replication.hash)
        self.zero_digest = self.digest(bytes(self.bs))
        self.progress = progress
        self.workers = workers
        self._local = threading.local()
        self._lock = threading.Lock()
        self.t_upload = 0.0
        self._held0 = 0.0
        self.packs_uploaded = 0

    # -- entry point -------------------------------------------------------------------------

    def run(self, kind: str = "delta") -> CycleResult:
        # Waits out the mover's short orphan collection; a cycle in another process still refuses.
        with server_lock(self.project.state_dir, self.server.name, "cycle", wait=30):
            return self._run(kind)

    def _run(self, kind: str) -> CycleResult:
        db = self.project.db
        store_id = self.project.store_id()
        started = time.perf_counter()
        open_cycles = db.cycles(self.server.id, ("open",))
        committed = db.cycles(self.server.id, ("committed", "applied"))
        resumed = bool(open_cycles)
        if resumed:
            cyc = open_cycles[0]
            if self._finish_if_manifest_exists(cyc):
                return self._result(db.cycle(self.server.id, cyc.number), resumed=True, warnings=[],
                                    works=[], reused=0)
        else:
            number = (max(c.number for c in db.cycles(self.server.id)) + 1) if db.cycles(self.server.id) else 1
            if not committed:
                kind = "initial"
            with db.tx() as c:
                c.execute(t.cycles.insert().values(server_id=self.server.id, number=number, kind=kind,
                                                   state="open", started=time.time()))
            cyc = db.cycle(self.server.id, number)
        parent = committed[-1].number if committed else None
        disks = db.disks(self.server.id)
        sources: list[DiskSource] = []
        warnings: list[str] = []
        try:
            for d in disks:
                sources.append(open_source(Path(d.spec), d.format, snapshot_dir=self.project.snapshots_dir))
            works = [self._prepare(d, s, parent, warnings) for d, s in zip(disks, sources, strict=True)]
            reused = self._apply_journal(cyc, works)
            log.info("%s cycle %d (%s): %s, %d disk(s), %d journaled pack(s) reused", self.server.name, cyc.number,
                     cyc.kind, "resuming" if resumed else "starting", len(works), reused)
            consistency = "crash" if all(s.consistency == "crash" for s in sources) else "none"
            if reused and consistency == "crash":
                # Journaled packs were read from the dead run's snapshot, the rest from a new one.
                consistency = "none"
                warnings.append("this cycle resumes an interrupted one: its data comes from two snapshots, "
                                "so it is not point-in-time (consistency none); the next cycle will be")
            t_read, t_cpu = self._scan_and_upload(cyc, works)
        finally:
            for s in sources:
                s.close()
            for s in sources:  # after close: releasing a snapshot can warn too
                warnings.extend(s.warnings)
            for w in warnings:
                db.event("warning", w, server=self.server.name, cycle=cyc.number)
        self._commit(cyc, works, parent, consistency, store_id, t_read, t_cpu, started)
        return self._result(db.cycle(self.server.id, cyc.number), resumed=resumed, warnings=warnings,
                            works=works, reused=reused)

    # -- preparation -------------------------------------------------------------------------

    def _prepare(self, disk: Disk, source: DiskSource, parent: int | None, warnings: list[str]) -> DiskWork:
        size = source.size
        db = self.project.db
        if size < disk.size and parent is not None:
            msg = (f"disk {disk.idx} ({disk.spec}) shrank from {disk.size} to {size} bytes; "
                   "replication is paused for this server")
            db.set_disk(disk.id, state="error", error=msg)
            db.set_server_state(self.server.id, "paused", msg)
            db.event("error", msg, server=self.server.name, disk=disk.idx)
            raise SourceError(msg, hint="restore the disk's size (godwit never truncates a replica), "
                                        f"or remove and re-add server {self.server.name}")
        if size > disk.size and parent is not None:
            note = f"disk {disk.idx} grew from {disk.size} to {size} bytes; the new size is replicated"
            warnings.append(note)
        base: bytes | None = None
        previous_size = disk.size if parent is not None else 0
        if parent is not None:
            loaded = hashstore.load(self.project.hashes_dir, disk.uid, parent, self.cfg.replication.hash, self.bs)
            if loaded is None:
                warnings.append(f"disk {disk.idx}: block hashes of cycle {parent} are missing or made with "
                                "other settings; this cycle resends the whole disk")
            else:
                previous_size, digests = loaded
                forced = hashstore.load_forced(self.project.hashes_dir, disk.uid)
                if forced and forced.get("all"):
                    warnings.append(f"disk {disk.idx}: resync asked for the whole disk; this cycle resends it")
                else:
                    for off, n in (forced or {}).get("ranges", []):
                        # A digest no block has: these blocks count as changed.
                        lo, hi = off // self.bs, min(-(-(off + n) // self.bs), len(digests) // DIGEST)
                        digests[lo * DIGEST:hi * DIGEST] = b"\xff" * (DIGEST * max(0, hi - lo))
                    base = bytes(digests)
        nblocks = blockhashes.block_count(size, self.bs)
        return DiskWork(disk, source, size, previous_size, base, bytearray(nblocks * DIGEST))

    def _apply_journal(self, cyc: Cycle, works: list[DiskWork]) -> int:
        """Mark blocks of journaled packs as sent; returns how many packs are reused.

        An extent that no longer fits the disk as it is now (the disk grew past an unaligned end,
        or a disk is gone) is not reused: its blocks are read and sent again.
        """
        with self.project.db.tx() as c:
            rows = c.execute(select(t.journal).where(t.journal.c.cycle_id == cyc.id)).all()
        by_idx = {w.disk.idx: w for w in works}
        used = 0
        for row in rows:
            took = False
            for je in journal.decode(row.payload):
                e = je.entry
                w = by_idx.get(e.disk)
                end = e.offset + e.length
                if e.offset % self.bs:
                    raise CorruptObjectError(f"resume journal of cycle {cyc.number} has an unaligned extent",
                                             hint=f"run `godwit replicate resync {self.server.name}`")
                if w is None or end > w.size or (end % self.bs and end != w.size):
                    continue
                if w.skip is None:
                    w.skip = bytearray(len(w.new) // DIGEST)
                first = e.offset // self.bs
                n = len(je.digests) // DIGEST
                w.skip[first:first + n] = b"\x01" * n
                w.new[first * DIGEST:(first + n) * DIGEST] = je.digests
                w.extents.append(manifest.Extent(e.offset, e.length, row.pack_id, e.pos, e.stored, e.codec,
                                                 e.checksum))
                w.bytes_changed += e.length
                took = True
            used += took
        return used

    # -- the pipeline ------------------------------------------------------------------------

    def _tasks(self, works: list[DiskWork]) -> Iterator[tuple[DiskWork, int, int, list[tuple[int, int, bool]]]]:
        """Tasks of at most CHUNK bytes of disk, each a list of block-aligned (offset, length,
        is_data) runs. Small runs share a task: a disk of 1 MiB data runs between holes would
        otherwise cost one task per run, and per-task overhead then rivals the read itself.
        Holes of CHUNK or more are tasks of their own and are never read."""
        for w in works:
            group: list[tuple[int, int, bool]] = []
            for off, length, is_data in block_runs(w.source, w.size, self.bs):
                if not is_data and length >= CHUNK:
                    if group:
                        yield w, group[0][0], sum(n for _, n, _ in group), group
                        group = []
                    end = off + length
                    while off < end:
                        n = min(HOLE_PIECE, end - off)
                        yield w, off, n, [(off, n, False)]
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
                    group.append((off, n, is_data))
                    off += n
            if group:
                yield w, group[0][0], sum(n for _, n, _ in group), group

    def _worker(self) -> _Worker:
        wk: _Worker | None = getattr(self._local, "w", None)
        if wk is None:
            wk = _Worker(self.cfg.replication.compression_level)
            self._local.w = wk
        return wk

    def _compress(self, chunk: memoryview) -> tuple[bytes | memoryview, int]:
        """zstd when it pays; otherwise the bytes themselves (by reference, no copy)."""
        cctx = self._worker().cctx
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

    def _process(self, w: DiskWork, offset: int, length: int, runs: list[tuple[int, int, bool]]) -> ChunkResult:
        buf = self._read_bufs.get() if any(d for _, _, d in runs) else None
        try:
            return self._process_in(w, offset, length, runs, buf)
        except BaseException:
            if buf is not None:
                self._read_bufs.put(buf)
            raise

    def _process_in(self, w: DiskWork, offset: int, length: int, subruns: list[tuple[int, int, bool]],
                    buf: mmap.mmap | None) -> ChunkResult:
        bs = self.bs
        first = offset // bs
        nblocks = -(-length // bs)
        t_read = 0.0
        bytes_read = 0
        t1 = time.perf_counter()
        mv = memoryview(buf)[:length] if buf is not None else None
        parts: list[bytes] = []
        for soff, slen, is_data in subruns:  # block-aligned, except a disk's partial last block
            if is_data:
                assert mv is not None
                smv = mv[soff - offset:soff - offset + slen]
                t0 = time.perf_counter()
                w.source.read_into(soff, smv)
                t_read += time.perf_counter() - t0
                bytes_read += slen
                parts.append(b"".join([self.digest(smv[i:i + bs]) for i in range(0, slen, bs)]))
            else:  # a hole reads as zeros: its digests are known without reading
                nb = -(-slen // bs)
                stail = slen - (nb - 1) * bs
                parts.append(self.zero_digest * (nb - 1)
                             + (self.zero_digest if stail == bs else self.digest(bytes(stail))))
        digests = b"".join(parts)
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

    def _scan_and_upload(self, cyc: Cycle, works: list[DiskWork]) -> tuple[float, float]:
        self._held0 = self.project.bucket.held_seconds if self.project.bucket else 0.0
        conc = self.cfg.replication.upload_concurrency
        self._target = self.cfg.cache.pack_size_mib << 20
        # Page-aligned buffers, reused: packs are built in place (no join, direct I/O possible) and
        # the pool bounds the packs in memory, waiting or in flight, to concurrency + 2.
        index_room = ((self._target + CHUNK) // self.bs + 2) * ENTRY.size + TRAILER.size
        cap = -(-(self._target + CHUNK + index_room + 4096) // mmap.PAGESIZE) * mmap.PAGESIZE
        self._pack_bufs: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(conc + 2):
            self._pack_bufs.put(mmap.mmap(-1, cap))
        # Read buffers travel with their chunk's result until its extents are copied into a pack.
        self._read_bufs: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        for _ in range(self.workers * 2 + 1):
            self._read_bufs.put(mmap.mmap(-1, CHUNK))
        self._uploads: list[Future[None]] = []
        self._builder: PackBuilder | None = None
        self._builder_buf: mmap.mmap | None = None
        self._pending: list[journal.JournalEntry] = []
        self._by_idx = {w.disk.idx: w for w in works}
        self._cyc = cyc
        t_read = t_cpu = 0.0
        with ThreadPoolExecutor(self.workers, thread_name_prefix="godwit-read") as rpool, \
                ThreadPoolExecutor(conc, thread_name_prefix="godwit-upload") as self._upool:
            inflight: deque[Future[ChunkResult]] = deque()
            try:
                for task in self._tasks(works):
                    inflight.append(rpool.submit(self._process, *task))
                    while len(inflight) >= self.workers * 2:
                        r = inflight.popleft().result()
                        self._take(r)
                        t_read, t_cpu = t_read + r.t_read, t_cpu + r.t_cpu
                while inflight:
                    r = inflight.popleft().result()
                    self._take(r)
                    t_read, t_cpu = t_read + r.t_read, t_cpu + r.t_cpu
                self._flush()
                for fu in self._uploads:
                    fu.result()
            except BaseException:
                for fr in inflight:
                    fr.cancel()
                for fu in self._uploads:
                    fu.cancel()
                raise
        return t_read, t_cpu

    def _take(self, r: ChunkResult) -> None:
        """Fold one chunk's result into the disk's digests and the current pack (in order)."""
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
            for off, length, blob, codec, checksum in r.data:
                builder = self._builder
                if builder is not None and len(builder) and (builder.size + len(blob) > self._target
                                                             or not builder.fits(len(blob))):
                    self._flush()
                    builder = None
                if builder is None:
                    self._builder_buf = self._pack_bufs.get()  # waits while every buffer is in flight
                    builder = self._builder = PackBuilder(self._builder_buf)
                b0 = (off - r.offset) // self.bs
                nb = -(-length // self.bs)
                entry = builder.add(w.disk.idx, off, length, blob, codec, checksum)
                self._pending.append(journal.JournalEntry(entry, r.digests[b0 * DIGEST:(b0 + nb) * DIGEST]))
                w.bytes_changed += length
                w.bytes_sent += len(blob)
        finally:
            r.data.clear()  # drop views into the read buffer before it is reused
            if r.buf is not None:
                self._read_bufs.put(r.buf)
        w.done += r.length
        if self.progress is not None:
            self.progress(w.disk.idx, w.done, w.size)

    def _flush(self) -> None:
        builder, buf = self._builder, self._builder_buf
        self._builder = self._builder_buf = None
        if builder is None or buf is None:
            return
        if not len(builder):
            self._pack_bufs.put(buf)
            return
        for up in [u for u in self._uploads if u.done()]:
            up.result()  # surface an upload error as early as possible
        pack_id = secrets.token_hex(16)
        data, entries = builder.finish(), self._pending
        self._uploads.append(self._upool.submit(self._upload, self._cyc, pack_id, data, entries, buf))
        for je in entries:
            e = je.entry
            self._by_idx[e.disk].extents.append(
                manifest.Extent(e.offset, e.length, pack_id, e.pos, e.stored, e.codec, e.checksum))
        self._pending = []

    def _upload(self, cyc: Cycle, pack_id: str, data: bytes | memoryview, entries: list[journal.JournalEntry],
                buf: mmap.mmap) -> None:
        try:
            t0 = time.perf_counter()
            log.debug("%s cycle %d: put pack %s (%d bytes, %d extents)", self.server.name, cyc.number, pack_id,
                      len(data), len(entries))
            # Pack ids are random and nobody else writes them: a plain put, so that a retry of a put
            # whose first attempt did land (a timeout after the server stored it) cannot fail.
            self.project.store.put(pack_key(self.server.uid, pack_id), data)
            with self._lock:
                self.t_upload += time.perf_counter() - t0
                self.packs_uploaded += 1
            with self.project.db.tx() as c:
                c.execute(t.journal.insert().values(cycle_id=cyc.id, pack_id=pack_id, size=len(data),
                                                    payload=journal.encode(entries)))
        finally:
            del data
            self._pack_bufs.put(buf)

    # -- commit ------------------------------------------------------------------------------

    def _finish_if_manifest_exists(self, cyc: Cycle) -> bool:
        """After a crash between the manifest's put and the state update, finish the commit."""
        key = manifest_key(self.server.uid, cyc.number)
        try:
            data = self.project.store.get(key)
        except ObjectMissingError:
            return False
        m = manifest.decode(data, key)
        if m.server_uid != self.server.uid or m.cycle != cyc.number:
            raise CorruptObjectError(f"{key} belongs to another server or cycle")
        self._mark_committed(cyc, m, key, {})
        return True

    def _commit(self, cyc: Cycle, works: list[DiskWork], parent: int | None, consistency: str, store_id: str,
                t_read: float, t_cpu: float, started: float) -> None:
        m = manifest.Manifest(
            store_id=store_id, server_uid=self.server.uid, server_name=self.server.name, cycle=cyc.number,
            parent=parent, created=datetime.now(UTC).isoformat(timespec="seconds"), consistency=consistency,
            block_size=self.bs, hash=self.cfg.replication.hash,
            disks=[manifest.DiskManifest(w.disk.idx, w.size, w.previous_size, w.extents, _merge(w.zeros))
                   for w in works])
        for w in works:
            blockhashes.write(hashstore.path(self.project.hashes_dir, w.disk.uid, cyc.number),
                              self.cfg.replication.hash, self.bs, w.size, w.new)
        key = manifest_key(self.server.uid, cyc.number)
        try:
            manifest.validate(m, key)  # never commit what the mover would refuse
            body = m.encode()
            self.project.store.put(key, body, overwrite=False)
        except ObjectExistsError:
            # A retried create whose first attempt landed finds our own manifest: that is success.
            if self.project.store.get(key) == body:
                log.info("%s cycle %d: manifest already stored by an earlier attempt", self.server.name, cyc.number)
            else:
                raise ObjectExistsError(f"cycle {cyc.number} of server {self.server.name} already has a manifest "
                                        "in the cache store that this appliance did not write",
                                        hint="two appliances may be replicating the same server into one "
                                             "store; stop one") from None
        held = (self.project.bucket.held_seconds if self.project.bucket else 0.0) - self._held0
        stats: dict[str, object] = {
            "bytes_read": sum(w.bytes_read for w in works),
            "bytes_changed": sum(w.bytes_changed for w in works),
            "bytes_sent": sum(w.bytes_sent for w in works),
            "packs": len(m.packs()),
            "t_read": t_read, "t_cpu": t_cpu, "t_upload": self.t_upload, "t_throttle": held,
            "t_wall": time.perf_counter() - started,
        }
        with self.project.db.tx() as c:
            for w in works:
                c.execute(t.cycle_disks.insert().values(cycle_id=cyc.id, disk_id=w.disk.id, size=w.size,
                                                        bytes_read=w.bytes_read, bytes_changed=w.bytes_changed,
                                                        bytes_sent=w.bytes_sent, extents=len(w.extents)))
        self._mark_committed(cyc, m, key, stats)

    def _mark_committed(self, cyc: Cycle, m: manifest.Manifest, key: str, stats: dict[str, object]) -> None:
        db = self.project.db
        with db.tx() as c:
            c.execute(t.cycles.update().where(t.cycles.c.id == cyc.id).values(
                state="committed", committed=time.time(), manifest_key=key,
                consistency=m.consistency, **stats))
            for d in m.disks:
                c.execute(t.disks.update().where(t.disks.c.server_id == self.server.id,
                                                 t.disks.c.idx == d.index).values(size=d.size))
            c.execute(t.journal.delete().where(t.journal.c.cycle_id == cyc.id))
        for disk in db.disks(self.server.id):  # a resync's forced ranges are in this cycle now
            hashstore.clear_forced(self.project.hashes_dir, disk.uid)
        log.info("%s cycle %d committed: %s", self.server.name, cyc.number, key)
        db.event("info", f"cycle {cyc.number} committed ({m.consistency} consistency)",
                 server=self.server.name, cycle=cyc.number)

    def _result(self, cyc: Cycle, *, resumed: bool, warnings: list[str], works: list[DiskWork],
                reused: int) -> CycleResult:
        return CycleResult(
            server=self.server.name, number=cyc.number, kind=cyc.kind, consistency=cyc.consistency or "none",
            resumed=resumed, packs_uploaded=self.packs_uploaded, packs_reused=reused,
            bytes_read=cyc.bytes_read, bytes_changed=cyc.bytes_changed, bytes_sent=cyc.bytes_sent,
            t_read=cyc.t_read, t_cpu=cyc.t_cpu, t_upload=cyc.t_upload, t_throttle=cyc.t_throttle,
            t_wall=cyc.t_wall, warnings=warnings,
            disks=[{"index": w.disk.idx, "size": w.size, "bytes_read": w.bytes_read,
                    "bytes_changed": w.bytes_changed, "bytes_sent": w.bytes_sent} for w in works])


def _merge(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(runs):
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out



def run_cycle(project: Project, name: str, kind: str = "delta", *, progress: ProgressFn | None = None
              ) -> CycleResult:
    server = project.db.server(name)
    if server.state == "migrated":
        raise GodwitError(f"server {name} is migrated; replication has ended")
    return CycleRunner(project, server, progress=progress).run(kind)
