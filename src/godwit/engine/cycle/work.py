"""What a cycle carries per disk and per chunk while it runs."""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field

from godwit.format import manifest
from godwit.sources import DiskSource
from godwit.state.db import Disk
from godwit.trackers import TrackedDisk

CHUNK = 4 << 20  # bytes of disk per read task
HOLE_PIECE = 1 << 30  # a long run that is never read is cut into tasks of this size (progress)
DIGEST = 16


@dataclass
class DiskWork:
    disk: Disk
    tracked: TrackedDisk
    source: DiskSource
    size: int
    previous_size: int
    base: bytes | None  # digests as of the parent cycle; None means send everything
    new: bytearray
    base_cycle: int | None = None  # the cycle ``base`` is of (what the tracker is asked against)
    #: Blocks from 0 whose base digest describes the block as it is now (a grown disk's old partial
    #: last block does not): an UNCHANGED block at or past it is read.
    base_blocks: int = 0
    #: Block ranges [first, end) that a resync forces to be read, whatever the tracker says.
    forced: list[tuple[int, int]] = field(default_factory=list)
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
    buf: mmap.mmap | None = None  # the read buffer raw blobs point into; back to the pool after take
