"""The local replica's write-behind (replicas/writer.py) and its undo journal's hole skipping.

Real files on the test's filesystem (ext4 here: O_DIRECT works) and on /dev/shm (tmpfs: it refuses
O_DIRECT, so the same large writes go through the page cache)."""

from __future__ import annotations

import fcntl
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.errors import ReplicaError
from godwit.replicas import writer as writer_mod
from godwit.replicas.local import LocalReplica
from godwit.replicas.undo import Undo

MiB = 1 << 20
SHM = Path("/dev/shm")


def _runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record every buffer the writer thread writes: (file offset, bytes)."""
    seen: list[tuple[int, int]] = []
    real = writer_mod.AlignedWriter._write_run

    def spy(self: writer_mod.AlignedWriter, run: writer_mod._Run) -> None:
        seen.append((run.start, run.end - run.start))
        real(self, run)

    monkeypatch.setattr(writer_mod.AlignedWriter, "_write_run", spy)
    return seen


def _apply(r: LocalReplica, number: int, size: int, writes: list[tuple[int, bytes]], model: bytearray) -> None:
    r.begin(number, [(o, len(d)) for o, d in writes], size)
    model.extend(bytes(max(0, size - len(model))))
    for off, data in writes:
        r.write(off, data)
        model[off:off + len(data)] = data
    r.seal(number)


def test_adjacent_writes_coalesce_into_few_direct_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = _runs(monkeypatch)
    r = LocalReplica(tmp_path / "rep", "d")
    model = bytearray()
    rng = random.Random(3)
    size = 40 * MiB
    chunks = [(o, rng.randbytes(64 << 10)) for o in range(0, 36 * MiB, 64 << 10)]  # 576 adjacent extents
    _apply(r, 1, size, chunks, model)
    assert len(runs) == -(-36 * MiB // writer_mod.BUFFER)  # one write per full buffer, not per extent
    assert all(n == writer_mod.BUFFER for _, n in runs[:-1])
    assert (tmp_path / "rep" / "d.img").read_bytes() == bytes(model)
    r.close()


def test_direct_io_is_used_where_the_filesystem_allows(tmp_path: Path) -> None:
    r = LocalReplica(tmp_path / "rep", "d")
    r.begin(1, [], 16 * MiB)
    r.write(0, os.urandom(16 * MiB))
    r.seal(1)
    assert r._writer is not None and r._writer.direct_bytes == 16 * MiB
    r.close()


def _refuse_direct_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test double for a filesystem that refuses O_DIRECT at open (older tmpfs, some FUSE): this
    machine's kernel (6.18) lets even tmpfs take direct I/O, so nothing real here refuses it."""
    real = os.open

    def fake_open(path: object, flags: int, *args: int, **kw: object) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real(path, flags, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", fake_open)


def _refuse_direct_write(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A test double for a filesystem that opens O_DIRECT but refuses the first direct write."""
    real = writer_mod._pwrite_all
    refused: list[int] = []

    def fake(fd: int, view: memoryview, offset: int) -> None:
        if os.O_DIRECT & fcntl.fcntl(fd, fcntl.F_GETFL):
            refused.append(offset)
            raise OSError(22, "Invalid argument")
        real(fd, view, offset)

    monkeypatch.setattr(writer_mod, "_pwrite_all", fake)
    return refused


@pytest.mark.parametrize("where", ["tmpfs", "refused-at-open", "refused-at-write"])
def test_o_direct_refusal_falls_back_to_the_same_bytes(where: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    refused: list[int] = []
    if where == "refused-at-open":
        _refuse_direct_open(monkeypatch)
    elif where == "refused-at-write":
        refused = _refuse_direct_write(monkeypatch)
    if where == "tmpfs" and not SHM.is_dir():
        pytest.skip("needs /dev/shm (tmpfs)")
    with tempfile.TemporaryDirectory(dir=SHM if where == "tmpfs" else tmp_path) as d:
        r = LocalReplica(Path(d), "d")
        model = bytearray()
        data = os.urandom(20 * MiB + 123)
        _apply(r, 1, 24 * MiB, [(4096 * 3 + 5, data)], model)
        assert r._writer is not None
        if where != "tmpfs":
            assert r._writer.direct_bytes == 0 and not r._writer._direct
        assert bool(refused) == (where == "refused-at-write")  # the refused bytes were written again
        with r.open_point(1) as p:
            assert p.read(0, p.size) == bytes(model)
        _apply(r, 2, 24 * MiB, [(7 * MiB, os.urandom(MiB))], model)
        with r.open_point(2) as p:
            assert p.read(0, p.size) == bytes(model)
        with r.open_point(1) as p:
            assert p.read(4096 * 3 + 5, len(data)) == data
        r.close()


def test_unaligned_scattered_and_overlapping_writes_land_in_order(tmp_path: Path) -> None:
    """Heads and tails off the 4 KiB grid, gaps, writes across buffer boundaries, and a later write
    over an earlier one (later wins), with small buffers so that every path is taken."""
    rng = random.Random(11)
    size = 6 * MiB + 777
    r = LocalReplica(tmp_path / "rep", "d")
    r._open()
    r._writer = writer_mod.AlignedWriter(r.live, r._fd, buffer=64 << 10, buffers=2)
    model = bytearray()
    writes = []
    for _ in range(300):
        n = rng.randrange(1, 300_000)
        off = rng.randrange(0, size - n)
        writes.append((off, rng.randbytes(n)))
        if rng.random() < 0.3:  # continue where it ended: a coalescing run crossing buffers
            off2 = off + n
            n2 = min(rng.randrange(1, 200_000), size - off2)
            if n2 > 0:
                writes.append((off2, rng.randbytes(n2)))
    _apply(r, 1, size, writes, model)
    assert r._writer.direct_bytes > 0
    assert (tmp_path / "rep" / "d.img").read_bytes() == bytes(model)
    r.close()


def test_zero_waits_for_queued_writes_of_the_same_bytes(tmp_path: Path) -> None:
    r = LocalReplica(tmp_path / "rep", "d")
    r.begin(1, [(0, 8 * MiB)], 8 * MiB)
    r.write(0, b"\xaa" * (8 * MiB))
    r.zero(MiB, 2 * MiB)  # must not be overtaken by the queued write
    r.seal(1)
    data = (tmp_path / "rep" / "d.img").read_bytes()
    assert data == b"\xaa" * MiB + bytes(2 * MiB) + b"\xaa" * (5 * MiB)
    r.close()


def test_a_failed_write_is_raised_by_the_next_call_and_rolls_back(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    r = LocalReplica(tmp_path / "rep", "d")
    first = os.urandom(4 * MiB)
    r.begin(1, [(0, 4 * MiB)], 4 * MiB)
    r.write(0, first)
    r.seal(1)
    r.begin(2, [(0, 4 * MiB)], 4 * MiB)

    def full(self: writer_mod.AlignedWriter, run: writer_mod._Run) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_mod.AlignedWriter, "_write_run", full)
    r.write(0, os.urandom(MiB))
    with pytest.raises(ReplicaError, match="No space left"):
        r.seal(2)
    assert r.points() == [1]
    monkeypatch.undo()
    r.abort(2)
    assert (tmp_path / "rep" / "d.img").read_bytes() == first
    r.close()


@pytest.fixture
def sparse_replica(tmp_path: Path) -> Iterator[tuple[LocalReplica, bytes]]:
    r = LocalReplica(tmp_path / "rep", "d")
    blob = os.urandom(MiB)
    r.begin(1, [(10 * MiB, MiB)], 64 * MiB)
    r.write(10 * MiB, blob)
    r.seal(1)
    yield r, blob
    r.close()


def test_undo_skips_holes_without_reading_them(sparse_replica: tuple[LocalReplica, bytes]) -> None:
    r, blob = sparse_replica
    r.begin(2, [(0, 64 * MiB)], 64 * MiB)  # the whole disk, of which 1 MiB holds data
    undo = Undo(r._undo_path(2))
    data_entries = [(e.offset, e.length) for e in undo.entries if e.pos >= 0]
    assert data_entries == [(10 * MiB, MiB)]
    assert r._undo_path(2).stat().st_size < MiB + 4096  # holes cost an entry, not their bytes
    r.write(0, os.urandom(64 * MiB))
    r.seal(2)
    with r.open_point(1) as p:
        old = p.read(0, p.size)
    assert old == bytes(10 * MiB) + blob + bytes(53 * MiB)
