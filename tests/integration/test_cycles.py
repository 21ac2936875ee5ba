"""Replication cycles against real images: replay of the manifests equals the source, always."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.errors import ConflictError, CorruptObjectError, SourceError
from godwit.project.project import Project, init
from tests.helpers import Replayer, convert, make_raw, read_view, scribble, write_at

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

SIZE = (16 << 20) + 3 * 4096  # not a multiple of the 64 KiB block


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vmdk"])
def test_replicate_write_replicate(project: Project, tmp_path: Path, fmt: str) -> None:
    raw = make_raw(tmp_path / "src.raw", SIZE, seed=1)
    disk = raw if fmt == "raw" else convert(raw, tmp_path / f"src.{fmt}", fmt)
    add_server(project, "web01", [str(disk)])
    res = replication.start(project, "web01")
    assert res is not None and res.kind == "initial" and res.number == 1
    replay = Replayer(project, "web01")
    replay.catch_up()
    assert bytes(replay.disks[0]) == read_view(disk, fmt)
    for i in range(2):
        scribble(disk, seed=10 + i, fmt=fmt)
        res = replication.cycle(project, "web01")
        assert res.kind == "delta" and res.number == 2 + i
        replay.catch_up()
        assert bytes(replay.disks[0]) == read_view(disk, fmt), f"cycle {res.number} differs"


def test_initial_cycle_skips_holes_and_zeros(project: Project, tmp_path: Path) -> None:
    img = tmp_path / "d.raw"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
        f.seek(1 << 20)
        f.write(b"\x01" * 65536)
        f.seek(3 << 20)
        f.write(bytes(1 << 20))  # allocated zeros: read, but not sent
    add_server(project, "s", [str(img)])
    res = replication.start(project, "s")
    assert res is not None
    assert res.bytes_changed == 65536
    assert res.bytes_read == 65536 + (1 << 20)  # holes are not read at all
    m = Replayer(project, "s").apply(1)
    assert sum(n for _, n in m.disks[0].zeros) == (8 << 20) - 65536


def test_unchanged_delta_sends_nothing(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", SIZE, seed=3)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    res = replication.cycle(project, "s")
    assert res.bytes_changed == 0 and res.bytes_sent == 0


def test_delta_sends_only_changed_blocks(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", SIZE, seed=4)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    write_at(img, 5 * 65536 + 100, b"\xaa" * 10)
    write_at(img, 9 * 65536, b"\xbb" * 65537)  # spills into a second block
    res = replication.cycle(project, "s")
    assert res.bytes_changed == 3 * 65536


def test_multi_disk_order_and_grow(project: Project, tmp_path: Path) -> None:
    a = make_raw(tmp_path / "a.raw", SIZE, seed=5)
    b = make_raw(tmp_path / "b.raw", 4 << 20, seed=6)
    add_server(project, "s", [str(a), str(b)])
    replication.start(project, "s")
    with open(b, "r+b") as f:  # the disk grows by an odd amount, with data at the end
        f.truncate((6 << 20) + 512)
        f.seek((6 << 20) - 100)
        f.write(b"\xcc" * 612)
    res = replication.cycle(project, "s")
    assert any("grew" in w for w in res.warnings)
    replay = Replayer(project, "s")
    replay.catch_up()
    assert bytes(replay.disks[0]) == a.read_bytes()
    assert bytes(replay.disks[1]) == b.read_bytes()
    assert project.db.disks(project.db.server("s").id)[1].size == (6 << 20) + 512


def test_shrunk_disk_pauses_and_keeps_committed(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", SIZE, seed=7)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    before = img.read_bytes()
    with open(img, "r+b") as f:
        f.truncate(SIZE - 65536)
    with pytest.raises(SourceError, match="shrank"):
        replication.cycle(project, "s")
    server = project.db.server("s")
    assert server.state == "paused" and "shrank" in (server.error or "")
    replay = Replayer(project, "s")
    replay.catch_up()
    assert replay.applied == 1 and bytes(replay.disks[0]) == before
    with open(img, "r+b") as f:  # restored: the next cycle works and unpauses
        f.truncate(SIZE)
    replication.cycle(project, "s")
    assert project.db.server("s").state == "replicating"


def test_missing_disk_is_a_clear_error(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", SIZE, seed=8)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    img.unlink()
    with pytest.raises(SourceError, match="does not exist"):
        replication.cycle(project, "s")


def test_cycle_needs_replication_enabled(project: Project, tmp_path: Path) -> None:
    add_server(project, "s", [str(make_raw(tmp_path / "d.raw", SIZE))])
    with pytest.raises(ConflictError, match="not enabled"):
        replication.cycle(project, "s")


def test_corrupted_pack_and_truncated_manifest_are_detected(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", SIZE, seed=9)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    uid = project.db.server("s").uid
    packs = sorted((project.cache_dir / "servers" / uid / "packs").iterdir())
    raw = bytearray(packs[0].read_bytes())
    raw[100] ^= 0xFF
    packs[0].write_bytes(bytes(raw))
    rows = replication.check_cache(project, "s")
    assert not rows[0]["ok"] and "damaged" in rows[0]["error"]
    with pytest.raises(CorruptObjectError):
        Replayer(project, "s").apply(1)
    scribble(img, seed=1)
    replication.cycle(project, "s")
    man = project.cache_dir / "servers" / uid / "cycles" / "0000000002.manifest"
    man.write_bytes(man.read_bytes()[:-7])
    rows = replication.check_cache(project, "s")
    assert not rows[1]["ok"] and "checksum" in rows[1]["error"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(min_value=1, max_value=300_000),
    rounds=st.lists(
        st.lists(st.tuples(st.floats(0, 1), st.integers(1, 40_000), st.sampled_from(["rand", "zero", "same"])),
                 max_size=6),
        min_size=1, max_size=4),
    block_kib=st.sampled_from([4, 8, 64]),
)
def test_property_replay_equals_source(size: int, rounds: list[list[tuple[float, int, str]]],
                                       block_kib: int) -> None:
    import random

    rng = random.Random(size)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        p = init(root / "proj")
        cfg = p.root / "godwit.toml"
        cfg.write_text(cfg.read_text().replace("block_size_kib = 64", f"block_size_kib = {block_kib}"))
        p.close()
        from godwit.project.project import open_project

        p = open_project(root / "proj")
        img = root / "d.raw"
        with open(img, "wb") as f:
            f.write(rng.randbytes(size))
        add_server(p, "s", [str(img)])
        replication.start(p, "s")
        replay = Replayer(p, "s")
        replay.catch_up()
        assert bytes(replay.disks[0]) == img.read_bytes()
        for writes in rounds:
            for frac, n, kind in writes:
                off = int(frac * (size - 1))
                n = min(n, size - off)
                data = {"rand": rng.randbytes(n), "zero": bytes(n)}.get(kind)
                if data is None:  # rewrite what is there: no change
                    data = img.read_bytes()[off:off + n]
                write_at(img, off, data)
            replication.cycle(p, "s")
            replay.catch_up()
            assert bytes(replay.disks[0]) == img.read_bytes()
        p.close()


def test_bandwidth_cap_holds_the_data_plane(project: Project, tmp_path: Path) -> None:
    import os
    import time

    img = tmp_path / "d.raw"
    img.write_bytes(os.urandom(6 << 20))  # incompressible: 6 MiB go on the wire
    add_server(project, "s", [str(img)])
    project.max_mbps_override = 24.0  # 3 MB/s
    t0 = time.monotonic()
    res = replication.start(project, "s")
    elapsed = time.monotonic() - t0
    assert res is not None
    # 6.3 MB at 3 MB/s, less the first quarter-second burst: at least ~1.8 s, nearly all held.
    assert elapsed >= 1.7
    assert res.t_throttle >= 1.5
    assert res.bottleneck == "throttle"


def test_stage_timers_are_kept_and_name_the_bottleneck(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", SIZE, seed=7, writes=40)
    add_server(project, "s", [str(img)])
    res = replication.start(project, "s")
    assert res is not None
    assert res.t_read > 0 and res.t_cpu > 0 and res.t_upload > 0 and res.t_wall >= res.t_read / 2
    assert res.t_throttle == 0 and res.bottleneck in ("source", "cpu", "store")
    [row] = replication.status(project, "s")[0].cycles
    assert (row.t_read, row.t_cpu, row.t_upload, row.bottleneck) == (
        res.t_read, res.t_cpu, res.t_upload, res.bottleneck)


def test_many_small_runs_between_holes(tmp_path: Path) -> None:
    """Tasks group small data runs and holes; changes in data, in holes, and data turned to zeros."""
    import random

    from godwit.project.project import open_project

    root = tmp_path / "proj"
    init(root).close()
    cfg = root / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("block_size_kib = 64", "block_size_kib = 4"))
    p = open_project(root)
    rng = random.Random(3)
    img = tmp_path / "d.raw"
    size = (9 << 20) + 1000
    with open(img, "wb") as f:
        f.truncate(size)
        for _ in range(400):  # small runs, mostly a few KiB, scattered across holes
            f.seek(rng.randrange(0, size - 9000))
            f.write(rng.randbytes(rng.randrange(1, 9000)))
    add_server(p, "s", [str(img)])
    replication.start(p, "s")
    replay = Replayer(p, "s")
    replay.catch_up()
    assert bytes(replay.disks[0]) == img.read_bytes()
    for _ in range(3):
        for _ in range(60):
            off = rng.randrange(0, size - 5000)
            n = rng.randrange(1, 5000)
            write_at(img, off, bytes(n) if rng.random() < 0.3 else rng.randbytes(n))
        replication.cycle(p, "s")
        replay.catch_up()
        assert bytes(replay.disks[0]) == img.read_bytes()
    p.close()


class _LandsThenReportsExists:
    """A store whose manifest create lands, then reports 'exists' (a retried request after a
    timeout), or finds someone else's manifest there."""

    def __init__(self, inner: object, foreign: bool) -> None:
        self.inner = inner
        self.foreign = foreign

    def put(self, key: str, data: bytes, *, overwrite: bool = True) -> None:
        from godwit.errors import ObjectExistsError

        if key.endswith(".manifest"):
            self.inner.put(key, b"someone else's" if self.foreign else data, overwrite=overwrite)  # type: ignore[attr-defined]
            raise ObjectExistsError("exists")
        self.inner.put(key, data, overwrite=overwrite)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.mark.parametrize("foreign", [False, True])
