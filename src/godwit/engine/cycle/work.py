"""What a cycle carries per disk and per chunk while it runs."""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

from godwit.format import blockhashes, manifest
from godwit.sources import DiskSource
from godwit.state.db import Disk
from godwit.trackers import TrackedDisk

CHUNK = 4 << 20  # bytes a task reads at most (its buffer)
HOLE_PIECE = 1 << 30  # a long run that is never read is cut into tasks of this size (progress)
DIGEST = 16


class BaseDigests:
    """The parent cycle's block digests of one disk, read window by window in disk order.

    Blocks that a resync forced read as a digest no block has, so they count as changed.
    """

    def __init__(self, reader: blockhashes.Reader, forced: list[tuple[int, int]]) -> None:
        self.reader = reader
        self.blocks = reader.count
        self.forced = forced

    def window(self, first: int, end: int) -> bytes:
        """Digests of blocks [first, end) that the base has: shorter when the disk grew past it."""
        end = min(end, self.blocks)
        if end <= first:
            return b""
        d = self.reader.window(first, end)
        cuts = [(max(f, first), min(e, end)) for f, e in self.forced if f < end and e > first]
        if not cuts:
            return d
        out = bytearray(d)
        for f, e in cuts:
            out[(f - first) * DIGEST:(e - first) * DIGEST] = b"\xff" * (DIGEST * (e - f))
        return bytes(out)

    def close(self) -> None:
        self.reader.close()


@dataclass
class DiskWork:
    disk: Disk
    tracked: TrackedDisk
    source: DiskSource
    size: int
    previous_size: int
    base: BaseDigests | None  # digests as of the parent cycle; None means send everything
    base_cycle: int | None = None  # the cycle ``base`` is of (what the tracker is asked against)
    #: Blocks from 0 whose base digest describes the block as it is now (a grown disk's old partial
    #: last block does not): an UNCHANGED block at or past it is read.
    base_blocks: int = 0
    #: Block ranges [first, end) that a resync forces to be read, whatever the tracker says.
    forced: list[tuple[int, int]] = field(default_factory=list)
    #: Blocks already sent in journaled packs, (first block, their digests), in block order: not
    #: read again, and their journaled digests go into the new hash file.
    journaled: list[tuple[int, bytes]] = field(default_factory=list)
    new: blockhashes.Writer | None = None  # this cycle's hash file, written as the pipeline goes
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
    buf: mmap.mmap | None = None  # the read buffer raw blobs point into; back to the pool after take
