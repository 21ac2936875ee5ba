"""Reading a committed cycle back from the cache store, verified.

Every extent's checksum is checked after decompression and before anyone gets the bytes: a bad
pack raises CorruptObjectError naming the server, cycle, disk and pack, and nothing from it is
handed out. Packs are fetched once each and verified, in order, by two threads a few packs ahead
of the writer (from the local store around the page cache, into reused page-aligned buffers), and
never read beyond the page after the last byte the manifest says they hold (a pack replaced by
something endless cannot exhaust memory).

A damaged or missing cycle is never helped by a new cycle (it would pile up behind the damaged
one): every hint here says `godwit replicate resync`, which discards it so the next cycle resends.
"""

from __future__ import annotations

import mmap
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from godwit.errors import CorruptObjectError, ObjectMissingError
from godwit.format import manifest as mf
from godwit.format.hashing import extent_checksum
from godwit.format.keys import manifest_key, pack_key
from godwit.format.pack import CODEC_RAW, decode_blob
from godwit.stores.base import ObjectStore


@dataclass(frozen=True)
class Write:
    disk: int
    offset: int
    data: bytes | memoryview | None  # None: a zero extent of ``length`` bytes
    length: int


PACKS_AHEAD = 4  # packs fetched or being verified beyond the one being written (memory bound)
VERIFY_WORKERS = 2  # threads that fetch a pack and verify it (two reads in flight)
BUFFER_MAX = 256 << 20  # packs larger than this (no godwit writes them) are read the ordinary way


RESYNC = ("run `godwit replicate resync {name}`: it discards the cycle, and the next cycle resends "
          "every change since the latest recovery point (a new cycle alone would wait behind this one)")


def load_manifest(store: ObjectStore, server_uid: str, cycle: int, *, store_id: str | None = None) -> mf.Manifest:
    key = manifest_key(server_uid, cycle)
    try:
        data = store.get(key)
    except ObjectMissingError:
        raise ObjectMissingError(f"the manifest of cycle {cycle} is missing from the cache store ({key})",
                                 hint=RESYNC.format(name="<server>")) from None
    try:
        m = mf.decode(data, f"manifest of cycle {cycle}")
    except CorruptObjectError as exc:
        if exc.hint and "new cycle" not in exc.hint:
            raise  # e.g. "upgrade godwit": that one is right
        raise CorruptObjectError(exc.message, hint=RESYNC.format(name="<server>")) from None
    if m.server_uid != server_uid or m.cycle != cycle:
        raise CorruptObjectError(f"manifest {key} belongs to another server or cycle",
                                 hint=RESYNC.format(name=m.server_name))
    if store_id is not None and m.store_id != store_id:
        raise CorruptObjectError(f"manifest {key} was written into another cache store ({m.store_id})",
                                 hint="objects were copied between stores; they are not trusted")
    return m


