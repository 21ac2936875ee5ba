"""The change-tracker contract (godwit.trackers.base), checked against every tracker.

Each tracker runs a series of cycles on a real raw image, the mover applies them, and the
replica's recovery point must be bit-exact with the source, and ``verify`` must agree with the
block hashes. ``bitmap`` runs on live disks instead: qcow2 images served by a real
qemu-storage-daemon (``LiveDisk``), written through its NBD export as a guest would. Besides
``scan``, a test double (``WrittenRegionsTestTracker``) reports only the regions the test wrote,
and everything else as UNCHANGED: it proves that the engine copies the base's digests forward and
never needs to read what a tracker says is unchanged.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from godwit.engine.cycle import CycleRunner, run_cycle
from godwit.engine.cycle.changes import block_runs
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import GodwitError, StoreError
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.sources import open_source
from godwit.sources.base import DiskSource
from godwit.trackers import BitmapTracker, ChangeTracker, Kind, Region, ScanTracker, TrackedDisk
from tests.qemu_daemon import QemuDaemon

BS = 64 << 10
SIZE = (8 << 20) + 3 * 4096  # a partial last block


class WrittenRegionsTestTracker(ChangeTracker):
    """TEST DOUBLE, not a product tracker: reports as CHANGED only the byte ranges that the test
    wrote through ``write``, and everything else as UNCHANGED (without a base: all CHANGED)."""

    name = "test-written-regions"

    def __init__(self) -> None:
        self.dirty: dict[Path, list[tuple[int, int]]] = {}
        self.reported: dict[Path, int] = {}  # how many of dirty[path] the last regions() call covered
        self.asked: list[int | None] = []
        self.commits: list[int] = []
        self.failures: list[int] = []

    def note(self, path: Path, offset: int, length: int) -> None:
        self.dirty.setdefault(path.resolve(), []).append((offset, length))

    def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]:
        self.asked.append(base)
        key = disk.path.resolve()
        dirty = self.dirty.get(key, [])
        self.reported[key] = len(dirty)
        if base is None:
            if source.size:
                yield Region(0, source.size, Kind.CHANGED)
            return
        marks = sorted((max(0, o), min(o + n, source.size)) for o, n in dirty if o < source.size)
        pos = 0
        for a, b in marks:
            if b <= pos:
                continue
            a = max(a, pos)
            if a > pos:
                yield Region(pos, a - pos, Kind.UNCHANGED)
            yield Region(a, b - a, Kind.CHANGED)
            pos = b
        if pos < source.size:
            yield Region(pos, source.size - pos, Kind.UNCHANGED)

    def committed(self, disk: TrackedDisk, cycle: int) -> None:
        key = disk.path.resolve()
        self.commits.append(cycle)
        self.dirty[key] = self.dirty.get(key, [])[self.reported.pop(key, 0):]

    def failed(self, disk: TrackedDisk, cycle: int) -> None:
        self.failures.append(cycle)  # the changes stay in ``dirty`` for the next cycle


TRACKERS: dict[str, Callable[[], ChangeTracker]] = {"scan": ScanTracker, "written-regions": WrittenRegionsTestTracker,
                                                     "bitmap": BitmapTracker}


class Disk:
    """A raw image whose every write is also told to the tracker (as a guest's writes would be)."""

    def __init__(self, path: Path, tracker: ChangeTracker, size: int = SIZE, seed: int = 1) -> None:
        self.path, self.tracker = path, tracker
        self.rng = random.Random(seed)
        with open(path, "wb") as f:
            f.truncate(size)
        for _ in range(12):
            self.write(self.rng.randrange(size - 300_000), self.rng.randbytes(self.rng.randrange(1, 300_000)))

    def write(self, offset: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        if isinstance(self.tracker, WrittenRegionsTestTracker):
            self.tracker.note(self.path, offset, len(data))

    @property
    def spec(self) -> str:
        return str(self.path)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def contents(self) -> bytes:
        return self.path.read_bytes()

    def write_untold(self, offset: int, data: bytes) -> None:
        """A change no test double is told of (a real tracker may still see it)."""
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def source(self, tmp_path: Path) -> DiskSource:
        return open_source(self.path, "raw")

    def grow(self, size: int) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(size)  # new bytes read as zeros: no write, nothing told to the tracker

    def scribble(self, writes: int = 6) -> None:
        size = self.size
        for _ in range(writes):
            n = self.rng.randrange(1, 200_000)
            off = self.rng.randrange(size - n)
            self.write(off, self.rng.randbytes(n) if self.rng.random() < 0.7 else bytes(n))


class LiveDisk(Disk):
    """A qcow2 disk of a running qemu-storage-daemon; the test's writes are the guest's."""

    def __init__(self, path: Path, tracker: ChangeTracker, size: int = SIZE, seed: int = 1) -> None:
        self.daemon = QemuDaemon(path, size=size, fleece_dir=path / "fleece").start()
        _DAEMONS.append(self.daemon)
        self.path = path
        self.tracker = tracker
        self.rng = random.Random(seed)
        for _ in range(12):
            self.write(self.rng.randrange(size - 300_000), self.rng.randbytes(self.rng.randrange(1, 300_000)))

    @property
    def spec(self) -> str:
        return self.daemon.spec

    @property
    def size(self) -> int:
        nodes = {n["node-name"]: n for n in self.daemon.qmp("query-named-block-nodes", flat=True)}
        return int(nodes["disk0"]["image"]["virtual-size"])

    def contents(self) -> bytes:
        return self.daemon.read_all()

    def write(self, offset: int, data: bytes) -> None:
        self.daemon.write(offset, data)

    def write_untold(self, offset: int, data: bytes) -> None:
        self.daemon.write(offset, data)

    def source(self, tmp_path: Path) -> DiskSource:
        return open_source(Path(self.spec), "qemu-live", snapshot_dir=tmp_path / "snapshots")

    def grow(self, size: int) -> None:
        self.daemon.resize(-(-size // 512) * 512)


_DAEMONS: list[QemuDaemon] = []


@pytest.fixture(params=sorted(TRACKERS))
def tracker(request: pytest.FixtureRequest) -> Iterator[ChangeTracker]:
    if request.param == "bitmap" and shutil.which("qemu-storage-daemon") is None:
        pytest.fail("the bitmap tracker's conformance needs qemu-storage-daemon (qemu-system-common)")
    yield TRACKERS[request.param]()
    while _DAEMONS:
        _DAEMONS.pop().kill()


def _disk(path: Path, tracker: ChangeTracker, size: int = SIZE, seed: int = 1) -> Disk:
    if isinstance(tracker, BitmapTracker):
        return LiveDisk(path.with_suffix(""), tracker, -(-size // 512) * 512, seed)
    return Disk(path, tracker, size, seed)


def _cycle(project: Project, tracker: ChangeTracker) -> int:
    return run_cycle(project, "s", tracker=tracker).number


def _assert_replica_exact(project: Project, tmp_path: Path, disks: list[Disk]) -> None:
    apply_server(project, "s")
    out = tmp_path / f"out{random.random()}"
    res = migration.test_migration(project, "s", out_dir=out)
    for f, d in zip(res.files, disks, strict=True):
        assert Path(f).read_bytes() == d.contents(), f"{f} differs from {d.spec}"
    assert migration.verify(project, "s").ok
    shutil.rmtree(out)


def _setup(project: Project, tmp_path: Path, tracker: ChangeTracker, n: int = 1) -> list[Disk]:
    disks = [_disk(tmp_path / f"d{i}.raw", tracker, SIZE + i * 5000, seed=i) for i in range(n)]
    add_server(project, "s", [d.spec for d in disks])
    project.db.set_server_state(project.db.server("s").id, "replicating")
    return disks


def test_series_of_cycles_gives_a_bit_exact_replica(project: Project, tmp_path: Path, tracker: ChangeTracker) -> None:
    disks = _setup(project, tmp_path, tracker, n=2)
    assert _cycle(project, tracker) == 1
    _assert_replica_exact(project, tmp_path, disks)
    for rnd in range(4):
        disks[rnd % 2].scribble()
        if rnd == 1:
            disks[0].write(BS * 3, bytes(BS * 2))  # data becomes zeros
            disks[1].write(SIZE + 5000 - 10, b"tail-end!!")  # the partial last block
        if rnd == 2:  # grows by an odd amount; the old partial last block is read again
            disks[1].grow(SIZE + 5000 + 3 * BS + 700)
            disks[1].write(SIZE + 5000 + 2 * BS, b"grown" * 100)
        _cycle(project, tracker)
        _assert_replica_exact(project, tmp_path, disks)
    unchanged = run_cycle(project, "s", tracker=tracker)
    assert unchanged.bytes_sent == 0 and unchanged.bytes_changed == 0


def test_only_reported_regions_are_read(project: Project, tmp_path: Path, tracker: ChangeTracker) -> None:
    [disk] = _setup(project, tmp_path, tracker)
    _cycle(project, tracker)
    disk.write(5 * BS + 100, b"x" * 10)
    res = run_cycle(project, "s", tracker=tracker)
    assert res.bytes_changed == BS
    if isinstance(tracker, WrittenRegionsTestTracker):
        assert res.bytes_read == BS  # the one block it reported; the rest was never read
        assert tracker.asked == [None, 1]
    _assert_replica_exact(project, tmp_path, [disk])


def test_digests_carried_forward_stay_true_for_a_later_scan(project: Project, tmp_path: Path,
                                                            tracker: ChangeTracker) -> None:
    """Blocks a tracker reported UNCHANGED keep their real digests: a later scan that finds them
    zeroed must see a change (with zero digests written forward it would not, and lose it)."""
    [disk] = _setup(project, tmp_path, tracker)
    _cycle(project, tracker)
    for _ in range(2):
        disk.scribble(3)
        _cycle(project, tracker)
    scan = ScanTracker()
    disk.write_untold(0, bytes(SIZE))  # a whole-disk zeroing no test double was told of
    run_cycle(project, "s", tracker=scan)
    _assert_replica_exact(project, tmp_path, [disk])


def test_a_failed_cycle_keeps_the_changes(project: Project, tmp_path: Path, tracker: ChangeTracker,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    [disk] = _setup(project, tmp_path, tracker)
    _cycle(project, tracker)
    disk.scribble()

    def refuse(*_a: object, **_k: object) -> None:
        raise StoreError("the store went away")

    with monkeypatch.context() as m:
        m.setattr(CycleRunner, "_commit", refuse)
        with pytest.raises(StoreError):
            run_cycle(project, "s", tracker=tracker)
    if isinstance(tracker, WrittenRegionsTestTracker):
        assert tracker.failures == [2] and tracker.commits == [1]
    res = run_cycle(project, "s", tracker=tracker)
    assert res.number == 2 and res.resumed
    _assert_replica_exact(project, tmp_path, [disk])


def test_without_a_base_the_whole_disk_is_read(project: Project, tmp_path: Path, tracker: ChangeTracker) -> None:
    [disk] = _setup(project, tmp_path, tracker)
    first = run_cycle(project, "s", tracker=tracker)
    uid = project.db.disks(project.db.server("s").id)[0].uid
    shutil.rmtree(project.hashes_dir / uid)  # the base's digests are gone
    disk.write(0, b"y" * 100)
    disk.write_untold(7 * BS, b"z" * 100)  # no test double was told of it: only a full read finds it
    res = run_cycle(project, "s", tracker=tracker)
    assert res.bytes_read >= first.bytes_read
    if isinstance(tracker, WrittenRegionsTestTracker):
        assert tracker.asked[-1] is None
    _assert_replica_exact(project, tmp_path, [disk])


def test_regions_cover_the_disk_in_order(tmp_path: Path, tracker: ChangeTracker) -> None:
    disk = _disk(tmp_path / "d.raw", tracker)
    for base in (None, 1):
        src = disk.source(tmp_path)  # one open per call: a live disk freezes once per open
        try:
            pos = 0
            for r in tracker.regions(TrackedDisk("u", 0, Path(disk.spec)), src, base):
                assert r.offset == pos and r.length > 0 and isinstance(r.kind, Kind)
                pos += r.length
            assert pos == src.size
        finally:
            src.close()


def test_resync_forces_what_the_tracker_forgot(project: Project, tmp_path: Path, tracker: ChangeTracker) -> None:
    """A resync discards a committed cycle whose changes the tracker already forgot (it was told
    the cycle committed): the engine reads the forced ranges whatever the tracker says."""
    from godwit.engine import lifecycle

    [disk] = _setup(project, tmp_path, tracker)
    _cycle(project, tracker)
    apply_server(project, "s")
    disk.scribble()
    assert _cycle(project, tracker) == 2
    assert lifecycle.resync(project, "s") == [2]
    res = run_cycle(project, "s", tracker=tracker)
    assert res.number == 3 and res.bytes_changed > 0
    _assert_replica_exact(project, tmp_path, [disk])


class _IgnoresBaseTestTracker(WrittenRegionsTestTracker):
    """TEST DOUBLE: reports UNCHANGED even without a base, which the contract tells the engine to
    read anyway."""

    name = "test-ignores-base"

    def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]:
        return super().regions(disk, source, 0 if base is None else base)


def test_unchanged_without_a_base_is_read(project: Project, tmp_path: Path) -> None:
    tracker = _IgnoresBaseTestTracker()
    [disk] = _setup(project, tmp_path, tracker)
    tracker.dirty.clear()  # the first cycle is told nothing: all UNCHANGED
    first = run_cycle(project, "s", tracker=tracker)
    assert first.bytes_changed > 0
    _assert_replica_exact(project, tmp_path, [disk])


class _GappyTracker(ScanTracker):
    name = "test-gappy"

    def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]:
        yield Region(0, BS, Kind.CHANGED)  # and nothing for the rest of the disk


def test_a_tracker_that_breaks_the_contract_is_a_clear_error(project: Project, tmp_path: Path) -> None:
    _setup(project, tmp_path, ScanTracker())
    with pytest.raises(GodwitError, match="test-gappy"):
        run_cycle(project, "s", tracker=_GappyTracker())
    assert project.db.cycles(project.db.server("s").id, ("committed",)) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3 * 4096), st.sampled_from(list(Kind))), min_size=1, max_size=30))
def test_block_runs_rounds_regions_to_blocks(pieces: list[tuple[int, Kind]]) -> None:
    bs = 4096
    regions, pos = [], 0
    for n, k in pieces:
        regions.append(Region(pos, n, k))
        pos += n
    size = pos
    per_block: list[set[Kind]] = [set() for _ in range(-(-size // bs))]
    for r in regions:
        for b in range(r.offset // bs, -(-(r.offset + r.length) // bs)):
            per_block[b].add(r.kind)
    want = [next(iter(s)) if len(s) == 1 else Kind.CHANGED for s in per_block]
    got: list[Kind] = []
    end = 0
    for off, n, k in block_runs(regions, size, bs):
        assert off == end and off % bs == 0 and n > 0
        got.extend([k] * -(-n // bs))
        end = off + n
    assert end == size and got == want
