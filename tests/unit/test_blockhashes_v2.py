"""Block-hash files version 2: any digest array round-trips through the streaming writer and the
windowed reader, version 1 files still read, and any damage is a CorruptObjectError."""

from __future__ import annotations

import itertools
import struct
import tempfile
from pathlib import Path

import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from godwit.engine.cycle.pipeline import HashTarget, Pipeline
from godwit.errors import CorruptObjectError
from godwit.format import blockhashes
from godwit.format.hashing import block_digest
from godwit.state import hashstore
from godwit.trackers import Kind, ScanTracker

BS = 4096
ALGO = "xxh3-128"


@st.composite
def disks(draw: st.DrawFn) -> tuple[int, bytes]:
    """(disk size, its digest array): runs of holes and of data of any length, a last block that
    may be partial and may be a hole."""
    count = draw(st.integers(1, 3000))
    size = count * BS - draw(st.sampled_from([0, 0, 1, 100, BS - 1]))
    zero, tail_zero = blockhashes.zero_digests(ALGO, BS, size)
    out = bytearray()
    while len(out) < count * 16:
        n = min(draw(st.integers(1, 700)), count - len(out) // 16)
        if draw(st.booleans()):
            out += zero * n
        else:
            out += draw(st.binary(min_size=16, max_size=16)) * n if draw(st.booleans()) else bytes(
                draw(st.randoms(use_true_random=False)).randbytes(16 * n))
    if draw(st.booleans()):  # the last block a hole, with its own (shorter) zero digest
        out[-16:] = tail_zero
    return size, bytes(out)


def _v1(path: Path, size: int, digests: bytes) -> None:
    """A version 1 file, made from docs/format.md (godwit 0.1 wrote these)."""
    body = struct.pack("<4sBBxxIQ", b"GWBH", 1, 1, BS, size) + digests
    path.write_bytes(body + xxhash.xxh3_128_digest(body))


def _windows(r: blockhashes.Reader, cuts: list[int]) -> bytes:
    edges = sorted({0, r.count, *(c % (r.count + 1) for c in cuts)})
    return b"".join(r.window(a, b) for a, b in itertools.pairwise(edges))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(disk=disks(), cuts=st.lists(st.integers(0, 4000), max_size=12), where=st.integers(0, 1 << 30),
       bit=st.integers(0, 7))
def test_v2_round_trips_any_digest_array_and_refuses_any_damage(disk: tuple[int, bytes], cuts: list[int],
                                                                where: int, bit: int) -> None:
    size, digests = disk
    with tempfile.TemporaryDirectory() as tmp:
        p = hashstore.path(Path(tmp), "disk", 1)
        w = blockhashes.Writer(p, ALGO, BS, size)  # fed in windows of any size, as the pipeline does
        edges = sorted({0, w.count, *(c % (w.count + 1) for c in cuts)})
        for a, b in itertools.pairwise(edges):
            w.add(a, digests[a * 16:b * 16])
        w.finish()
        w.publish()
        data = p.read_bytes()
        assert data[4] == 2
        zero, tail_zero = blockhashes.zero_digests(ALGO, BS, size)
        holes = sum(digests[i * 16:i * 16 + 16] == (tail_zero if i == w.count - 1 else zero) for i in range(w.count))
        assert len(data) <= 36 + 28 * (w.count - holes), "a hole costs nothing, a data block at most 28 bytes"
        assert blockhashes.read(p, ALGO, BS) == (size, bytearray(digests))
        with blockhashes.open_reader(p, ALGO, BS) as r:
            assert _windows(r, cuts[::-1]) == digests
        n = where % len(data)
        damaged = {"flipped": data[:n] + bytes([data[n] ^ (1 << bit)]) + data[n + 1:], "truncated": data[:n]}
        for raw in damaged.values():
            p.write_bytes(raw)
            with pytest.raises(CorruptObjectError):
                blockhashes.read(p, ALGO, BS)
            assert hashstore.open_digests(Path(tmp), "disk", 1, ALGO, BS) is None  # the cycle resends


@settings(max_examples=30, deadline=None)
@given(disk=disks(), cuts=st.lists(st.integers(0, 4000), max_size=8))
def test_v1_files_still_read_in_windows_in_any_order(disk: tuple[int, bytes], cuts: list[int]) -> None:
    size, digests = disk
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "h.bin"
        _v1(p, size, digests)
        with blockhashes.open_reader(p, ALGO, BS) as r:
            assert r.version == 1
            assert _windows(r, cuts) == digests
            edges = sorted({0, r.count, *(c % (r.count + 1) for c in cuts)})
            for a, b in reversed(list(itertools.pairwise(edges))):  # v1 reads anywhere
                assert r.window(a, b) == digests[a * 16:b * 16]


def test_v2_windows_go_forward_and_settings_must_match(tmp_path: Path) -> None:
    p = tmp_path / "h.bin"
    blockhashes.write(p, ALGO, BS, 10 * BS, bytes(range(16)) * 10)
    with blockhashes.open_reader(p, ALGO, BS) as r:
        r.window(4, 6)
        with pytest.raises(ValueError, match="back"):
            r.window(5, 7)
    with pytest.raises(CorruptObjectError, match="other settings"):
        blockhashes.open_reader(p, "blake3", BS)
    with pytest.raises(CorruptObjectError, match="other settings"):
        blockhashes.open_reader(p, ALGO, 2 * BS)
    with pytest.raises(ValueError, match="follow"):
        blockhashes.Writer(tmp_path / "w.bin", ALGO, BS, 10 * BS).add(1, bytes(16))


def test_a_hole_only_disk_costs_36_bytes(tmp_path: Path) -> None:
    size = (2 << 40) + 5  # 2 TiB and a partial block: 32 Mi digests that are all holes
    w = blockhashes.Writer(tmp_path / "h.bin", ALGO, 64 << 10, size)
    zero, tail = blockhashes.zero_digests(ALGO, 64 << 10, size)
    step = 1 << 14
    for a in range(0, w.count - 1, step):
        w.add(a, zero * min(step, w.count - 1 - a))
    w.add(w.count - 1, tail)
    w.finish()
    w.publish()
    assert (tmp_path / "h.bin").stat().st_size == 36
    with blockhashes.open_reader(tmp_path / "h.bin", ALGO, 64 << 10) as r:
        assert r.window(r.count - 3, r.count) == zero * 2 + tail


# -- the pipeline's run-wise change finder against its block-by-block one ----------------------

@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 200), data=st.data())
def test_unread_tasks_find_the_same_changes_as_block_by_block(n: int, data: st.DataObject) -> None:
    """A task that is not read (ZERO and UNCHANGED blocks) is compared with its base by runs; the
    result must equal the per-block loop's, journaled blocks and a short base included."""
    pipe = Pipeline(tracker=ScanTracker(), bs=BS, digest=block_digest(ALGO), compression_level=1, workers=1,
                    progress=None, hashes=HashTarget(Path("/nonexistent"), 1, ALGO))
    zero = pipe.zero_digest
    tail_zero = data.draw(st.sampled_from([zero, block_digest(ALGO)(bytes(100))]))
    kinds = data.draw(st.lists(st.sampled_from("ZU"), min_size=n, max_size=n))
    base_kinds = data.draw(st.lists(st.sampled_from("zd"), min_size=n, max_size=n))
    have = data.draw(st.sampled_from([n, n, data.draw(st.integers(0, n))]))
    with_base = data.draw(st.booleans()) or any(k == "U" for k in kinds)
    if with_base:
        kinds = [k if i < have else "Z" for i, k in enumerate(kinds)]  # UNCHANGED only where the base is
    base_l = [(tail_zero if i == n - 1 else zero) if bk == "z" else bytes([i % 251 + 1]) * 16
              for i, bk in enumerate(base_kinds)]
    base = b"".join(base_l[:have]) if with_base else None
    digests = b"".join(base_l[i] if k == "U" else (tail_zero if i == n - 1 else zero) for i, k in enumerate(kinds))
    first = 1000
    jn = []
    pos = 0
    while pos < n:  # journaled pieces, disjoint and in order
        a = pos + data.draw(st.integers(0, 40))
        b = min(n, a + data.draw(st.integers(1, 20)))
        if a >= n:
            break
        if data.draw(st.booleans()):
            jn.append((first + a, bytes(16 * (b - a))))
        pos = b
    # One ZERO run over the whole task: the read path's finder looks at every block of it.
    want = pipe._changes(digests, base, [(first * BS, n * BS, Kind.ZERO)], first * BS, n, tail_zero, first, jn)
    got = pipe._unread_changes(digests, base, n, tail_zero, first, jn)
    assert got == want


@pytest.mark.parametrize("io", [13, 16, 29, 64, 1000])
def test_run_headers_across_read_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, io: int) -> None:
    """The verifying pass and the windowed reader read the file in chunks; run headers and digests
    that straddle two chunks are read whole."""
    monkeypatch.setattr(blockhashes, "_IO", io)
    zero = blockhashes.zero_digests(ALGO, BS, 400 * BS)[0]
    digests = b"".join(bytes([i % 200 + 1]) * 16 if (i // 3) % 2 else zero for i in range(400))
    p = tmp_path / "h.bin"
    blockhashes.write(p, ALGO, BS, 400 * BS, digests)
    assert blockhashes.read(p, ALGO, BS) == (400 * BS, bytearray(digests))
    with blockhashes.open_reader(p, ALGO, BS) as r:
        assert b"".join(r.window(a, min(a + 7, 400)) for a in range(0, 400, 7)) == digests
    raw = bytearray(p.read_bytes())
    raw[20 + 12 + 48 + 8] ^= 1  # the second run's count: caught by the trailer
    p.write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError):
        blockhashes.read(p, ALGO, BS)
