"""The mover's overlapped apply: extents coalesced across packs, disks applied in parallel, one
damaged pack rolling back every disk of the cycle, and kill -9 in the middle of it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.engine.reader import load_manifest
from godwit.errors import CorruptObjectError
from godwit.migrate import migration
from godwit.project.project import Project, open_project
from godwit.replicas import writer as writer_mod
from godwit.replicas.local import LocalReplica
from tests.helpers import make_raw, write_at

MiB = 1 << 20


def _small_packs(project: Project, mib: int = 4) -> Project:
    cfg = project.root / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("pack_size_mib = 32", f"pack_size_mib = {mib}"))
    return open_project(project.root)


def _replica_bytes(project: Project, disk: int) -> bytes:
    return next(project.replicas_dir.glob(f"s-*/disk{disk}-*.img")).read_bytes()


def test_adjacent_extents_coalesce_across_packs(project: Project, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    p = _small_packs(project)
    img = tmp_path / "d.raw"
    img.write_bytes(os.urandom(40 * MiB))  # all data: 640 extents of 64 KiB in 10+ packs
    add_server(p, "s", [str(img)])
    replication.start(p, "s")
    m = load_manifest(p.store, p.db.server("s").uid, 1)
    ext = sorted(m.disks[0].extents, key=lambda e: e.offset)
    boundaries = [b.offset for a, b in pairwise(ext)
                  if a.pack != b.pack and a.offset + a.length == b.offset]
    assert len({e.pack for e in ext}) >= 10 and boundaries  # adjacent extents in different packs
    runs: list[tuple[int, int]] = []
    real = writer_mod.AlignedWriter._write_run

    def spy(self: writer_mod.AlignedWriter, run: writer_mod._Run) -> None:
        runs.append((run.start, run.end))
        real(self, run)

    monkeypatch.setattr(writer_mod.AlignedWriter, "_write_run", spy)
    apply_server(p, "s")
    assert len(runs) == 40 * MiB // writer_mod.BUFFER  # 5 writes of 8 MiB for 640 extents
    assert any(s < b < e for b in boundaries for s, e in runs)  # one write spans two packs
    assert _replica_bytes(p, 0) == img.read_bytes()
    p.close()


def test_damaged_pack_of_one_disk_rolls_back_every_disk(project: Project, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    p = _small_packs(project)
    disks = [make_raw(tmp_path / f"d{i}.raw", 32 * MiB, seed=i) for i in range(2)]
    add_server(p, "s", [str(d) for d in disks])
    replication.start(p, "s")
    apply_server(p, "s")
    before = [_replica_bytes(p, i) for i in range(2)]
    for d in disks:
        write_at(d, 2 * MiB, os.urandom(24 * MiB))
    replication.cycle(p, "s")
    server = p.db.server("s")
    m = load_manifest(p.store, server.uid, 2)
    order = list(dict.fromkeys(e.pack for d in m.disks for e in d.extents))  # the order packs are applied in
    damaged = order[-1]
    assert {e.pack for e in m.disks[0].extents}.isdisjoint({damaged})  # disk 0 is written before it
    path = p.cache_dir / "servers" / server.uid / "packs" / f"{damaged}.pack"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    aborted: list[str] = []
    real_abort = LocalReplica.abort

    def spy(self: LocalReplica, number: int) -> None:
        aborted.append(self.name)
        real_abort(self, number)

    monkeypatch.setattr(LocalReplica, "abort", spy)
    with pytest.raises(CorruptObjectError, match="cannot be applied"):
        apply_server(p, "s")
    assert sorted(n.split("-")[0] for n in aborted) == ["disk0", "disk1"]
    assert [_replica_bytes(p, i) for i in range(2)] == before
    assert [rp["number"] for rp in migration.recovery_points(p, "s")] == [1]
    assert all(d.state == "error" for d in p.db.disks(server.id))
    assert migration.verify(p, "s", "1").ok
    p.close()


def _wait_for(cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


@pytest.mark.slow
def test_kill_during_overlapped_apply_of_two_disks(project: Project, tmp_path: Path) -> None:
    p = _small_packs(project, 8)
    disks = [make_raw(tmp_path / f"d{i}.raw", 80 * MiB, seed=10 + i, writes=10) for i in range(2)]
    add_server(p, "s", [str(d) for d in disks])
    replication.start(p, "s")
    apply_server(p, "s")
    view1 = [d.read_bytes() for d in disks]
    for i, d in enumerate(disks):
        for k in range(6):
            write_at(d, k * (12 * MiB) + i * 4096 + 513, os.urandom(9 * MiB))  # unaligned, both disks
    replication.cycle(p, "s")
    view2 = [d.read_bytes() for d in disks]
    undo = sorted(p.replicas_dir.glob("s-*/disk1-*.undo"))[0] / "0000000002.undo"
    killed_mid_apply = 0
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "godwit", "mover", "run", "--once", "--json",
                                 "--project", str(p.root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for(lambda pr=proc: undo.exists() or pr.poll() is not None)  # type: ignore[misc]
        time.sleep(0.03 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if p.db.recovery_points(p.db.server("s").id)[-1].number == 2:
            break
        killed_mid_apply += 1
        for i in range(2):  # point 1 is served exactly while cycle 2 is half applied
            with p.replica(p.db.server("s"), p.db.disks(p.db.server("s").id)[i]).open_point(1) as rp:
                assert rp.read(0, rp.size) == view1[i]
    assert killed_mid_apply >= 1
    apply_server(p, "s")
    assert [_replica_bytes(p, i) for i in range(2)] == view2
    assert migration.verify(p, "s", "2").ok
    assert migration.verify(p, "s", "1").ok
    p.close()
