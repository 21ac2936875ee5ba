"""`godwit sources sweep`: what a killed cycle left on a live QEMU disk is listed (--dry-run) and
removed; the dead cycle's bitmap is merged back, so the next cycle still reads only the changes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.engine.cycle import run_cycle
from godwit.engine.inventory import add_server
from godwit.project.project import Project
from godwit.trackers import BitmapTracker
from tests.integration.test_live_bitmap import KILL_MID_CYCLE
from tests.qemu_daemon import QemuDaemon, kind_of

pytestmark = [pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common"),
              pytest.mark.slow]  # godwit CLI subprocesses

GODWIT = Path(sys.executable).with_name("godwit")


def _sweep(project: Project, *args: str) -> dict[str, list[object]]:
    done = subprocess.run([str(GODWIT), "sources", "sweep", "--project", str(project.root), "--json", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result: dict[str, list[object]] = json.loads(done.stdout)
    return result


def test_sweep_cleans_what_a_killed_cycle_left(project: Project, tmp_path: Path) -> None:
    daemon = QemuDaemon(tmp_path / "qsd", size=16 << 20, fleece_dir=tmp_path / "fleece").start()
    try:
        daemon.write(0, b"a" * (4 << 20))
        add_server(project, "s", [daemon.spec])
        project.db.set_server_state(project.db.server("s").id, "replicating")
        run_cycle(project, "s", tracker=BitmapTracker())
        daemon.write(1 << 20, b"b" * 5000)
        daemon.close_guest()
        done = subprocess.run([sys.executable, "-c", KILL_MID_CYCLE, str(project.root)], capture_output=True)
        assert done.returncode == -signal.SIGKILL
        listed = _sweep(project, "--dry-run")["leftovers"]
        whats = sorted(str(f["what"]) for f in listed)  # type: ignore[index]
        assert whats == ["bitmap", "fleecing node", "overlay file"], listed
        assert any(n.startswith("godwit-f-") for n in
                   (x["node-name"] for x in daemon.qmp("query-named-block-nodes", flat=True)))  # dry run: kept
        _sweep(project)
        assert [f["what"] for f in _sweep(project, "--dry-run")["leftovers"]] == ["bitmap"]  # type: ignore[index]
        assert not list((tmp_path / "fleece").glob("godwit-f-*"))
        left = sorted(kind_of(n) for n in daemon.bitmaps() if n.startswith("godwit-"))
        assert left == ["godwit-c1", "godwit-next-b1"]  # merged back; the dead cycle's stays until a commit
        res = run_cycle(project, "s", tracker=BitmapTracker())
        assert res.bytes_read == 64 << 10 and not res.warnings  # the write before the kill, not a full resync
    finally:
        daemon.kill()
