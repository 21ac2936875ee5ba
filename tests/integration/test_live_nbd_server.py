"""A live disk whose QEMU runs no NBD server: godwit starts one for the cycle and stops it; one
that a killed godwit left running is stopped and started again."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from godwit.engine.cycle import run_cycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.sources.live_spec import fleece_name
from godwit.trackers import BitmapTracker
from tests.qemu_daemon import QemuDaemon

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common")


def test_godwit_runs_the_nbd_server_when_qemu_has_none(project: Project, tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "8M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 1M 1M", str(image)], check=True,
                   capture_output=True)
    fleece = tmp_path / "fleece"
    daemon = QemuDaemon(tmp_path / "qsd", image=image, fleece_dir=fleece, nbd_server=False).start()
    try:
        add_server(project, "s", [daemon.spec])
        project.db.set_server_state(project.db.server("s").id, "replicating")
        run_cycle(project, "s", tracker=BitmapTracker())
        assert daemon.qmp("query-block-exports") == []
        # As a godwit killed mid-cycle would leave it: its NBD server still running in QEMU.
        server = project.db.server("s")
        sock = fleece / f"{fleece_name(f'{server.uid}-d0')}.nbd"
        daemon.qmp("nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})
        res = run_cycle(project, "s", tracker=BitmapTracker())
        assert res.bytes_read == 0
        with pytest.raises(Exception, match="NBD server not running"):  # stopped after the cycle
            daemon.qmp("nbd-server-stop")
        apply_server(project, "s")
        [f] = migration.test_migration(project, "s", out_dir=tmp_path / "out").files
        data = Path(f).read_bytes()
        assert data[1 << 20:2 << 20] == b"\x55" * (1 << 20) and data.count(0) == 7 << 20
    finally:
        daemon.kill()
