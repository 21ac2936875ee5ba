"""The replica-disk contract (replicas/base.py), run against every implementation."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from godwit.errors import GodwitError, NotFoundError
from godwit.replicas.base import ReplicaDisk
from godwit.replicas.local import LocalReplica

Factory = Callable[[str], ReplicaDisk]
MiB = 1 << 20


@pytest.fixture(params=["local", pytest.param("azure", marks=pytest.mark.azure)])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    if request.param == "local":
        return lambda name: LocalReplica(tmp_path / "replicas", name)
    f: Factory = request.getfixturevalue("azure_replica_factory")
    return f


class Model:
    def __init__(self) -> None:
        self.data = bytearray()

    def apply(self, r: ReplicaDisk, number: int, size: int, writes: list[tuple[int, bytes | None, int]]) -> None:
        ranges = [(o, n) for o, _, n in writes]
        r.begin(number, ranges, size)
        if len(self.data) < size:
            self.data.extend(bytes(size - len(self.data)))
        for off, data, n in writes:
            if data is None:
                r.zero(off, n)
                self.data[off:off + n] = bytes(n)
            else:
                r.write(off, data)
                self.data[off:off + n] = data
        r.seal(number)


def _writes(rng: random.Random, size: int, count: int) -> list[tuple[int, bytes | None, int]]:
    out: list[tuple[int, bytes | None, int]] = []
    for _ in range(count):
        n = rng.randrange(1, 200_000)
        off = rng.randrange(0, size - n)
        out.append((off, None if rng.random() < 0.25 else rng.randbytes(n), n))
    return out


def _read_all(r: ReplicaDisk, number: int) -> bytes:
    with r.open_point(number) as p:
        return p.read(0, p.size)


def test_points_read_back_while_later_cycles_apply(factory: Factory) -> None:
    rng = random.Random(1)
    r = factory("conf-a")
    m = Model()
    snapshots: dict[int, bytes] = {}
    size = 3 * MiB + 4096
    for n in range(1, 5):
        m.apply(r, n, size, _writes(rng, size, 8))
        snapshots[n] = bytes(m.data)
    assert r.points() == [1, 2, 3, 4]
    for n, expected in snapshots.items():
        assert _read_all(r, n) == expected, f"point {n}"
    with r.open_point(2) as p:
        assert p.read(4097, 1000) == snapshots[2][4097:5097]
    r.close()


def test_grow_keeps_old_size_for_old_points(factory: Factory) -> None:
    r = factory("conf-grow")
    m = Model()
    m.apply(r, 1, 2 * MiB, [(100, b"a" * 5000, 5000)])
    first = bytes(m.data)
    m.apply(r, 2, 3 * MiB, [(3 * MiB - 700, b"b" * 700, 700)])
    with r.open_point(1) as p:
        assert p.size == 2 * MiB
        assert p.read(0, p.size) == first
    assert _read_all(r, 2) == bytes(m.data)
    r.close()


def test_begin_again_after_a_partial_apply(factory: Factory) -> None:
    rng = random.Random(2)
    size = 2 * MiB
    r = factory("conf-crash")
    m = Model()
    m.apply(r, 1, size, _writes(rng, size, 5))
    point1 = bytes(m.data)
    writes = _writes(rng, size, 6)
    r.begin(2, [(o, n) for o, _, n in writes], size)
    for off, data, n in writes[:3]:  # the process dies here
        if data is None:
            r.zero(off, n)
        else:
            r.write(off, data)
    r.close()
    r = factory("conf-crash")
    assert _read_all(r, 1) == point1  # still readable mid-apply
    m.apply(r, 2, size, writes)
    assert _read_all(r, 1) == point1
    assert _read_all(r, 2) == bytes(m.data)
    r.close()


def test_abort_rolls_back(factory: Factory) -> None:
    rng = random.Random(3)
    size = 2 * MiB
    r = factory("conf-abort")
    m = Model()
    m.apply(r, 1, size, _writes(rng, size, 5))
    point1 = bytes(m.data)
    writes = _writes(rng, size, 6)
    r.begin(2, [(o, n) for o, _, n in writes], 3 * MiB)
    for off, data, _n in writes:
        if data is not None:
            r.write(off, data)
    r.abort(2)
    assert r.points() == [1]
    assert _read_all(r, 1) == point1
    m.apply(r, 2, size, writes)  # the same cycle can be applied after an abort
    assert _read_all(r, 2) == bytes(m.data)
    r.close()


def test_release(factory: Factory) -> None:
    r = factory("conf-rel")
    m = Model()
    for n in (1, 2, 3):
        m.apply(r, n, MiB, [(n * 1000, bytes([n]) * 3000, 3000)])
    r.release(1)
    r.release(1)  # idempotent
    assert r.points() == [2, 3]
    with pytest.raises(NotFoundError):
        r.open_point(1)
    with pytest.raises(GodwitError):
        r.release(3)  # the live point
    assert _read_all(r, 3) == bytes(m.data)
    r.remove()


def test_unaligned_and_zero_writes(factory: Factory) -> None:
    r = factory("conf-align")
    m = Model()
    size = MiB + 1536
    m.apply(r, 1, size, [(1, b"\xff" * (MiB - 3), MiB - 3), (MiB + 1000, b"\x01" * 536, 536)])
    point1 = bytes(m.data)
    assert point1[:1] == b"\0" and point1[MiB - 2:MiB + 1000] == bytes(1002)  # the edges stay zero
    assert _read_all(r, 1) == point1
    m.apply(r, 2, size, [(513, None, 700), (MiB + 1535, b"\x02", 1)])
    assert _read_all(r, 2) == bytes(m.data)
    assert _read_all(r, 1) == point1  # the edge pages patched in cycle 2 are copies, not shared
    r.close()


def test_writes_behind_in_order_and_copy_the_caller_buffer(factory: Factory) -> None:
    """write() may queue, but the caller's buffer is free once it returns, and a later write or
    zero of the same bytes wins over an earlier one still queued."""
    r = factory("conf-behind")
    size = 2 * MiB
    r.begin(1, [(0, size)], size)
    buf = bytearray(b"\x11" * MiB)
    r.write(0, buf)
    buf[:] = b"\x99" * MiB  # reused by the caller: must not reach the disk
    r.write(MiB - 4096, b"\x22" * 8192)  # over the end of the queued write
    r.write(MiB + 4096, b"\x33" * 65536)
    r.zero(MiB + 8192, 4096)  # inside the queued write above
    r.seal(1)
    expected = bytearray(size)
    expected[0:MiB] = b"\x11" * MiB
    expected[MiB - 4096:MiB + 4096] = b"\x22" * 8192
    expected[MiB + 4096:MiB + 4096 + 65536] = b"\x33" * 65536
    expected[MiB + 8192:MiB + 12288] = bytes(4096)
    assert _read_all(r, 1) == bytes(expected)
    r.close()
