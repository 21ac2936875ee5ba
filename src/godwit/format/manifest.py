"""Cycle manifests: the commit record of a cycle (docs/format.md, "Manifests").

Layout (versions 1 and 2)::

    "GWMF" | u8 version | 3 zero bytes | zstd frame of a UTF-8 JSON document | 16-byte trailer

Version 2 is version 1 plus the consistency value ``fs`` (filesystem-consistent: the guest's
filesystems were frozen by its agent around the point-in-time view). A manifest is written in the
lowest version that can say what it holds, so a godwit that reads only version 1 still reads every
manifest that is ``crash`` or ``none``. ``consistency_detail`` (both versions, optional) is a
sentence for people: how the view was taken (``crash-consistent (fleecing)``); never parsed.

The trailer is the xxh3-128 digest of every byte before it, so truncation and bit flips are
detected before any field is trusted. A manifest is written last, with a conditional create: a
cycle without a manifest does not exist, and a committed manifest is never overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import xxhash
import zstandard

from godwit.errors import CorruptObjectError

MAGIC = b"GWMF"
HEADER_SIZE = 8
VERSION = 2  # the newest version this godwit writes and reads
READS = (1, 2)
#: Consistency values, weakest first, and the manifest version that introduced each.
CONSISTENCY = ("none", "crash", "fs")
SINCE = {"none": 1, "crash": 1, "fs": 2}
#: A manifest body larger than this is refused before it is parsed (a bomb, or damage).
MAX_BODY = 1 << 30


@dataclass(frozen=True)
class Extent:
    """A data extent: ``length`` bytes at ``offset`` of the disk, stored in a pack."""

    offset: int
    length: int
    pack: str
    pos: int
    stored: int
    codec: int
    checksum: bytes

    def row(self, pack_index: dict[str, int]) -> list[Any]:
        return [self.offset, self.length, pack_index[self.pack], self.pos, self.stored, self.codec,
                self.checksum.hex()]


@dataclass
class DiskManifest:
    index: int
    size: int
    previous_size: int
    extents: list[Extent] = field(default_factory=list)
    zeros: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Manifest:
    store_id: str
    server_uid: str
    server_name: str
    cycle: int
    parent: int | None
    created: str
    consistency: str
    block_size: int
    hash: str
    disks: list[DiskManifest]
    consistency_detail: str = ""

    @property
    def version(self) -> int:
        """The lowest format version that can hold this manifest (docs/format.md, "Versioning")."""
        return SINCE.get(self.consistency, VERSION)

    def packs(self) -> list[str]:
        seen: dict[str, None] = {}
        for d in self.disks:
            for e in d.extents:
                seen.setdefault(e.pack, None)
        return list(seen)

    def encode(self) -> bytes:
        packs = self.packs()
        index = {p: i for i, p in enumerate(packs)}
        version = self.version
        doc: dict[str, Any] = {
            "format": version,
            "store_id": self.store_id,
            "server": {"uid": self.server_uid, "name": self.server_name},
            "cycle": self.cycle,
            "parent": self.parent,
            "created": self.created,
            "consistency": self.consistency,
            "block_size": self.block_size,
            "hash": self.hash,
            "packs": packs,
            "disks": [
                {
                    "index": d.index,
                    "size": d.size,
                    "previous_size": d.previous_size,
                    "extents": [e.row(index) for e in sorted(d.extents, key=lambda e: e.offset)],
                    "zeros": [list(z) for z in sorted(d.zeros)],
                }
                for d in self.disks
            ],
        }
        if self.consistency_detail:
            doc["consistency_detail"] = self.consistency_detail
        body = zstandard.ZstdCompressor(level=3).compress(
            json.dumps(doc, separators=(",", ":")).encode())
        head = MAGIC + bytes([version, 0, 0, 0]) + body
        return head + xxhash.xxh3_128_digest(head)


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise CorruptObjectError(f"{what} is not a non-negative integer")
    return v


def decode(data: bytes, name: str = "manifest") -> Manifest:
    if len(data) < HEADER_SIZE + 16 or data[:4] != MAGIC:
        raise CorruptObjectError(f"{name} is not a godwit manifest (bad header or truncated)")
    version = data[4]
    if version not in READS:
        raise CorruptObjectError(f"{name} has format version {version}; this godwit reads "
                                 f"{', '.join(map(str, READS))}", hint="upgrade godwit")
    if data[5:8] != b"\0\0\0":
        raise CorruptObjectError(f"{name} has reserved header bytes set (written by a newer godwit?)")
    if xxhash.xxh3_128_digest(data[:-16]) != data[-16:]:
        raise CorruptObjectError(f"{name} failed its checksum (truncated or damaged)",
                                 hint="the cycle is not trusted; run a new cycle to resend the changes")
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data[HEADER_SIZE:-16])
        body = reader.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise CorruptObjectError(f"{name} body is larger than {MAX_BODY >> 20} MiB")
        doc = json.loads(body)
        packs = doc["packs"]
        disks = []
        for d in doc["disks"]:
            extents = []
            for row in d["extents"]:
                off, length, pidx, pos, stored, codec, csum = row
                if not isinstance(pidx, int) or not 0 <= pidx < len(packs) or len(csum) != 32:
                    raise CorruptObjectError(f"{name}: extent row {row!r} is invalid")
                extents.append(Extent(_int(off, "offset"), _int(length, "length"), packs[pidx],
                                      _int(pos, "pos"), _int(stored, "stored"), _int(codec, "codec"),
                                      bytes.fromhex(csum)))
            zeros = [(_int(o, "offset"), _int(n, "length")) for o, n in d["zeros"]]
            disks.append(DiskManifest(_int(d["index"], "index"), _int(d["size"], "size"),
                                      _int(d["previous_size"], "previous_size"), extents, zeros))
        m = Manifest(doc["store_id"], doc["server"]["uid"], doc["server"]["name"], _int(doc["cycle"], "cycle"),
                     doc["parent"], doc["created"], doc["consistency"], _int(doc["block_size"], "block_size"),
                     doc["hash"], disks, str(doc.get("consistency_detail", "")))
    except CorruptObjectError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, zstandard.ZstdError) as exc:
        raise CorruptObjectError(f"{name} does not parse: {exc!r}") from None
    if doc.get("format") != version:
        raise CorruptObjectError(f"{name} body has format {doc.get('format')!r}, expected {version}")
    if SINCE.get(m.consistency, 1) > version:
        raise CorruptObjectError(f"{name}: consistency {m.consistency!r} does not exist in format version {version}")
    validate(m, name)
    return m


def validate(m: Manifest, name: str) -> None:
    """Refuse a manifest whose fields break the format's rules (docs/format.md, "Extents")."""
    bs = m.block_size
    if bs < 4096 or bs & (bs - 1):
        raise CorruptObjectError(f"{name}: block size {bs} is not a power of two >= 4096")
    if m.consistency not in CONSISTENCY or m.hash not in ("xxh3-128", "blake3"):
        raise CorruptObjectError(f"{name}: unknown consistency {m.consistency!r} or hash {m.hash!r}")
    if m.parent is not None and (not isinstance(m.parent, int) or isinstance(m.parent, bool)
                                 or not 0 < m.parent < m.cycle):
        raise CorruptObjectError(f"{name}: parent {m.parent!r} is not an earlier cycle")
    if sorted(d.index for d in m.disks) != list(range(len(m.disks))):
        raise CorruptObjectError(f"{name}: disk indexes are not 0..{len(m.disks) - 1}")
    for d in m.disks:
        if d.previous_size > d.size:
            raise CorruptObjectError(f"{name}: disk {d.index} is smaller than in its parent cycle")
        runs = sorted([(e.offset, e.length) for e in d.extents] + list(d.zeros))
        end = 0
        for off, n in runs:
            if n <= 0 or off < end or off % bs or off + n > d.size or ((off + n) % bs and off + n != d.size):
                raise CorruptObjectError(f"{name}: run at {off}+{n} on disk {d.index} overlaps, is not "
                                         "block-aligned, or runs past the disk's end")
            end = off + n
