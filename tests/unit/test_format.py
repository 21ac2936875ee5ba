"""Packs, manifests, block-hash files and the journal: round trips and damage detection."""

from __future__ import annotations

from pathlib import Path

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from godwit.errors import CorruptObjectError
from godwit.format import blockhashes, journal, manifest
from godwit.format.hashing import extent_checksum
from godwit.format.pack import CODEC_RAW, CODEC_ZSTD, PackBuilder, decode_blob, read_index


def _pack(extents: list[bytes]) -> tuple[bytes, list[bytes]]:
    b = PackBuilder()
    cctx = zstandard.ZstdCompressor()
    off = 0
    for i, data in enumerate(extents):
        blob = cctx.compress(data)
        b.add(i % 3, off, len(data), blob, CODEC_ZSTD, extent_checksum(data))
        off += len(data)
    return b.finish(), extents


@given(st.lists(st.binary(min_size=1, max_size=5000), min_size=1, max_size=20))
def test_pack_round_trip(extents: list[bytes]) -> None:
    data, _ = _pack(extents)
    entries = read_index(data)
    dctx = zstandard.ZstdDecompressor()
    assert [decode_blob(data[e.pos:e.pos + e.stored], e.codec, e.length, dctx, "x") for e in entries] == extents
    assert [e.disk for e in entries] == [i % 3 for i in range(len(extents))]


def test_pack_truncated_or_flipped_is_refused() -> None:
    data, _ = _pack([b"a" * 1000, b"b" * 2000])
    with pytest.raises(CorruptObjectError):
        read_index(data[:-5])
    flipped = bytearray(data)
    flipped[-30] ^= 0xFF  # inside the index
    with pytest.raises(CorruptObjectError, match="checksum"):
        read_index(bytes(flipped))
    with pytest.raises(CorruptObjectError, match="not a godwit pack"):
        read_index(b"garbage" * 10)


def test_decode_blob_checks_length_and_codec() -> None:
    dctx = zstandard.ZstdDecompressor()
    blob = zstandard.ZstdCompressor().compress(b"x" * 100)
    assert decode_blob(blob, CODEC_ZSTD, 100, dctx, "e") == b"x" * 100
    with pytest.raises(CorruptObjectError):
        decode_blob(blob, CODEC_ZSTD, 99, dctx, "e")
    with pytest.raises(CorruptObjectError):
        decode_blob(blob[:-3], CODEC_ZSTD, 100, dctx, "e")
    with pytest.raises(CorruptObjectError, match="unknown codec"):
        decode_blob(blob, 7, 100, dctx, "e")
    assert decode_blob(b"raw", CODEC_RAW, 3, dctx, "e") == b"raw"


def _manifest() -> manifest.Manifest:
    return manifest.Manifest(
        store_id="s" * 32, server_uid="u" * 16, server_name="web01", cycle=3, parent=2,
        created="2026-11-25T10:00:00+00:00", consistency="none", block_size=65536, hash="xxh3-128",
        disks=[manifest.DiskManifest(0, 10 << 20, 10 << 20,
                                     [manifest.Extent(65536, 65536, "p" * 32, 8, 100, 1, b"\x01" * 16)],
                                     [(0, 65536)]),
               manifest.DiskManifest(1, 1 << 20, 0, [], [])])


def test_manifest_round_trip() -> None:
    m = _manifest()
    assert manifest.decode(m.encode()) == m


def test_manifest_truncated_or_damaged_is_refused() -> None:
    data = _manifest().encode()
    for bad in (data[:-1], data[: len(data) // 2], data[:8]):
        with pytest.raises(CorruptObjectError):
            manifest.decode(bad)
    flipped = bytearray(data)
    flipped[20] ^= 1
    with pytest.raises(CorruptObjectError, match="checksum"):
        manifest.decode(bytes(flipped))
    newer = bytearray(data)
    newer[4] = 9
    with pytest.raises(CorruptObjectError, match="version 9"):
        manifest.decode(bytes(newer))


def test_manifest_extent_past_disk_end_is_refused() -> None:
    m = _manifest()
    m.disks[0].extents[0] = manifest.Extent(10 << 20, 4096, "p" * 32, 8, 100, 1, b"\x01" * 16)
    with pytest.raises(CorruptObjectError, match="past"):
        manifest.decode(m.encode())


def test_blockhash_file_round_trip_and_damage(tmp_path: Path) -> None:
    p = tmp_path / "h.bin"
    digests = bytes(range(48))
    blockhashes.write(p, "xxh3-128", 4096, 4096 * 2 + 1, digests)
    assert blockhashes.read(p, "xxh3-128", 4096) == (8193, bytearray(digests))
    with pytest.raises(CorruptObjectError, match="other settings"):
        blockhashes.read(p, "blake3", 4096)
    raw = bytearray(p.read_bytes())
    raw[30] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError, match="checksum"):
        blockhashes.read(p, "xxh3-128", 4096)
    with pytest.raises(ValueError):
        blockhashes.write(p, "xxh3-128", 4096, 4096 * 5, digests)


def test_journal_round_trip_and_truncation() -> None:
    from godwit.format.pack import PackEntry

    entries = [journal.JournalEntry(PackEntry(1, 65536, 131072, 8, 500, 1, b"\x02" * 16), b"\x03" * 32),
               journal.JournalEntry(PackEntry(0, 0, 100, 508, 100, 0, b"\x04" * 16), b"\x05" * 16)]
    data = journal.encode(entries)
    assert journal.decode(data) == entries
    with pytest.raises(CorruptObjectError):
        journal.decode(data[:-3])


@pytest.mark.parametrize("mutate, match", [
    (lambda m: m.disks[0].extents.append(manifest.Extent(0, 65536 * 2, "p" * 32, 8, 1, 1, b"\x01" * 16)),
     "overlaps"),
    (lambda m: m.disks[0].zeros.append((1000, 65536)), "block-aligned"),
    (lambda m: setattr(m, "block_size", 3000), "power of two"),
    (lambda m: setattr(m, "parent", 3), "earlier cycle"),
    (lambda m: setattr(m, "consistency", "perfect"), "consistency"),
    (lambda m: setattr(m.disks[1], "previous_size", 2 << 20), "smaller"),
])
def test_manifest_rule_breakers_are_refused(mutate: object, match: str) -> None:
    m = _manifest()
    mutate(m)  # type: ignore[operator]
    with pytest.raises(CorruptObjectError, match=match):
        manifest.decode(m.encode())
