"""The end of a live bitmap cycle overlaps its waits: the fleecing teardown runs while the last
pack and the hash files are made durable, and the tracker is told while the state commits. Each
overlap keeps the order a crash needs; a godwit killed in between finishes the cycle next time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.engine.cycle import run_cycle
from godwit.engine.reader import load_manifest
from godwit.format import blockhashes
from godwit.project.project import Project
from godwit.sources.live import LiveSource
from godwit.trackers import BitmapTracker
from tests.integration.test_live_bitmap import _add, _godwit_objects, _replica_sha
from tests.qemu_daemon import QemuDaemon, sha

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common")

MiB = 1 << 20


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[QemuDaemon]:
    d = QemuDaemon(tmp_path / "qsd", size=16 * MiB, fleece_dir=tmp_path / "fleece").start()
    d.write(0, os.urandom(4 * MiB))
    d.close_guest()
    yield d
    d.kill()


def test_the_view_is_torn_down_while_the_hash_files_are_made_durable(project: Project, daemon: QemuDaemon,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _add(project, daemon)
    run_cycle(project, "s", tracker=BitmapTracker())
    daemon.write(5 * MiB, os.urandom(3 * MiB))
    daemon.close_guest()
    closed = threading.Event()
    close, finish = LiveSource.close, blockhashes.Writer.finish
    in_time: list[bool] = []

    def noted_close(self: LiveSource) -> None:
        was_frozen = self.frozen
        close(self)
        if was_frozen:
            self.warnings.append("closed on its thread")  # a teardown's warning is still recorded
            closed.set()

    def waiting_finish(self: blockhashes.Writer) -> None:
        in_time.append(closed.wait(10))  # a teardown after the pipeline would come too late
        finish(self)

    monkeypatch.setattr(LiveSource, "close", noted_close)
    monkeypatch.setattr(blockhashes.Writer, "finish", waiting_finish)
    res = run_cycle(project, "s", tracker=BitmapTracker())
    assert in_time == [True]
    assert "closed on its thread" in res.warnings
    assert any(e.message == "closed on its thread" for e in project.db.events(server="s"))
    assert _godwit_objects(daemon) == []
    assert [n for n in daemon.bitmaps() if n.startswith("godwit-")] == ["godwit-c2"]


def test_a_failed_teardown_fails_the_cycle_and_its_change_is_kept(project: Project, daemon: QemuDaemon,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _add(project, daemon)
    run_cycle(project, "s", tracker=BitmapTracker())
    daemon.write(5 * MiB, b"x" * 5000)
    daemon.close_guest()
    close = LiveSource.close

    def failing_close(self: LiveSource) -> None:
        close(self)
        raise RuntimeError("close broke")

    monkeypatch.setattr(LiveSource, "close", failing_close)
    with pytest.raises(RuntimeError, match="close broke"):
        run_cycle(project, "s", tracker=BitmapTracker())
    monkeypatch.setattr(LiveSource, "close", close)
    assert project.db.cycle(project.db.server("s").id, 2).state == "open"
    res = run_cycle(project, "s", tracker=BitmapTracker())  # resumes; the change is still tracked
    assert res.number == 2 and res.bytes_changed >= 5000


KILL_IN_STATE_COMMIT = """
import os, signal, sys, threading
from pathlib import Path
from godwit.engine.cycle import commit, run_cycle, runner
from godwit.project.project import open_project
from godwit.trackers import BitmapTracker
told = threading.Event()
tell = runner.CycleRunner._tell_tracker
def noted(self, cyc, works):
    out = tell(self, cyc, works)
    told.set()
    return out
def die(*args, **kwargs):  # the manifest is stored and the tracker told; the state never says so
    told.wait(30)
    os.kill(os.getpid(), signal.SIGKILL)
runner.CycleRunner._tell_tracker = noted
commit.mark_committed = die
run_cycle(open_project(Path(sys.argv[1])), "s", tracker=BitmapTracker())
"""


def test_killed_after_the_tracker_was_told_but_before_the_state_committed(project: Project, tmp_path: Path,
                                                                         daemon: QemuDaemon) -> None:
    _add(project, daemon)
    run_cycle(project, "s", tracker=BitmapTracker())
    daemon.write(6 * MiB, b"k" * 70000)
    daemon.close_guest()
    done = subprocess.run([sys.executable, "-c", KILL_IN_STATE_COMMIT, str(project.root)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    sid = project.db.server("s").id
    assert project.db.cycle(sid, 2).state == "open"
    load_manifest(project.store, project.db.server("s").uid, 2)  # stored before the tracker was told
    assert [n for n in daemon.bitmaps() if n.startswith("godwit-")] == ["godwit-c2"]
    res = run_cycle(project, "s", tracker=BitmapTracker())  # finishes the bookkeeping only
    assert res.resumed and res.number == 2 and res.packs_uploaded == 0
    assert project.db.cycle(sid, 2).state == "committed"
    assert [n for n in daemon.bitmaps() if n.startswith("godwit-")] == ["godwit-c2"]
    daemon.write(9 * MiB, b"m" * 100)
    daemon.close_guest()
    nxt = run_cycle(project, "s", tracker=BitmapTracker())
    assert nxt.number == 3 and nxt.bytes_read == 64 << 10  # tracking carried on: only the new write
    assert _replica_sha(project, tmp_path) == sha(daemon.read_all())


def test_a_refused_freeze_sent_at_once_leaves_nothing_in_qemu(project: Project, tmp_path: Path, daemon: QemuDaemon,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlay's node, the transaction and the export go to QEMU back to back; when the
    transaction is refused, what the others made is still removed."""
    from godwit.sources.qmp import QmpError

    _add(project, daemon)
    tracker = BitmapTracker()
    run_cycle(project, "s", tracker=tracker)
    plan = BitmapTracker._plan

    def plan_then_lose(self: BitmapTracker, source: LiveSource, base: int | None) -> None:
        plan(self, source, base)  # disables godwit-c1 in the freeze, which someone removes now
        assert source.qmp is not None  # (on godwit's session: the monitor serves one client)
        source.qmp.run("block-dirty-bitmap-remove", node="disk0", name="godwit-c1")

    monkeypatch.setattr(BitmapTracker, "_plan", plan_then_lose)
    with pytest.raises(QmpError):
        run_cycle(project, "s", tracker=tracker)
    assert _godwit_objects(daemon) == []  # the node (and any export) made beside it are gone
    assert not list((tmp_path / "fleece").glob("godwit-f-*"))
    monkeypatch.setattr(BitmapTracker, "_plan", plan)
    res = run_cycle(project, "s", tracker=tracker)  # tracking lost: a full read, and a good replica
    assert res.bytes_read >= 4 * MiB
    assert _replica_sha(project, tmp_path) == sha(daemon.read_all())
