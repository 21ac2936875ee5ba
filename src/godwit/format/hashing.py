"""Block and extent digests. Both are 16 bytes; the block algorithm is configurable."""

from __future__ import annotations

from collections.abc import Callable

import blake3
import xxhash

from godwit.errors import ConfigError

Digest = Callable[[bytes | memoryview], bytes]

#: Codes used in block-hash files.
ALGORITHM_CODES = {"xxh3-128": 1, "blake3": 2}


def _blake3_16(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest(16)


def block_digest(name: str) -> Digest:
    if name == "xxh3-128":
        return xxhash.xxh3_128_digest
    if name == "blake3":
        return _blake3_16
    raise ConfigError(f"unknown hash algorithm {name!r}")


def extent_checksum(data: bytes | memoryview) -> bytes:
    """The checksum of an extent's uncompressed bytes, as recorded in packs and manifests."""
    return xxhash.xxh3_128_digest(data)
