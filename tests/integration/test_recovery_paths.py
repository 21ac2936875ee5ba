"""Crash and repair paths found in review: resumes, resyncs, partial applies, planned migration
after an interrupted cycle. Crashes are injected by making one step raise SystemExit, which, like
kill -9, skips everything after it (the journal and undo files are what survive)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.cycle import CycleRunner
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import MigrationError
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.replicas.local import LocalReplica
from tests.helpers import make_raw, scribble, write_at

pytestmark = pytest.mark.both_databases  # SQLite and PostgreSQL (tests/conftest.py)

SIZE = (4 << 20) + 5 * 4096


@contextmanager
def dies_at(cls: Any, method: str) -> Iterator[None]:
    orig = getattr(cls, method)

    def die(*_a: object, **_k: object) -> None:
        raise SystemExit(f"killed in {method}")

    setattr(cls, method, die)
    try:
        yield
    finally:
        setattr(cls, method, orig)


def _setup(project: Project, tmp_path: Path, size: int = SIZE) -> Path:
    d = make_raw(tmp_path / "d.raw", size, seed=1)
    add_server(project, "s", [str(d)])
    replication.start(project, "s")
    apply_server(project, "s")
    return d


def _replica(project: Project) -> bytes:
    return (next(project.replicas_dir.glob("s-*/disk0-*.img"))).read_bytes()


def test_resync_after_a_partial_apply_resends_what_it_touched(project: Project, tmp_path: Path) -> None:
    d = _setup(project, tmp_path)
    off = 1 << 20
    write_at(d, off, bytes(65536))
    replication.cycle(project, "s")
    apply_server(project, "s")
    write_at(d, off, b"X" * 65536)
    replication.cycle(project, "s")
    with dies_at(LocalReplica, "seal"), pytest.raises(SystemExit):
        apply_server(project, "s")  # cycle 3's bytes are on the replica, unsealed
    assert replication.resync(project, "s") == [3]
    write_at(d, off, bytes(65536))  # the source goes back to what point 2 had
    replication.cycle(project, "s")
    apply_server(project, "s")
    assert _replica(project) == d.read_bytes()
    assert migration.verify(project, "s").ok


def test_older_points_survive_abort_and_resync(project: Project, tmp_path: Path) -> None:
    d = _setup(project, tmp_path)
    scribble(d, seed=2)
    replication.cycle(project, "s")
    apply_server(project, "s")
    view2 = d.read_bytes()
    scribble(d, seed=3, writes=40)
    replication.cycle(project, "s")
    uid = project.db.server("s").uid
    pack = sorted((project.cache_dir / "servers" / uid / "packs").iterdir())[-1]
    raw = bytearray(pack.read_bytes())
    raw[200] ^= 0x55
    pack.write_bytes(bytes(raw))
    with pytest.raises(Exception, match="cannot be applied"):
        apply_server(project, "s")
    replication.resync(project, "s")
    replication.cycle(project, "s")
    apply_server(project, "s")
    assert [rp["number"] for rp in migration.recovery_points(project, "s")] == [1, 2, 4]
    out = migration.test_migration(project, "s", recovery_point="2", out_dir=tmp_path / "o2")
    assert Path(out.files[0]).read_bytes() == view2
    assert migration.verify(project, "s", "2").ok


def test_resume_after_the_disk_grew_past_an_unaligned_end(project: Project, tmp_path: Path) -> None:
    size = SIZE + 100
    d = _setup(project, tmp_path, size)
    write_at(d, size - 50, b"A" * 50)
    with dies_at(CycleRunner, "_commit"), pytest.raises(SystemExit):
        replication.cycle(project, "s")
    with open(d, "r+b") as f:
        f.truncate(size + (1 << 20))
    write_at(d, size, b"B" * 1000)  # same block as the old end
    res = replication.cycle(project, "s")
    assert res.resumed
    apply_server(project, "s")
    assert _replica(project) == d.read_bytes()


def test_planned_migration_after_an_interrupted_cycle_has_the_last_writes(project: Project,
                                                                          tmp_path: Path) -> None:
    d = _setup(project, tmp_path)
    write_at(d, 0, b"old!" * 16384)
    with dies_at(CycleRunner, "_commit"), pytest.raises(SystemExit):
        replication.cycle(project, "s")  # packs journaled, never committed
    write_at(d, 0, b"NEW!" * 16384)  # the last write before the shutdown
    res = migration.planned_migration(project, "s", out_dir=tmp_path / "final")
    assert Path(res.files[0]).read_bytes() == d.read_bytes()


def test_cleanup_never_deletes_another_migrations_output(project: Project, tmp_path: Path) -> None:
    _setup(project, tmp_path)
    out = tmp_path / "out"
    migration.test_migration(project, "s", out_dir=out)
    with pytest.raises(MigrationError, match="already exists"):
        migration.planned_migration(project, "s", out_dir=out)
    assert project.db.server("s").state == "replicating"
    target = out / "s-disk0.raw"
    target.unlink()
    target.write_bytes(b"someone else's file")
    assert migration.cleanup(project, "s") == []
    assert target.read_bytes() == b"someone else's file"


def test_throttle_time_is_per_cycle(project: Project, tmp_path: Path) -> None:
    import os

    d = tmp_path / "d.raw"
    d.write_bytes(os.urandom(1 << 20))
    add_server(project, "s", [str(d)])
    project.max_mbps_override = 16.0
    first = replication.start(project, "s")
    assert first is not None and first.t_throttle > 0.2
    project.max_mbps_override = None
    write_at(d, 0, b"x" * 4096)
    second = replication.cycle(project, "s")
    assert second.t_throttle == 0.0
