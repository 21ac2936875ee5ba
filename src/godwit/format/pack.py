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

import mmap
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
    """Accumulates compressed extents; ``finish`` returns the pack bytes and its entries.

    With ``buf`` (a writable, ideally page-aligned buffer such as an ``mmap``), the pack is built in
    place and ``finish`` returns a view of it: no 32 MiB join per pack, and the local store can
    write it with direct I/O. Without one, it grows in memory.
    """

    def __init__(self, buf: mmap.mmap | bytearray | None = None) -> None:
        self._buf = buf
        self._view = memoryview(buf) if buf is not None else None
        self._parts: list[bytes | memoryview] = []
        self._size = 0
        self.entries: list[PackEntry] = []
        self.raw_bytes = 0
        self._put(HEADER)

    def _put(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self._view is not None:
            self._view[self._size:self._size + n] = data
        else:
            self._parts.append(bytes(data))
        self._size += n

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self.entries)

    def fits(self, blob_len: int) -> bool:
        """Whether one more blob, and the grown index and trailer, still fit the buffer."""
        if self._view is None:
            return True
        need = self._size + blob_len + (len(self.entries) + 1) * ENTRY.size + TRAILER.size
        return need <= len(self._view)

    def add(self, disk: int, offset: int, length: int, blob: bytes | memoryview, codec: int,
            checksum: bytes) -> PackEntry:
        entry = PackEntry(disk, offset, length, self._size, len(blob), codec, checksum)
        self._put(blob)
        self.entries.append(entry)
        self.raw_bytes += length
        return entry

    def finish(self) -> bytes | memoryview:
        index = b"".join(ENTRY.pack(e.disk, e.codec, 0, e.stored, e.offset, e.length, e.pos, e.checksum)
                         for e in self.entries)
        self._put(index)
        self._put(TRAILER.pack(len(self.entries), xxhash.xxh3_64_intdigest(index), TRAILER_MAGIC))
        if self._view is not None:
            return self._view[:self._size]
        return b"".join(self._parts)


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
