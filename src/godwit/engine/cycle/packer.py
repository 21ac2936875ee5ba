"""Pack building and upload: chunk results go into packs in order; packs are put and journaled.

Packs are built in place in page-aligned buffers from a small pool (no join, direct I/O
possible); the pool bounds the packs in memory, waiting or in flight, to concurrency + 2. Each
pack is put by the upload pool, then journaled, and its buffer comes back. ``finish`` waits for
the puts (the manifest needs every pack durable), ``journaled`` for the journal rows too (the
state's commit drops them), so the last pack's journal row is written while the commit begins.

A pack is sealed early, before the pack size, when nothing is being stored and it holds at least
a quarter of what the cycle sealed before it (and at least ``EARLY``). So the store writes while
the reads go on, one pack at a time (each put costs fsyncs: more at once only queue on the
disk), and a small cycle waits at its end for about what arrived during the last put, not for
all its change (a bitmap cycle's 20 MiB in one pack took ~60 ms to write and fsync on a 364 MB/s
disk, after the last read). The quarter bounds what that costs a large cycle: about a dozen extra
packs (once it sealed four pack sizes, early packs are as large as the others). Pack boundaries
so depend on the store's speed; what a pack holds, in order, does not.
"""

from __future__ import annotations

import logging
import mmap
import queue
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from godwit.engine.cycle import buffers
from godwit.engine.cycle.work import CHUNK, DIGEST, ChunkResult, DiskWork
from godwit.format import journal, manifest
from godwit.format.keys import pack_key
from godwit.format.pack import ENTRY, TRAILER, PackBuilder
from godwit.state import cycles
from godwit.state.db import Cycle, StateDB
from godwit.stores.base import ObjectStore

log = logging.getLogger("godwit.cycle")

EARLY = 2 << 20  # the smallest pack sealed before the pack size (module docstring)


class Packer:
    def __init__(self, *, store: ObjectStore, db: StateDB, server_uid: str, server_name: str, cyc: Cycle,
                 works: list[DiskWork], bs: int, pack_size: int, upool: ThreadPoolExecutor, concurrency: int) -> None:
        self.store, self.db = store, db
        self.server_uid, self.server_name = server_uid, server_name
        self.cyc = cyc
        self.bs = bs
        self.target = pack_size
        self.upool = upool
        self.by_idx = {w.disk.idx: w for w in works}
        index_room = ((self.target + CHUNK) // bs + 2) * ENTRY.size + TRAILER.size
        cap = -(-(self.target + CHUNK + index_room + 4096) // mmap.PAGESIZE) * mmap.PAGESIZE
        self.pack_bufs: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
        self.nbufs = concurrency + 2
        for b in buffers.take(cap, self.nbufs):
            self.pack_bufs.put(b)
        self.uploads: list[Future[None]] = []  # each pack's put and journal row
        self.stored: list[Future[None]] = []  # each pack's put
        self.builder: PackBuilder | None = None
        self.builder_buf: mmap.mmap | None = None
        self.pending: list[journal.JournalEntry] = []
        self._lock = threading.Lock()
        self.t_upload = 0.0
        self.packs_uploaded = 0
        self.sealed_bytes = 0  # bytes of packs handed to the upload pool so far
        self.storing = 0  # packs handed to the upload pool and not yet stored and journaled

    def _seal_early(self, builder: PackBuilder) -> bool:
        """Whether to seal the current pack before the pack size (module docstring)."""
        return self.storing == 0 and builder.size >= max(EARLY, self.sealed_bytes // 4)

    def take(self, r: ChunkResult) -> None:
        """Fold one chunk's extents into the current pack (in order); the read buffer goes back."""
        w = r.work
        for off, length, blob, codec, checksum in r.data:
            builder = self.builder
            if builder is not None and len(builder) and (builder.size + len(blob) > self.target
                                                         or not builder.fits(len(blob))
                                                         or self._seal_early(builder)):
                self.flush()
                builder = None
            if builder is None:
                self.builder_buf = self.pack_bufs.get()  # waits while every buffer is in flight
                builder = self.builder = PackBuilder(self.builder_buf)
            b0 = (off - r.offset) // self.bs
            nb = -(-length // self.bs)
            entry = builder.add(w.disk.idx, off, length, blob, codec, checksum)
            self.pending.append(journal.JournalEntry(entry, r.digests[b0 * DIGEST:(b0 + nb) * DIGEST]))
            w.bytes_changed += length
            w.bytes_sent += len(blob)

    def flush(self) -> None:
        builder, buf = self.builder, self.builder_buf
        self.builder = self.builder_buf = None
        if builder is None or buf is None:
            return
        if not len(builder):
            self.pack_bufs.put(buf)
            return
        for up in [u for u in self.uploads if u.done()]:
            up.result()  # surface an upload error as early as possible
        pack_id = secrets.token_hex(16)
        data, entries = builder.finish(), self.pending
        with self._lock:
            self.storing += 1
        self.sealed_bytes += len(data)
        stored: Future[None] = Future()
        self.stored.append(stored)
        self.uploads.append(self.upool.submit(self._upload, pack_id, data, entries, buf, stored))
        for je in entries:
            e = je.entry
            self.by_idx[e.disk].extents.append(
                manifest.Extent(e.offset, e.length, pack_id, e.pos, e.stored, e.codec, e.checksum))
        self.pending = []

    def finish(self) -> None:
        """Send the last pack and wait until every pack is stored; the first error is raised."""
        self.flush()
        for fu in self.stored:
            fu.result()

    def journaled(self) -> None:
        """Wait until every pack is journaled too; the first error is raised."""
        for fu in self.uploads:
            fu.result()
        # Every upload is done and its buffer back: keep them for the next cycle.
        buffers.give(self.pack_bufs.get() for _ in range(self.nbufs))

    def cancel(self) -> None:
        for fu in self.uploads:
            fu.cancel()

    def _upload(self, pack_id: str, data: bytes | memoryview, entries: list[journal.JournalEntry],
                buf: mmap.mmap, stored: Future[None]) -> None:
        try:
            t0 = time.perf_counter()
            log.debug("%s cycle %d: put pack %s (%d bytes, %d extents)", self.server_name, self.cyc.number,
                      pack_id, len(data), len(entries))
            # Pack ids are random and nobody else writes them: a plain put, so that a retry of a put
            # whose first attempt did land (a timeout after the server stored it) cannot fail.
            try:
                self.store.put(pack_key(self.server_uid, pack_id), data)
            except BaseException as exc:
                stored.set_exception(exc)
                raise
            stored.set_result(None)
            with self._lock:
                self.t_upload += time.perf_counter() - t0
                self.packs_uploaded += 1
            cycles.add_journal(self.db, self.cyc.id, pack_id, len(data), journal.encode(entries))
        finally:
            del data
            with self._lock:
                self.storing -= 1
            self.pack_bufs.put(buf)
