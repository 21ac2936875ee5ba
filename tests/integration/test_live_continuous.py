"""Continuous replication of a live QEMU disk: ``run_loop(continuous=True)`` starts each cycle as
soon as the last one committed, and the mover keeps the replica one cycle behind."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.engine import lifecycle
from godwit.engine.cycle import CycleResult
from godwit.engine.inventory import add_server
from godwit.migrate import migration
from godwit.project.project import Project
from tests.qemu_daemon import QemuDaemon, sha, start_writer

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common")

SIZE = 16 << 20


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[QemuDaemon]:
    d = QemuDaemon(tmp_path / "qsd", size=SIZE, fleece_dir=tmp_path / "fleece").start()
    d.write(0, b"a" * (4 << 20))
    d.close_guest()
    yield d
    d.kill()


def test_continuous_cycles_follow_each_other_and_stay_bit_exact(project: Project, tmp_path: Path,
                                                               daemon: QemuDaemon) -> None:
    project.config.replication.tracker = "bitmap"
    add_server(project, "s", [daemon.spec])
    lifecycle.start(project, "s")
    stop = threading.Event()
    seen: list[tuple[float, CycleResult]] = []

    def on_cycle(res: CycleResult) -> None:
        seen.append((time.monotonic(), res))
        if len(seen) >= 5:
            stop.set()

    writer = start_writer(daemon, SIZE, rate=1e6)
    try:
        report = lifecycle.run_loop(project, continuous=True, min_interval=0.3, on_cycle=on_cycle,
                                    stop_event=stop)
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""  # wrote throughout
    finally:
        writer.kill()
        writer.wait()
    assert not report.errors and report.applied >= 5
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(seen)]
    assert max(gaps) < 5  # not the 300 s interval of godwit.toml
    # Dirty extents, not the whole disk (the first may come before the writer got going).
    assert all(0 < r.bytes_read < SIZE for _, r in seen[1:]), [r.bytes_read for _, r in seen]
    # Once the guest is quiet, one more round carries the last writes: replica == disk.
    daemon.close_guest()
    lifecycle.run_loop(project, once=True)
    status = lifecycle.status(project, "s")[0]
    assert status.rpo_max_seconds is not None and status.rpo_max_seconds < 10
    out = tmp_path / "out"
    [f] = migration.test_migration(project, "s", out_dir=out).files
    assert sha(Path(f).read_bytes()) == sha(daemon.read_all())
