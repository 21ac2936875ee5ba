"""Live QEMU disks (qemu+unix://) with the bitmap tracker, against a real qemu-storage-daemon
whose guest keeps writing while cycles run: fleecing, dirty extents, commit and failure of the
bitmaps, teardown, and recovery after a godwit or a QEMU that died."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.engine.cycle import CycleRunner, run_cycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import StoreError
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.sources.live import DirtyRun, LiveSource
from godwit.trackers import BitmapTracker, ScanTracker
from tests.qemu_daemon import QemuDaemon, kind_of, sha, start_writer

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common")

MiB = 1 << 20
SIZE = 16 * MiB


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[QemuDaemon]:
    d = QemuDaemon(tmp_path / "qsd", size=SIZE, fleece_dir=tmp_path / "fleece").start()
    for i in range(6):  # some data, some holes
        d.write(i * 2 * MiB, bytes([0x41 + i]) * (512 << 10))
    d.close_guest()
    yield d
    d.kill()


@pytest.fixture
def views(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The checksum of each cycle's frozen view, read through the fleecing export before teardown."""
    seen: list[str] = []
    close = LiveSource.close

    def checked_close(self: LiveSource) -> None:
        if self.frozen:
            buf = bytearray(self.size)
            self.read_into(0, memoryview(buf))
            seen.append(sha(bytes(buf)))
        close(self)

    monkeypatch.setattr(LiveSource, "close", checked_close)
    return seen


