"""The cache release behind the apply: it runs after the point is recorded, overlaps the next
cycle's apply, survives kill -9 (the next round finishes it) and never deletes a pack that a cycle
still to be applied names."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server, release_cache
from godwit.engine.reader import load_manifest
from godwit.format.keys import manifest_key, pack_key
from godwit.migrate import migration
from godwit.project.project import Project, open_project
from godwit.replicas.local import LocalReplica
from godwit.stores.local import LocalStore
from tests.helpers import make_raw, scribble

MiB = 1 << 20

# Dies by SIGKILL at the first pack the release deletes: after the seal, before any unlink.
_KILL_AT_RELEASE = """
import os, signal, sys
from pathlib import Path
from godwit.stores.local import LocalStore
real = LocalStore.delete
def delete(self, key):
    if "/packs/" in key:
        os.kill(os.getpid(), signal.SIGKILL)
    real(self, key)
LocalStore.delete = delete
from godwit.engine.mover import apply_server
from godwit.project.project import open_project
apply_server(open_project(Path(sys.argv[1])), "s")
"""


def _small_packs(project: Project) -> Project:
    cfg = project.root / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("pack_size_mib = 32", "pack_size_mib = 4"))
    return open_project(project.root)


def _keys(project: Project, uid: str) -> set[str]:
    return set(project.store.list(f"servers/{uid}/"))


def _cycle_keys(project: Project, uid: str, number: int) -> set[str]:
    m = load_manifest(project.store, uid, number)
    return {pack_key(uid, p) for p in m.packs()} | {manifest_key(uid, number)}


def test_kill_after_seal_before_release_next_round_releases(project: Project, tmp_path: Path) -> None:
    p = _small_packs(project)
    img = make_raw(tmp_path / "d.raw", 24 * MiB, seed=3, writes=60)
    add_server(p, "s", [str(img)])
    replication.start(p, "s")
    uid = p.db.server("s").uid
    cycle1 = _cycle_keys(p, uid, 1)
    assert len(cycle1) > 2  # several packs
    proc = subprocess.run([sys.executable, "-c", _KILL_AT_RELEASE, str(p.root)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    server = p.db.server("s")
    # The point was sealed and recorded before the release began; the cache is whole.
    assert [rp.number for rp in p.db.recovery_points(server.id)] == [1]
    assert [c.state for c in p.db.cycles(server.id)] == ["applied"]
    assert _keys(p, uid) == cycle1
    assert migration.verify(p, "s", "1").ok
    # A new cycle commits; the next release takes cycle 1's objects and none of cycle 2's.
    scribble(img, seed=9, writes=30)
    replication.cycle(p, "s")
    cycle2 = _cycle_keys(p, uid, 2)
    release_cache(p, server)
    assert _keys(p, uid) == cycle2
    assert p.db.cycle(server.id, 1).manifest_key is None
    view2 = img.read_bytes()
    assert [r.cycle for r in apply_server(p, "s")] == [2]
    assert _keys(p, uid) == set()
    out = migration.test_migration(p, "s", out_dir=tmp_path / "out")
    assert Path(out.files[0]).read_bytes() == view2
    p.close()


def test_release_never_deletes_a_pack_a_committed_cycle_names(project: Project, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    p = _small_packs(project)
    img = make_raw(tmp_path / "d.raw", 24 * MiB, seed=4, writes=60)
    add_server(p, "s", [str(img)])
    replication.start(p, "s")
    uid = p.db.server("s").uid
    real_delete = LocalStore.delete

    def failing(self: LocalStore, key: str) -> None:
        raise OSError("injected: the release dies here")

    monkeypatch.setattr(LocalStore, "delete", failing)
    with pytest.raises(OSError, match="injected"):
        apply_server(p, "s")  # the release's failure is reported, after the point was recorded
    monkeypatch.setattr(LocalStore, "delete", real_delete)
    server = p.db.server("s")
    assert [rp.number for rp in p.db.recovery_points(server.id)] == [1]
    scribble(img, seed=11, writes=30)
    replication.cycle(p, "s")
    view2 = img.read_bytes()
    # Make the applied cycle 1's manifest also name one of committed cycle 2's packs.
    m1, m2 = load_manifest(p.store, uid, 1), load_manifest(p.store, uid, 2)
    shared = m2.packs()[0]
    d0 = m1.disks[0]
    d0.extents[0] = dataclasses.replace(d0.extents[0], pack=shared)
    p.store.put(manifest_key(uid, 1), m1.encode())
    release_cache(p, server)
    left = _keys(p, uid)
    assert _cycle_keys(p, uid, 2) <= left  # every object of cycle 2 is still there
    assert manifest_key(uid, 1) in left  # kept: it names a pack still to be applied
    assert not {pack_key(uid, x) for x in m1.packs() if x != shared} & left  # the rest went
    assert [r.cycle for r in apply_server(p, "s")] == [2]
    assert _keys(p, uid) == set()
    out = migration.test_migration(p, "s", out_dir=tmp_path / "out")
    assert Path(out.files[0]).read_bytes() == view2
    p.close()


def test_release_runs_behind_the_next_apply(project: Project, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Cycle 1's release waits (up to 20 s) until cycle 2 is sealed: it can only see that if the
    release runs behind the apply; apply_server still returns with the whole cache released."""
    p = _small_packs(project)
    img = make_raw(tmp_path / "d.raw", 24 * MiB, seed=5, writes=60)
    add_server(p, "s", [str(img)])
    replication.start(p, "s")
    scribble(img, seed=12, writes=30)
    replication.cycle(p, "s")
    uid = p.db.server("s").uid
    sealed2 = threading.Event()
    seen: list[bool] = []
    deleted_at: list[float] = []
    real_delete, real_seal = LocalStore.delete, LocalReplica.seal

    def seal(self: LocalReplica, number: int) -> None:
        real_seal(self, number)
        if number == 2:
            sealed2.set()

    def delete(self: LocalStore, key: str) -> None:
        if "/packs/" in key and not seen:
            seen.append(sealed2.wait(20))  # the first pack of cycle 1
        deleted_at.append(time.perf_counter())
        real_delete(self, key)

    monkeypatch.setattr(LocalReplica, "seal", seal)
    monkeypatch.setattr(LocalStore, "delete", delete)
    results = apply_server(p, "s")
    assert [r.cycle for r in results] == [1, 2]
    assert seen == [True]
    assert min(deleted_at) > results[0].sealed_at  # nothing released before point 1 was recorded
    assert _keys(p, uid) == set()  # joined before returning
    assert migration.verify(p, "s", "2").ok and migration.verify(p, "s", "1").ok
    p.close()
