"""The source-side space guard: the fleecing overlay's filesystem (a small tmpfs here) fills
during a cycle; the cycle aborts cleanly, the server pauses with an event, nothing is lost, and
replication resumes bit-exact once space is freed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from godwit.engine import lifecycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.sources.live import LiveSource, SpaceLowError
from tests.qemu_daemon import QemuDaemon, kind_of, sha

pytestmark = [pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common"),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")]

MiB = 1 << 20
SIZE = 16 * MiB


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fleece"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(folder: Path, leave_mib: int) -> Path:
    st = os.statvfs(folder)
    filler = folder / "filler"
    with open(filler, "wb") as f:
        f.write(b"\xee" * max(0, st.f_bavail * st.f_frsize - (leave_mib << 20)))
    return filler


def test_a_filling_overlay_filesystem_pauses_and_resumes(project: Project, tmp_path: Path, small_fs: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    daemon = QemuDaemon(tmp_path / "qsd", size=SIZE, fleece_dir=small_fs).start()
    try:
        daemon.write(0, b"a" * (6 * MiB))
        add_server(project, "s", [daemon.spec + "&min_free_mib=16"])
        project.config.replication.tracker = "bitmap"
        lifecycle.start(project, "s")
        daemon.write(2 * MiB, b"b" * (3 * MiB))
        freeze = LiveSource.freeze

        def freeze_then_fill(self: LiveSource, **kw: Any) -> None:
            freeze(self, **kw)
            _fill(small_fs, leave_mib=8)  # as if the guest's churn had filled the overlay's filesystem

        with monkeypatch.context() as m:
            m.setattr(LiveSource, "freeze", freeze_then_fill)
            with pytest.raises(SpaceLowError):
                lifecycle.cycle(project, "s")
        server = project.db.server("s")
        assert server.state == "paused" and "min_free_mib" in (server.error or "")
        assert any("replication paused" in e.message for e in project.db.events(server="s"))
        assert not list(small_fs.glob("godwit-f-*"))  # the overlay is gone
        bitmaps = {n: b for n, b in daemon.bitmaps().items() if n.startswith("godwit-")}
        assert sorted(kind_of(n) for n in bitmaps) == ["godwit-c1", "godwit-next-b1"]
        assert bitmaps["godwit-c1"]["recording"]  # merged back and tracking again
        # Still full: the next attempt refuses before it makes an overlay.
        with pytest.raises(SpaceLowError):
            lifecycle.cycle(project, "s")
        (small_fs / "filler").unlink()
        daemon.write(12 * MiB, b"c" * 4096)
        daemon.close_guest()
        res = lifecycle.cycle(project, "s")
        assert project.db.server("s").state == "replicating"
        assert res.bytes_read < 5 * MiB  # the bitmap still knew every change: no full resync
        apply_server(project, "s")
        [f] = migration.test_migration(project, "s", out_dir=tmp_path / "out").files
        assert sha(Path(f).read_bytes()) == sha(daemon.read_all())
    finally:
        daemon.kill()