def test_manifest_create_retried_after_it_landed(project: Project, tmp_path: Path, foreign: bool) -> None:
    from godwit.errors import ObjectExistsError

    img = make_raw(tmp_path / "d.raw", SIZE, seed=21)
    add_server(project, "s", [str(img)])
    project.store_id()
    project._store = _LandsThenReportsExists(project.store, foreign)  # type: ignore[assignment]
    if foreign:
        with pytest.raises(ObjectExistsError, match="did not write"):
            replication.start(project, "s")
    else:
        res = replication.start(project, "s")
        assert res is not None and res.number == 1
        assert project.db.cycles(project.db.server("s").id)[0].state == "committed"


def _kill_a_delta_cycle(project: Project, tmp_path: Path) -> Path:
    """Replicate, change the disk, and die in the commit: a delta cycle stays open, packs journaled."""
    from godwit.engine.cycle import CycleRunner

    img = make_raw(tmp_path / "d.raw", SIZE, seed=31, writes=40)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    scribble(img, seed=32, writes=30)
    orig = CycleRunner._commit

    def die(*_a: object, **_k: object) -> None:
        raise SystemExit("killed in _commit")

    CycleRunner._commit = die  # type: ignore[method-assign]
    try:
        with pytest.raises(SystemExit):
            replication.cycle(project, "s")
    finally:
        CycleRunner._commit = orig  # type: ignore[method-assign]
    sid = project.db.server("s").id
    assert [c.number for c in project.db.cycles(sid, ("open",))] == [2]
    return img


