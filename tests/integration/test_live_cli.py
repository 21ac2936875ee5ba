"""The live-disk path through the CLI: `server add --disk qemu+unix://…`, `replicate start`,
`replicate run --continuous` (stopped with SIGTERM), `replicate status` with the worst RPO."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.qemu_daemon import QemuDaemon, start_writer

pytestmark = [pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common"),
              pytest.mark.slow]  # godwit CLI subprocesses

GODWIT = str(Path(sys.executable).with_name("godwit"))


def _godwit(root: Path, *args: str) -> str:
    done = subprocess.run([GODWIT, *args, "--project", str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli_adds_a_live_disk_and_replicates_it_continuously(tmp_path: Path) -> None:
    daemon = QemuDaemon(tmp_path / "qsd", size=16 << 20, fleece_dir=tmp_path / "fleece").start()
    root = tmp_path / "proj"
    try:
        daemon.write(0, b"q" * (2 << 20))
        daemon.close_guest()
        subprocess.run([GODWIT, "init", str(root)], check=True, capture_output=True)
        toml = root / "godwit.toml"
        toml.write_text(toml.read_text().replace('tracker = "scan"', 'tracker = "bitmap"', 1))
        added = json.loads(_godwit(root, "server", "add", "s", "--disk", daemon.spec, "--json"))
        assert added["disks"][0]["format"] == "qemu-live" and added["disks"][0]["size"] == 16 << 20
        _godwit(root, "replicate", "start", "s")
        writer = start_writer(daemon, 16 << 20, rate=5e5)
        loop = subprocess.Popen([GODWIT, "replicate", "run", "--continuous", "--min-interval", "0.5",
                                 "--project", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(6)
        loop.send_signal(signal.SIGTERM)  # finishes the running cycle, then exits
        assert loop.wait(timeout=60) == 0, loop.stderr.read().decode() if loop.stderr else ""
        writer.kill()
        writer.wait()
        [status] = json.loads(_godwit(root, "replicate", "status", "s", "--json"))
        assert status["last_cycle"] >= 4  # back to back, not every 300 s
        assert status["rpo_max_seconds"] is not None and status["rpo_max_seconds"] < 10
        assert status["disks"][0]["rpo_max_seconds"] == status["rpo_max_seconds"]  # per disk too
        table = _godwit(root, "replicate", "status", "s")
        assert "(max " in table
        assert status["cycles"][-1]["consistency"] == "crash"
    finally:
        daemon.kill()
