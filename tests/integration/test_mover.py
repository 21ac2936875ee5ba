"""The mover, recovery points, verify and migration on the embedded default."""

from __future__ import annotations

from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import CorruptObjectError, MigrationError, NotFoundError, UsageError, VerifyMismatchError
from godwit.migrate import migration
from godwit.project.project import Project
from tests.helpers import make_raw, scribble

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

SIZE = (12 << 20) + 5 * 4096


def _setup(project: Project, tmp_path: Path, n: int = 1) -> list[Path]:
    disks = [make_raw(tmp_path / f"d{i}.raw", SIZE + i * 65536, seed=i) for i in range(n)]
    add_server(project, "s", [str(d) for d in disks])
    replication.start(project, "s")
    return disks


def test_apply_in_order_and_older_points(project: Project, tmp_path: Path) -> None:
    disks = _setup(project, tmp_path, 2)
    views = {1: [d.read_bytes() for d in disks]}
    for c in (2, 3, 4):
        scribble(disks[c % 2], seed=c)
        replication.cycle(project, "s")
        views[c] = [d.read_bytes() for d in disks]
    results = apply_server(project, "s")
    assert [r.cycle for r in results] == [1, 2, 3, 4]
    points = [rp["number"] for rp in migration.recovery_points(project, "s")]
    assert points == [2, 3, 4]  # keep_recovery_points = 3
    for rp in (2, 3, 4):
        res = migration.test_migration(project, "s", recovery_point=str(rp), fmt="raw", out_dir=tmp_path / f"o{rp}")
        for i, f in enumerate(res.files):
            assert Path(f).read_bytes() == views[rp][i], f"rp {rp} disk {i}"
        assert migration.verify(project, "s", str(rp)).ok
    with pytest.raises(NotFoundError, match="released"):
        migration.test_migration(project, "s", recovery_point="1", out_dir=tmp_path / "o1")
    with pytest.raises(NotFoundError, match="does not exist"):
        migration.test_migration(project, "s", recovery_point="99", out_dir=tmp_path / "o99")
    # Cache objects of applied cycles are released.
    uid = project.db.server("s").uid
    assert list(project.store.list(f"servers/{uid}/")) == []


def test_corrupt_pack_rolls_back_and_flags(project: Project, tmp_path: Path) -> None:
    disks = _setup(project, tmp_path)
    apply_server(project, "s")
    before = (next(project.replicas_dir.glob("s-*/disk0-*.img"))).read_bytes()
    scribble(disks[0], seed=42, writes=40)
    replication.cycle(project, "s")
    uid = project.db.server("s").uid
    packs = sorted((project.cache_dir / "servers" / uid / "packs").iterdir())
    raw = bytearray(packs[-1].read_bytes())
    raw[200] ^= 0x55
    packs[-1].write_bytes(bytes(raw))
    with pytest.raises(CorruptObjectError, match="cannot be applied"):
        apply_server(project, "s")
    assert (next(project.replicas_dir.glob("s-*/disk0-*.img"))).read_bytes() == before
    assert project.db.disks(project.db.server("s").id)[0].state == "error"
    assert [rp["number"] for rp in migration.recovery_points(project, "s")] == [1]
    # Resync discards the damaged cycle; the next cycle resends the changes since point 1.
    assert replication.resync(project, "s") == [2]
    res = replication.cycle(project, "s")
    apply_server(project, "s")
    out = migration.test_migration(project, "s", out_dir=tmp_path / "after")
    assert Path(out.files[0]).read_bytes() == disks[0].read_bytes()
    assert out.recovery_point == res.number


def test_verify_detects_a_damaged_replica(project: Project, tmp_path: Path) -> None:
    _setup(project, tmp_path)
    apply_server(project, "s")
    img = next(project.replicas_dir.glob("s-*/disk0-*.img"))
    with open(img, "r+b") as f:
        f.seek(3 * 65536 + 7)
        f.write(b"\xde\xad")
    report = migration.verify(project, "s")
    assert report.disks[0]["mismatches"] == [(3 * 65536, 65536)]
    with pytest.raises(VerifyMismatchError):
        migration.raise_on_mismatch(report)


def test_planned_migration(project: Project, tmp_path: Path) -> None:
    disks = _setup(project, tmp_path)
    apply_server(project, "s")
    marker = tmp_path / "shut"
    scribble(disks[0], seed=77)
    with pytest.raises(MigrationError, match="shutdown command failed"):
        migration.planned_migration(project, "s", out_dir=tmp_path / "pm", shutdown_command="exit 3")
    assert project.db.server("s").state == "replicating"
    res = migration.planned_migration(project, "s", out_dir=tmp_path / "pm", shutdown_command=f"touch {marker}")
    assert marker.exists()
    assert Path(res.files[0]).read_bytes() == disks[0].read_bytes()
    assert project.db.server("s").state == "migrated"


def test_migration_bad_input(project: Project, tmp_path: Path) -> None:
    _setup(project, tmp_path)
    with pytest.raises(NotFoundError, match="no recovery point"):
        migration.test_migration(project, "s", out_dir=tmp_path / "x")
    apply_server(project, "s")
    with pytest.raises(UsageError, match="format 'vmdk'"):
        migration.test_migration(project, "s", fmt="vmdk", out_dir=tmp_path / "x")
    with pytest.raises(NotFoundError, match="no server"):
        migration.test_migration(project, "nope", out_dir=tmp_path / "x")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(MigrationError, match="cannot be created"):
        migration.test_migration(project, "s", out_dir=blocker / "sub")
    with pytest.raises(UsageError, match="not a number"):
        migration.test_migration(project, "s", recovery_point="first", out_dir=tmp_path / "x")


def test_orphan_packs_are_collected_but_not_committed_ones(project: Project, tmp_path: Path) -> None:
    from godwit.engine.mover import collect_orphans

    disks = _setup(project, tmp_path)
    server = project.db.server("s")
    orphan = f"servers/{server.uid}/packs/{'0' * 32}.pack"
    project.store.put(orphan, b"left by a process that died before journaling it")
    scribble(disks[0], seed=5)
    replication.cycle(project, "s")  # committed, not applied: its packs must stay
    committed = [k for k in project.store.list(f"servers/{server.uid}/packs/") if k != orphan]
    assert collect_orphans(project, server) == [orphan]
    assert sorted(project.store.list(f"servers/{server.uid}/packs/")) == sorted(committed)
    apply_server(project, "s")
    assert list(project.store.list(f"servers/{server.uid}/")) == []