@pytest.mark.parametrize("change", [("block_size_kib = 64", "block_size_kib = 32"),
                                    ("block_size_kib = 64", "block_size_kib = 128"),
                                    ('hash = "xxh3-128"', 'hash = "blake3"')])
def test_settings_changed_while_a_cycle_is_open(project: Project, tmp_path: Path, change: tuple[str, str]) -> None:
    """Issue 8.7: the open cycle was made with other settings; it is discarded with an event and a
    new cycle with the new settings replaces it (it used to fail on every run: "run ... overlaps")."""
    from godwit.engine.mover import apply_server
    from godwit.migrate import migration
    from godwit.project.project import open_project

    img = _kill_a_delta_cycle(project, tmp_path)
    cfg = project.root / "godwit.toml"
    assert change[0] in cfg.read_text()
    cfg.write_text(cfg.read_text().replace(*change))
    p = open_project(project.root)
    try:
        res = replication.cycle(p, "s")
        assert res.number == 3 and not res.resumed
        sid = p.db.server("s").id
        assert [(c.number, c.state) for c in p.db.cycles(sid)] == [(1, "committed"), (2, "discarded"),
                                                                    (3, "committed")]
        assert any("cycle 2 was interrupted" in e.message and "discarded" in e.message
                   for e in p.db.events("s"))
        from godwit.engine.reader import load_manifest

        uid = p.db.server("s").uid
        stored = {k.rsplit("/", 1)[-1].split(".")[0] for k in p.store.list(f"servers/{uid}/packs/")}
        live = {k for c in (1, 3) for k in load_manifest(p.store, uid, c).packs()}
        assert stored == live, "the discarded cycle's packs are deleted"
        apply_server(p, "s")
        out = migration.test_migration(p, "s", out_dir=tmp_path / "out")
        assert Path(out.files[0]).read_bytes() == img.read_bytes()
        assert migration.verify(p, "s").ok
    finally:
        p.close()


