"""Change detection: each disk's base digests, the tracker's regions cut to blocks, and the
resume journal's blocks that are already sent."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

from godwit.engine.cycle.work import DIGEST, BaseDigests, DiskWork
from godwit.errors import CorruptObjectError, GodwitError
from godwit.format import journal, manifest
from godwit.sources import DiskSource
from godwit.state import hashstore
from godwit.state.cycles import JournalRow
from godwit.state.db import Disk
from godwit.trackers import Kind, Region, TrackedDisk

Run = tuple[int, int, Kind]  # offset, length, kind; block-aligned except a disk's partial last block


def block_runs(regions: Iterable[Region], size: int, bs: int, tracker: str = "tracker") -> Iterator[Run]:
    """Cut a tracker's byte regions to blocks: a block with any CHANGED byte is CHANGED, one of a
    single kind keeps it, and one mixing ZERO and UNCHANGED is CHANGED (only a read tells).

    The tracker's contract (cover the disk in order, no gap, no overlap) is checked here.
    """
    out: deque[list[int]] = deque()  # [first block, end block, kind]; all but the last are final

    def push(first: int, end: int, kind: int) -> None:
        if out and out[-1][1] == first and out[-1][2] == kind:
            out[-1][1] = end
        else:
            out.append([first, end, kind])

    pos = 0
    for r in regions:
        if r.offset != pos or r.length <= 0 or r.offset + r.length > size:
            raise GodwitError(f"change tracker {tracker!r} reported region {r.offset}+{r.length} out of order "
                              f"(expected one at {pos}, inside the disk's {size} bytes)",
                              hint="this is a bug in the tracker; use tracker = \"scan\" in godwit.toml")
        pos += r.length
        first, end, kind = r.offset // bs, -(-pos // bs), int(r.kind)
        if out and first < out[-1][1]:  # shares its first block with the run before
            last = out[-1]
            if last[2] != kind:
                last[1] -= 1
                if last[1] == last[0]:
                    out.pop()
                push(first, first + 1, Kind.CHANGED)
            first += 1
        if end > first:
            push(first, end, kind)
        while len(out) > 1:
            f, e, k = out.popleft()
            yield f * bs, min(e * bs, size) - f * bs, Kind(k)
    if pos != size:
        raise GodwitError(f"change tracker {tracker!r} described {pos} of the disk's {size} bytes",
                          hint="this is a bug in the tracker; use tracker = \"scan\" in godwit.toml")
    for f, e, k in out:
        yield f * bs, min(e * bs, size) - f * bs, Kind(k)


def readable(runs: Iterable[Run], w: DiskWork, bs: int) -> Iterator[Run]:
    """UNCHANGED runs whose base digests cannot be used become CHANGED: without a base, past the
    base's end, and where a resync forced a resend."""
    for off, length, kind in runs:
        if kind != Kind.UNCHANGED:
            yield off, length, kind
            continue
        if w.base is None:
            yield off, length, Kind.CHANGED
            continue
        first, end = off // bs, -(-(off + length) // bs)
        cuts = [(max(f, first), min(e, end)) for f, e in w.forced if f < end and e > first]
        if w.base_blocks < end:
            cuts.append((max(w.base_blocks, first), end))
        pos = first
        for f, e in sorted(cuts):
            if f > pos:
                yield pos * bs, f * bs - pos * bs, Kind.UNCHANGED
            if e > pos:
                a = max(f, pos)
                yield a * bs, min(e * bs, off + length) - a * bs, Kind.CHANGED
                pos = e
        if pos < end:
            yield pos * bs, off + length - pos * bs, Kind.UNCHANGED


def load_base(hashes_dir: Path, disk: Disk, parent: int, algorithm: str, bs: int, size: int,
              warnings: list[str]) -> tuple[BaseDigests | None, int, int, list[tuple[int, int]]]:
    """(base digests or None, previous size, usable base blocks, forced block ranges) of a disk.

    The base file is verified here and read later in windows, never whole.
    """
    reader = hashstore.open_digests(hashes_dir, disk.uid, parent, algorithm, bs)
    if reader is None:
        warnings.append(f"disk {disk.idx}: block hashes of cycle {parent} are missing or made with "
                        "other settings; this cycle resends the whole disk")
        return None, disk.size, 0, []
    previous_size = reader.size
    forced_doc = hashstore.load_forced(hashes_dir, disk.uid)
    if forced_doc and forced_doc.get("all"):
        reader.close()
        warnings.append(f"disk {disk.idx}: resync asked for the whole disk; this cycle resends it")
        return None, previous_size, 0, []
    have = reader.count
    forced: list[tuple[int, int]] = []
    for off, n in (forced_doc or {}).get("ranges", []):
        # These blocks count as changed (BaseDigests gives them a digest no block has).
        lo, hi = off // bs, min(-(-(off + n) // bs), have)
        if hi > lo:
            forced.append((lo, hi))
    # The old last block, when partial, was hashed short: it describes the block only at that size.
    usable = have if size == previous_size else min(have, previous_size // bs)
    return BaseDigests(reader, forced), previous_size, usable, forced


def tracked(disk: Disk) -> TrackedDisk:
    return TrackedDisk(disk.uid, disk.idx, Path(disk.spec))


def new_work(disk: Disk, source: DiskSource, parent: int | None, base: BaseDigests | None, previous_size: int,
             base_blocks: int, forced: list[tuple[int, int]], bs: int) -> DiskWork:
    return DiskWork(disk, tracked(disk), source, source.size, previous_size, base,
                    base_cycle=parent if base is not None else None, base_blocks=base_blocks, forced=forced)


def journal_fits(rows: list[JournalRow], bs: int) -> bool:
    """Whether a journal's extents were cut with block size ``bs`` (one digest per block)."""
    for row in rows:
        for je in journal.decode(row.payload):
            e = je.entry
            if e.offset % bs or len(je.digests) != -(-e.length // bs) * DIGEST:
                return False
    return True


def apply_journal(rows: list[JournalRow], works: list[DiskWork], bs: int, cycle: int, server: str) -> int:
    """Mark blocks of journaled packs as sent; returns how many packs are reused.

    An extent that no longer fits the disk as it is now (the disk grew past an unaligned end,
    or a disk is gone) is not reused: its blocks are read and sent again.
    """
    by_idx = {w.disk.idx: w for w in works}
    used = 0
    for row in rows:
        took = False
        for je in journal.decode(row.payload):
            e = je.entry
            w = by_idx.get(e.disk)
            end = e.offset + e.length
            if e.offset % bs:
                raise CorruptObjectError(f"resume journal of cycle {cycle} has an unaligned extent",
                                         hint=f"run `godwit replicate resync {server}`")
            if w is None or end > w.size or (end % bs and end != w.size):
                continue
            w.journaled.append((e.offset // bs, je.digests))
            w.extents.append(manifest.Extent(e.offset, e.length, row.pack_id, e.pos, e.stored, e.codec,
                                             e.checksum))
            w.bytes_changed += e.length
            took = True
        used += took
    for w in works:
        w.journaled.sort(key=lambda p: p[0])
        for (f0, d0), (f1, _) in itertools.pairwise(w.journaled):
            if f0 + len(d0) // DIGEST > f1:  # a block sent twice in one cycle: not a journal godwit wrote
                raise CorruptObjectError(f"resume journal of cycle {cycle} sends block {f1} of disk "
                                         f"{w.disk.idx} twice", hint=f"run `godwit replicate resync {server}`")
    return used
