"""The guest-agent freeze with a real ``qemu-ga`` in a booted guest (``tests/qga_guest.py``): a
TCG VM whose ext4 data disk is the live godwit source and keeps being written by the guest.

A mounted ext4 carries the ``needs_recovery`` feature on disk until it is frozen or unmounted, so
a crash-consistent copy of it always needs journal recovery; the replica of a cycle godwit froze
through the agent must not, and ``e2fsck -fn`` must find it clean."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.engine.cycle import run_cycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.trackers import BitmapTracker
from tests import qga_guest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(qga_guest.available() is not None, reason=str(qga_guest.available()))]


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[qga_guest.Guest]:
    g = qga_guest.Guest(tmp_path)
    try:
        g.wait_for_agent()
        yield g
    finally:
        g.kill()


def _replica(project: Project, out: Path) -> Path:
    apply_server(project, "s")
    [f] = migration.test_migration(project, "s", out_dir=out).files
    return Path(f)


def _features(image: Path) -> str:
    head = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    return next(line for line in head.splitlines() if line.startswith("Filesystem features:"))


def test_a_real_guest_is_frozen_and_its_replica_is_filesystem_consistent(
        project: Project, guest: qga_guest.Guest, tmp_path: Path) -> None:
    add_server(project, "s", [guest.spec])
    project.db.set_server_state(project.db.server("s").id, "replicating")
    tracker = BitmapTracker()
    for n in (1, 2):  # the initial cycle and a delta through the bitmap
        res = run_cycle(project, "s", tracker=tracker)
        events = [e.message for e in project.db.events(server="s")]
        assert res.consistency == "fs", events
        image = _replica(project, tmp_path / f"out{n}")
        assert "needs_recovery" not in _features(image)  # frozen: the journal was flushed
        fsck = subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True, text=True)
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        counter = subprocess.run(["debugfs", "-R", "cat /counter", str(image)], capture_output=True,
                                 text=True, check=True).stdout.strip()
        assert int(counter) > 0  # the guest was writing
        shutil.rmtree(tmp_path / f"out{n}")
    # The control: the same guest without the agent gives a crash-consistent copy, which needs
    # journal recovery (so the check above would catch a freeze that did not happen).
    add_server(project, "t", [guest.spec.split("&qga=")[0]])
    project.db.set_server_state(project.db.server("t").id, "replicating")
    assert run_cycle(project, "t", tracker=BitmapTracker()).consistency == "crash"
    apply_server(project, "t")
    [f] = migration.test_migration(project, "t", out_dir=tmp_path / "out-t").files
    assert "needs_recovery" in _features(Path(f))