def test_same_settings_still_resume_the_open_cycle(project: Project, tmp_path: Path) -> None:
    img = _kill_a_delta_cycle(project, tmp_path)
    res = replication.cycle(project, "s")
    assert res.number == 2 and res.resumed and res.packs_reused > 0
    replay = Replayer(project, "s")
    replay.catch_up()
    assert bytes(replay.disks[0]) == img.read_bytes()


def test_an_open_cycle_of_another_tracker_is_not_resumed(project: Project, tmp_path: Path) -> None:
    from godwit.engine.cycle import run_cycle
    from godwit.trackers import ScanTracker

    class OtherTestTracker(ScanTracker):  # test double: the scan under another name
        name = "test-other"

    img = _kill_a_delta_cycle(project, tmp_path)
    res = run_cycle(project, "s", tracker=OtherTestTracker())
    assert res.number == 3 and not res.resumed and res.bytes_changed > 0
    replay = Replayer(project, "s")
    replay.catch_up()
    assert bytes(replay.disks[0]) == img.read_bytes()


@pytest.mark.parametrize("bs_kib, resumed", [(64, True), (32, False)])
def test_an_open_cycle_from_before_settings_were_kept(project: Project, tmp_path: Path, bs_kib: int,
                                                      resumed: bool) -> None:
    """A cycle opened by an older godwit has no settings row: its journal's shape decides."""
    from godwit.project.project import open_project
    from godwit.state import schema

    img = _kill_a_delta_cycle(project, tmp_path)
    with project.db.tx() as c:
        assert c.execute(schema.meta.delete().where(schema.meta.c.key.like("cycle-settings/%"))).rowcount == 1
    cfg = project.root / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("block_size_kib = 64", f"block_size_kib = {bs_kib}"))
    p = open_project(project.root)
    try:
        res = replication.cycle(p, "s")
        assert res.resumed is resumed and res.number == (2 if resumed else 3)
        replay = Replayer(p, "s")
        replay.catch_up()
        assert bytes(replay.disks[0]) == img.read_bytes()
    finally:
        p.close()


def test_a_cycle_names_its_clones_by_server_disk_and_cycle(tmp_path: Path) -> None:
    """Issue 8.2 at the engine: two disks named alike get clones named per server uid, disk and cycle."""
    import os

    from godwit.engine.cycle import run_cycle
    from godwit.sources.base import DiskSource
    from godwit.sources.file import FileSource
    from godwit.trackers import Region, ScanTracker, TrackedDisk
    from tests.reflinkfs import reflink_filesystem

    class CloneNamesTestTracker(ScanTracker):  # test double: the scan, noting each source's clone
        name = "scan"

        def __init__(self) -> None:
            self.seen: list[str | None] = []

        def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]:
            self.seen.append(source.clone_name if isinstance(source, FileSource) else None)
            return super().regions(disk, source, base)

    with reflink_filesystem(tmp_path) as xfs:
        p = init(xfs / "proj")
        try:
            paths = []
            for name in ("a", "b"):
                (xfs / name).mkdir()
                paths.append(xfs / name / "disk.img")
                paths[-1].write_bytes(os.urandom(1 << 20))
            add_server(p, "s", [str(q) for q in paths])
            tracker = CloneNamesTestTracker()
            res = run_cycle(p, "s", tracker=tracker)
            assert res.consistency == "crash"
            uid = p.db.server("s").uid
            assert tracker.seen == [f"{uid}-d0-c1.clone", f"{uid}-d1-c1.clone"]
            replay = Replayer(p, "s")
            replay.catch_up()
            assert [bytes(replay.disks[i]) for i in (0, 1)] == [q.read_bytes() for q in paths]
        finally:
            p.close()
