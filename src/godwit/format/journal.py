"""The resume journal: what each durably stored pack of an open cycle holds.

A row is written after the pack's put returned (so after it is durable), with every extent of the
pack and the block digests of the bytes it carries. On resume those blocks count as sent, and
their digests (not a re-read's) go into the cycle's block-hash file, so that a block that changed
again after the crash is seen as changed by the next cycle.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from godwit.errors import CorruptObjectError
from godwit.format.pack import PackEntry

_ENTRY = struct.Struct("<HQQQIB16sI")


@dataclass(frozen=True)
class JournalEntry:
    entry: PackEntry
    digests: bytes  # one 16-byte digest per block of the extent


def encode(entries: list[JournalEntry]) -> bytes:
    out = bytearray()
    for je in entries:
        e = je.entry
        out += _ENTRY.pack(e.disk, e.offset, e.length, e.pos, e.stored, e.codec, e.checksum, len(je.digests))
        out += je.digests
    return bytes(out)


def decode(data: bytes) -> list[JournalEntry]:
    entries = []
    pos = 0
    try:
        while pos < len(data):
            disk, offset, length, ppos, stored, codec, checksum, n = _ENTRY.unpack_from(data, pos)
            pos += _ENTRY.size
            digests = data[pos:pos + n]
            if len(digests) != n:
                raise CorruptObjectError("journal entry is truncated")
            pos += n
            entries.append(JournalEntry(PackEntry(disk, offset, length, ppos, stored, codec, checksum), digests))
    except struct.error:
        raise CorruptObjectError("journal entry is truncated") from None
    return entries