def iter_packs(store: ObjectStore, m: mf.Manifest, *, ahead: int = PACKS_AHEAD,
               workers: int = VERIFY_WORKERS, recycle: bool = False) -> Iterator[list[Write]]:
    """Yield the cycle's writes in batches, in order: its zero extents first, then each pack's
    verified extents (a damaged pack raises before any of its writes is handed out).

    A small pipeline: ``workers`` threads each fetch a pack and verify (and decompress) its
    extents, in order, and the caller consumes them in order. At most ``ahead`` packs are in flight
    beyond the one the caller holds: memory is bounded by packs, never by the cycle. Raw extents
    are handed out as views of their pack (no copy).

    A store with ``read_into`` (the local store) reads each pack around the page cache into a
    page-aligned buffer. With ``recycle`` those buffers are reused: a batch's views are then valid
    only until the next batch is asked for (the mover's replicas copy what ``write`` is given
    before it returns); without it every pack gets a buffer of its own."""
    zeros = [Write(d.index, off, None, n) for d in m.disks for off, n in d.zeros]
    if zeros:
        yield zeros
    by_pack: dict[str, list[tuple[int, mf.Extent]]] = {}
    for d in m.disks:
        for e in d.extents:
            by_pack.setdefault(e.pack, []).append((d.index, e))
    packs = list(by_pack)
    # The manifest says how much of each pack it uses: never read (or hold) more than that.
    needed = {p: max(e.pos + e.stored for _, e in uses) for p, uses in by_pack.items()}
    hint = RESYNC.format(name=m.server_name)
    local = threading.local()
    ahead = max(1, ahead)
    direct = True  # until the store says it has no ``read_into``
    # A direct read is rounded out to whole pages: one page more than the largest pack used.
    bufsize = -(-max(needed.values(), default=0) // mmap.PAGESIZE) * mmap.PAGESIZE + mmap.PAGESIZE
    if bufsize > BUFFER_MAX:
        direct = False
    free: queue.SimpleQueue[mmap.mmap] = queue.SimpleQueue()
    made = 0
    made_lock = threading.Lock()

    def buffer() -> mmap.mmap:
        nonlocal made
        with made_lock:
            # ``ahead`` in flight and the one the caller holds: never more than that many at once.
            if not recycle or (made < ahead + 1 and free.empty()):
                made += 1
                return mmap.mmap(-1, bufsize)
        return free.get()

    def fetch(pack: str) -> tuple[bytes | memoryview, mmap.mmap | None]:
        nonlocal direct
        key = pack_key(m.server_uid, pack)
        try:
            if direct:
                buf = buffer()
                try:
                    got = store.read_into(key, buf, 0, needed[pack])
                except BaseException:
                    free.put(buf)
                    raise
                if got is not None:
                    return got, buf
                free.put(buf)
                direct = False  # this store has no such path: ``get`` from here on
            return store.get(key, 0, needed[pack]), None
        except ObjectMissingError:
            raise ObjectMissingError(f"pack {pack} of cycle {m.cycle} ({m.server_name}) is missing from the "
                                     "cache store", hint=hint) from None
        except CorruptObjectError as exc:
            raise CorruptObjectError(exc.message, hint=hint) from None

    def verify(pack: str) -> tuple[list[Write], mmap.mmap | None]:
        data, buf = fetch(pack)
        try:
            return check(pack, data), buf
        except BaseException:
            if buf is not None:
                free.put(buf)
            raise

    def check(pack: str, data: bytes | memoryview) -> list[Write]:
        dctx = getattr(local, "dctx", None)
        if dctx is None:  # one decompressor per thread (they are not thread-safe)
            dctx = local.dctx = zstandard.ZstdDecompressor()
        view = memoryview(data)
        out: list[Write] = []
        for disk, e in by_pack[pack]:
            what = f"{m.server_name} cycle {m.cycle} disk {disk} pack {pack} extent at {e.offset}"
            if e.pos + e.stored > len(data):
                raise CorruptObjectError(f"{what}: pack is truncated", hint=hint)
            blob = view[e.pos:e.pos + e.stored]
            raw: bytes | memoryview
            if e.codec == CODEC_RAW and e.stored == e.length:
                raw = blob  # checked below, exactly as decode_blob would, without a copy
            else:
                try:
                    raw = decode_blob(blob, e.codec, e.length, dctx, what)
                except CorruptObjectError as exc:
                    raise CorruptObjectError(exc.message, hint=hint) from None
            if extent_checksum(raw) != e.checksum:
                raise CorruptObjectError(f"{what}: checksum mismatch, the pack is damaged",
                                         hint="nothing was written from it; " + hint)
            out.append(Write(disk, e.offset, raw, e.length))
        return out

    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="godwit-fetch")
    inflight: deque[Future[tuple[list[Write], mmap.mmap | None]]] = deque()
    try:
        nxt = 0
        while nxt < len(packs) or inflight:
            while nxt < len(packs) and len(inflight) < ahead:
                inflight.append(pool.submit(verify, packs[nxt]))
                nxt += 1
            batch, held = inflight.popleft().result()
            yield batch
            del batch
            if held is not None and recycle:
                free.put(held)  # the caller asked for more: it is done with that pack's views
    finally:
        for f in inflight:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def iter_writes(store: ObjectStore, m: mf.Manifest) -> Iterator[Write]:
    """Yield every write of the cycle (zero extents first, then data by pack), verified."""
    for batch in iter_packs(store, m):
        yield from batch


def verify_cycle(store: ObjectStore, server_uid: str, cycle: int) -> None:
    """Read and check every extent of a committed cycle without writing anything."""
    m = load_manifest(store, server_uid, cycle)
    for _ in iter_writes(store, m):
        pass
