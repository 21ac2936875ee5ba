"""Ctrl-C stops a throttled cycle at once, and the next cycle resumes it without losing a change.

Before, the interrupted process waited for the uploads that the bandwidth cap held: a pack in
flight at a few Mbps kept `replicate cycle` alive for as long as its bytes would take."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from godwit.engine import lifecycle as replication
from godwit.engine.cycle import run_cycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.project.project import Project
from godwit.state.locks import holder
from tests.helpers import make_raw

MiB = 1 << 20


def test_ctrl_c_ends_a_throttled_cycle_promptly_and_the_next_resumes(project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", 32 * MiB, seed=7)
    add_server(project, "s", [str(disk)])
    replication.start(project, "s")
    with disk.open("r+b") as f:
        f.write(os.urandom(16 * MiB))  # at 4 Mbps: 32 s of uploads
    proc = subprocess.Popen([sys.executable, "-m", "godwit", "replicate", "cycle", "s", "--max-mbps", "4", "-p",
                             str(project.root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (h := holder(project.state_dir, "s", "cycle")) is None or h.pid != proc.pid:
            assert proc.poll() is None and time.monotonic() < deadline, "the cycle never took its lock"
            time.sleep(0.05)
        time.sleep(1.0)  # into the uploads the cap holds
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert waited < 10, f"{waited:.1f} s after Ctrl-C: it waited for the capped uploads"
    assert [c.state for c in project.db.cycles(project.db.server("s").id)][-1] == "open"

    res = run_cycle(project, "s")  # resumes the open cycle: nothing of the change is lost
    assert res.number == 2
    apply_server(project, "s")
    assert next(project.replicas_dir.glob("s-*/disk0-*.img")).read_bytes() == disk.read_bytes()
