"""Manifest format 2: the ``fs`` consistency value, written only where it is needed, and the
optional ``consistency_detail`` (docs/format.md, "Manifest version 2")."""

from __future__ import annotations

import json

import pytest
import xxhash
import zstandard

from godwit.errors import CorruptObjectError
from godwit.format import manifest


def _manifest(consistency: str, detail: str = "") -> manifest.Manifest:
    return manifest.Manifest("s" * 32, "u" * 16, "web01", 2, 1, "2026-12-01T19:00:00+00:00", consistency, 4096,
                             "xxh3-128", [manifest.DiskManifest(0, 8192, 8192, [], [(0, 4096)])], detail)


def _rewrite(data: bytes, version: int, **changes: object) -> bytes:
    doc = json.loads(zstandard.ZstdDecompressor().decompress(data[8:-16]))
    doc.update(changes)
    head = b"GWMF" + bytes([version, 0, 0, 0]) + zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
    return head + xxhash.xxh3_128_digest(head)


@pytest.mark.parametrize(("consistency", "version"), [("none", 1), ("crash", 1), ("fs", 2)])
def test_written_in_the_lowest_version_that_holds_it(consistency: str, version: int) -> None:
    m = _manifest(consistency, "filesystem-consistent (guest agent fsfreeze, fleecing)")
    data = m.encode()
    assert data[4] == version
    assert manifest.decode(data) == m


def test_a_manifest_without_a_detail_reads_as_empty() -> None:
    data = _rewrite(_manifest("crash").encode(), 1)
    assert "consistency_detail" not in json.loads(zstandard.ZstdDecompressor().decompress(data[8:-16]))
    assert manifest.decode(data).consistency_detail == ""


def test_fs_in_a_version_1_manifest_or_an_unknown_value_is_refused() -> None:
    v1 = _manifest("crash").encode()
    with pytest.raises(CorruptObjectError, match="does not exist in format version 1"):
        manifest.decode(_rewrite(v1, 1, consistency="fs"))
    with pytest.raises(CorruptObjectError, match="unknown consistency"):
        manifest.decode(_rewrite(v1, 2, format=2, consistency="app"))
    with pytest.raises(CorruptObjectError, match="format version 3; this godwit reads 1, 2"):
        manifest.decode(_rewrite(v1, 3, format=3))
    with pytest.raises(CorruptObjectError, match="body has format"):
        manifest.decode(_rewrite(_manifest("fs").encode(), 2, format=1))
