"""Block-hash files: the per-disk digests of every block as of a committed cycle.

They live in the appliance's state folder, not the cache store: the scan tracker compares a new
read with them, and ``verify`` compares a replica with them. Layout (version 1)::

    "GWBH" | u8 version=1 | u8 algorithm (1 xxh3-128, 2 blake3-128) | 2 zero bytes |
    u32 block size | u64 disk size | count × 16-byte digests | 16-byte xxh3-128 of all before
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import xxhash

from godwit.errors import CorruptObjectError
from godwit.format.hashing import ALGORITHM_CODES

MAGIC = b"GWBH"
HEAD = struct.Struct("<4sBBxxIQ")
DIGEST = 16


def block_count(size: int, block_size: int) -> int:
    return (size + block_size - 1) // block_size


def write(path: Path, algorithm: str, block_size: int, size: int, digests: bytes | bytearray) -> None:
    if len(digests) != block_count(size, block_size) * DIGEST:
        raise ValueError("digest array does not match the disk size")
    head = HEAD.pack(MAGIC, 1, ALGORITHM_CODES[algorithm], block_size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    h = xxhash.xxh3_128()
    h.update(head)
    h.update(digests)
    with open(tmp, "wb") as f:
        f.write(head)
        f.write(digests)
        f.write(h.digest())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path, algorithm: str, block_size: int) -> tuple[int, bytearray]:
    """Return (disk size, digests). Raises CorruptObjectError if damaged or of other settings."""
    data = path.read_bytes()
    if len(data) < HEAD.size + DIGEST:
        raise CorruptObjectError(f"block-hash file {path} is truncated")
    magic, version, algo, bs, size = HEAD.unpack_from(data)
    if magic != MAGIC or version != 1:
        raise CorruptObjectError(f"{path} is not a block-hash file")
    if xxhash.xxh3_128_digest(data[:-DIGEST]) != data[-DIGEST:]:
        raise CorruptObjectError(f"block-hash file {path} failed its checksum")
    if algo != ALGORITHM_CODES[algorithm] or bs != block_size:
        raise CorruptObjectError(f"block-hash file {path} was made with other settings "
                                 "(hash or block size changed)", hint="run a full resync")
    digests = bytearray(data[HEAD.size:-DIGEST])
    if len(digests) != block_count(size, bs) * DIGEST:
        raise CorruptObjectError(f"block-hash file {path} has the wrong number of digests")
    return size, digests