@pytest.fixture
def dirty(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bytes each cycle's bitmap said were dirty."""
    said: list[int] = []
    runs = LiveSource.dirty_runs

    def counted(self: LiveSource, bitmap: str) -> Iterator[DirtyRun]:
        said.append(0)
        for r in runs(self, bitmap):
            said[-1] += r.length if r.dirty else 0
            yield r

    monkeypatch.setattr(LiveSource, "dirty_runs", counted)
    return said


def _replica_sha(project: Project, tmp_path: Path) -> str:
    apply_server(project, "s")
    out = tmp_path / "out"
    res = migration.test_migration(project, "s", out_dir=out)
    [f] = res.files
    digest = sha(Path(f).read_bytes())
    assert migration.verify(project, "s").ok
    shutil.rmtree(out)
    return digest


def _add(project: Project, daemon: QemuDaemon) -> None:
    add_server(project, "s", [daemon.spec])
    project.db.set_server_state(project.db.server("s").id, "replicating")


def _godwit_objects(daemon: QemuDaemon) -> list[str]:
    nodes = [n["node-name"] for n in daemon.qmp("query-named-block-nodes", flat=True)]
    exports = [e["id"] for e in daemon.qmp("query-block-exports")]
    jobs = [j["id"] for j in daemon.qmp("query-jobs")]
    return [x for x in nodes + exports + jobs if x.startswith("godwit-")]


def test_cycles_under_a_writing_guest_are_bit_exact_views(project: Project, tmp_path: Path, daemon: QemuDaemon,
                                                          views: list[str], dirty: list[int]) -> None:
    _add(project, daemon)
    tracker = BitmapTracker()
    writer = start_writer(daemon, SIZE, rate=4e6)
    try:
        first = run_cycle(project, "s", tracker=tracker)
        assert first.consistency == "crash"
        assert _replica_sha(project, tmp_path) == views[-1]
        for _ in range(3):
            res = run_cycle(project, "s", tracker=tracker)
            assert _replica_sha(project, tmp_path) == views[-1]
            assert 0 < res.bytes_read <= dirty[-1] < SIZE  # only the dirty extents were read
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""  # wrote throughout
    finally:
        writer.kill()
        writer.wait()
    assert _godwit_objects(daemon) == []  # export, job and overlay node all gone
    assert not list((tmp_path / "fleece").glob("godwit-f-*"))
    assert [n for n in daemon.bitmaps() if n.startswith("godwit-")] == ["godwit-c4"]
    # The writes made during the last cycle are carried by the next one: now the disk is still.
    run_cycle(project, "s", tracker=tracker)
    assert _replica_sha(project, tmp_path) == sha(daemon.read_all()) == views[-1]
    quiet = run_cycle(project, "s", tracker=tracker)
    assert quiet.bytes_read == 0 and quiet.bytes_changed == 0


def test_a_failed_cycle_merges_the_bitmap_back(project: Project, tmp_path: Path, daemon: QemuDaemon,
                                               views: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _add(project, daemon)
    tracker = BitmapTracker()
    run_cycle(project, "s", tracker=tracker)
    daemon.write(3 * MiB, b"before the failure" * 100)

    def refuse(*_a: object, **_k: object) -> None:
        raise StoreError("the store went away")

    with monkeypatch.context() as m:
        m.setattr(CycleRunner, "_commit", refuse)
        with pytest.raises(StoreError):
            run_cycle(project, "s", tracker=tracker)
    daemon.write(9 * MiB, b"after the failure" * 100)
    left = {n: b for n, b in daemon.bitmaps().items() if n.startswith("godwit-")}
    assert sorted(kind_of(n) for n in left) == ["godwit-c1", "godwit-next-b1"]  # kept until a commit
    assert all(b["recording"] for b in left.values())
    res = run_cycle(project, "s", tracker=tracker)
    assert res.number == 2 and res.bytes_read <= 4 * (64 << 10)
    daemon.close_guest()
    assert _replica_sha(project, tmp_path) == views[-1] == sha(daemon.read_all())


KILL_MID_CYCLE = """
import sys, os, signal
from godwit.project.project import open_project
from godwit.engine.cycle import run_cycle, runner
from godwit.engine.cycle.packer import Packer
from godwit.trackers import BitmapTracker
flush, packers = Packer.flush, []
def seen(self):
    packers.append(self)
    flush(self)
def die(closer):  # the reads are done, the view still exists (its teardown would start now); the
    for p in packers:  # packs sealed so far are journaled, the last one is never sealed
        for fu in p.uploads:
            fu.result()
    os.kill(os.getpid(), signal.SIGKILL)
Packer.flush = seen
runner._Closer.start = die
from pathlib import Path
run_cycle(open_project(Path(sys.argv[1])), "s", tracker=BitmapTracker())
"""


def test_a_killed_godwit_leaves_nothing_the_next_run_cannot_clean(project: Project, tmp_path: Path,
                                                                   daemon: QemuDaemon, views: list[str]) -> None:
    import sys

    toml = project.root / "godwit.toml"  # 1 MiB packs: the dead cycle journals some before it dies
    toml.write_text(toml.read_text().replace("pack_size_mib = 32", "pack_size_mib = 1", 1))
    _add(project, daemon)
    run_cycle(project, "s", tracker=BitmapTracker())
    for at in (1, 4, 7, 10):  # four incompressible extents apart: four 1 MiB packs
        daemon.write(at * MiB, os.urandom(MiB + 4096))
    daemon.close_guest()
    done = subprocess.run([sys.executable, "-c", KILL_MID_CYCLE, str(project.root)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert _godwit_objects(daemon)  # the dead cycle's export, job and node are still there
    daemon.write(1 * MiB, b"Y" * 5000)  # into a block the dead cycle already journaled
    daemon.write(12 * MiB, b"y" * 5000)
    daemon.close_guest()
    res = run_cycle(project, "s", tracker=BitmapTracker())
    assert res.resumed and res.packs_reused > 0
    assert any("interrupted cycle left" in w for w in res.warnings)
    assert _godwit_objects(daemon) == []
    _replica_sha(project, tmp_path)
    # The resumed cycle took the journaled block from the dead cycle's view (so it is not
    # point-in-time); the write made after that view is carried by the next cycle.
    run_cycle(project, "s", tracker=BitmapTracker())
    assert _replica_sha(project, tmp_path) == views[-1] == sha(daemon.read_all())


@pytest.mark.parametrize("how", ["kill-qemu", "delete-bitmap"])
def test_lost_tracking_means_a_full_resync(project: Project, tmp_path: Path, daemon: QemuDaemon, views: list[str],
                                           how: str) -> None:
    _add(project, daemon)
    tracker = BitmapTracker()
    first = run_cycle(project, "s", tracker=tracker)
    run_cycle(project, "s", tracker=tracker)  # godwit-c2 now
    daemon.write(7 * MiB, b"z" * 9000)
    if how == "kill-qemu":
        daemon.stop()  # a clean stop stores the bitmap in the image...
        daemon.start()
        assert "godwit-c2" in daemon.bitmaps()
        daemon.write(1 * MiB, b"w" * 3000)
        daemon.kill()  # ...an unclean one leaves it inconsistent
        daemon.start()
        assert daemon.bitmaps()["godwit-c2"].get("inconsistent")
    else:
        daemon.qmp("block-dirty-bitmap-remove", node="disk0", name="godwit-c2")
    daemon.write(11 * MiB, b"v" * 3000)
    daemon.close_guest()
    res = run_cycle(project, "s", tracker=tracker)
    assert res.bytes_read >= first.bytes_read  # the whole disk, not the (lost) dirty extents
    events = [e.message for e in project.db.events(server="s")]
    assert any("change tracking was lost" in m for m in events)
    assert _replica_sha(project, tmp_path) == views[-1] == sha(daemon.read_all())
    # Tracking is back: the next cycle reads only what changed.
    daemon.write(2 * MiB, b"u" * 100)
    daemon.close_guest()
    assert run_cycle(project, "s", tracker=tracker).bytes_read == 64 << 10


def test_a_raw_image_under_qemu_tracks_until_qemu_restarts(project: Project, tmp_path: Path, views: list[str]) -> None:
    daemon = QemuDaemon(tmp_path / "raw", fmt="raw", size=SIZE, fleece_dir=tmp_path / "fleece").start()
    try:
        daemon.write(0, b"r" * MiB)
        _add(project, daemon)
        tracker = BitmapTracker()
        first = run_cycle(project, "s", tracker=tracker)
        assert daemon.bitmaps()["godwit-c1"]["persistent"] is False
        daemon.write(4 * MiB, b"s" * 100)
        assert run_cycle(project, "s", tracker=tracker).bytes_read == 64 << 10
        daemon.stop()
        daemon.start()
        daemon.write(8 * MiB, b"t" * 100)
        daemon.close_guest()
        res = run_cycle(project, "s", tracker=tracker)
        assert res.bytes_read >= first.bytes_read
        assert _replica_sha(project, tmp_path) == views[-1] == sha(daemon.read_all())
    finally:
        daemon.kill()


def test_scan_reads_the_frozen_view_too(project: Project, tmp_path: Path, daemon: QemuDaemon,
                                        views: list[str]) -> None:
    _add(project, daemon)
    writer = start_writer(daemon, SIZE, rate=4e6)
    try:
        for _ in range(2):
            run_cycle(project, "s", tracker=ScanTracker())
            assert _replica_sha(project, tmp_path) == views[-1]
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""  # wrote throughout
    finally:
        writer.kill()
        writer.wait()
    assert [n for n in daemon.bitmaps() if n.startswith("godwit-")] == []


@pytest.mark.parametrize("stale", [False, True])
def test_the_commit_moves_the_bitmaps_the_freeze_left_without_a_query(
        project: Project, tmp_path: Path, daemon: QemuDaemon, views: list[str], monkeypatch: pytest.MonkeyPatch,
        stale: bool) -> None:
    """The tracker's commit builds its transaction from what the freeze left (no query); when that
    is stale after all, QEMU refuses the whole transaction and the bitmaps are asked for."""
    from godwit.sources.qmp import QmpSession

    _add(project, daemon)
    tracker = BitmapTracker()
    run_cycle(project, "s", tracker=tracker)
    daemon.write(5 * MiB, b"x" * (64 << 10))
    daemon.close_guest()
    queries: list[str] = []
    committed, nodes = BitmapTracker.committed, QmpSession.nodes

    def commit(self: BitmapTracker, disk: object, cycle: int) -> None:
        if stale:  # a next bitmap the freeze did not leave: the merge from it is refused
            for known in self._after.values():
                known["godwit-next-b1-00000000"] = True
        queries.append("commit")
        try:
            committed(self, disk, cycle)  # type: ignore[arg-type]
        finally:
            queries.append("done")

    def counted(self: QmpSession) -> dict[str, dict[str, object]]:
        queries.append("nodes")
        return nodes(self)

    monkeypatch.setattr(BitmapTracker, "committed", commit)
    monkeypatch.setattr(QmpSession, "nodes", counted)
    run_cycle(project, "s", tracker=tracker)
    during = queries[queries.index("commit") + 1:queries.index("done")]
    assert during == (["nodes"] if stale else [])
    assert [n for n in daemon.bitmaps() if n.startswith("godwit-")] == ["godwit-c2"]
    daemon.write(7 * MiB, b"y" * (64 << 10))
    daemon.close_guest()
    res = run_cycle(project, "s", tracker=tracker)
    assert res.bytes_read == 64 << 10  # the bitmap moved: only the new write is read
    assert _replica_sha(project, tmp_path) == views[-1] == sha(daemon.read_all())
