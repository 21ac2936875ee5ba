"""Pack objects: many compressed extents in one object (docs/format.md, "Packs").

Layout (version 1, little-endian)::

    header   "GWPK" | u8 version=1 | 3 zero bytes
    blobs    one blob per extent: zstd frame (codec 1) or raw bytes (codec 0)
    index    N entries of 48 bytes: u16 disk | u8 codec | u8 flags=0 | u32 stored | u64 offset |
             u64 length | u64 pos | 16 bytes checksum (xxh3-128 of the uncompressed extent)
    trailer  u32 N | u64 xxh3-64 of the index | "GWPX"

The manifest alone is enough to read extents; the index makes a pack self-describing so that a
lost manifest can be diagnosed and orphans identified.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash
import zstandard

from godwit.errors import CorruptObjectError

MAGIC = b"GWPK"
TRAILER_MAGIC = b"GWPX"
VERSION = 1
HEADER = MAGIC + bytes([VERSION, 0, 0, 0])
ENTRY = struct.Struct("<HBBIQQQ16s")
TRAILER = struct.Struct("<IQ4s")
CODEC_RAW = 0
CODEC_ZSTD = 1


@dataclass(frozen=True)
class PackEntry:
    disk: int
    offset: int
    length: int
    pos: int
    stored: int
    codec: int
    checksum: bytes


class PackBuilder:
    """Accumulates compressed extents; ``finish`` returns the pack bytes and its entries."""

    def __init__(self) -> None:
        self._parts: list[bytes] = [HEADER]
        self._size = len(HEADER)
        self.entries: list[PackEntry] = []
        self.raw_bytes = 0

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, disk: int, offset: int, length: int, blob: bytes, codec: int, checksum: bytes) -> PackEntry:
        entry = PackEntry(disk, offset, length, self._size, len(blob), codec, checksum)
        self._parts.append(blob)
        self._size += len(blob)
        self.entries.append(entry)
        self.raw_bytes += length
        return entry

    def finish(self) -> bytes:
        index = b"".join(ENTRY.pack(e.disk, e.codec, 0, e.stored, e.offset, e.length, e.pos, e.checksum)
                         for e in self.entries)
        trailer = TRAILER.pack(len(self.entries), xxhash.xxh3_64_intdigest(index), TRAILER_MAGIC)
        return b"".join([*self._parts, index, trailer])


def read_index(data: bytes, name: str = "pack") -> list[PackEntry]:
    """Parse and check a whole pack's index. Raises CorruptObjectError on any inconsistency."""
    if len(data) < len(HEADER) + TRAILER.size or data[:4] != MAGIC:
        raise CorruptObjectError(f"{name} is not a godwit pack (bad header or truncated)")
    if data[4] != VERSION:
        raise CorruptObjectError(f"{name} has pack format version {data[4]}, this godwit reads {VERSION}")
    count, digest, magic = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    index_start = len(data) - TRAILER.size - count * ENTRY.size
    if magic != TRAILER_MAGIC or index_start < len(HEADER):
        raise CorruptObjectError(f"{name} is truncated or its trailer is damaged")
    index = data[index_start:len(data) - TRAILER.size]
    if xxhash.xxh3_64_intdigest(index) != digest:
        raise CorruptObjectError(f"{name} index checksum mismatch")
    entries = []
    for i in range(count):
        disk, codec, flags, stored, offset, length, pos, checksum = ENTRY.unpack_from(index, i * ENTRY.size)
        if flags:
            raise CorruptObjectError(f"{name} entry {i} has flags {flags:#x} this godwit does not know")
        if pos + stored > index_start or pos < len(HEADER):
            raise CorruptObjectError(f"{name} entry {i} points outside the pack")
        entries.append(PackEntry(disk, offset, length, pos, stored, codec, checksum))
    return entries


def decode_blob(blob: bytes | memoryview, codec: int, length: int, dctx: zstandard.ZstdDecompressor,
                what: str) -> bytes:
    """Decompress one extent's blob to exactly ``length`` bytes, or raise CorruptObjectError."""
    try:
        if codec == CODEC_RAW:
            out = bytes(blob)
        elif codec == CODEC_ZSTD:
            out = dctx.decompress(blob, max_output_size=length)
        else:
            raise CorruptObjectError(f"{what}: unknown codec {codec}")
    except zstandard.ZstdError as exc:
        raise CorruptObjectError(f"{what}: compressed data is damaged ({exc})") from None
    if len(out) != length:
        raise CorruptObjectError(f"{what}: decoded {len(out)} bytes, expected {length}")
    return out
