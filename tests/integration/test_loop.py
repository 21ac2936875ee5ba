"""The appliance loop: every enabled server, the mover after each round, errors contained, and a
clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.project.project import Project
from tests.helpers import make_raw


def test_once_runs_every_server_and_contains_errors(project: Project, tmp_path: Path) -> None:
    good = make_raw(tmp_path / "good.raw", 4 << 20, seed=1)
    bad = make_raw(tmp_path / "bad.raw", 4 << 20, seed=2)
    add_server(project, "good", [str(good)])
    add_server(project, "bad", [str(bad)])
    add_server(project, "idle", [str(make_raw(tmp_path / "idle.raw", 1 << 20))])  # never started
    replication.start(project, "good")
    replication.start(project, "bad")
    bad.unlink()
    proc = subprocess.run([sys.executable, "-m", "godwit", "replicate", "run", "--once", "--json",
                           "--project", str(project.root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 10, proc.stderr  # the source error's code
    out = json.loads(proc.stdout)
    assert [c["server"] for c in out["cycles"]] == ["good"]
    assert [e["server"] for e in out["errors"]] == ["bad"] and "does not exist" in out["errors"][0]["error"]
    # The mover ran in the same command: good's initial and new delta, and bad's initial cycle
    # (committed before its disk vanished) are applied.
    assert out["applied"] == 3
    assert [rp.number for rp in project.db.recovery_points(project.db.server("good").id)] == [1, 2]
    assert [rp.number for rp in project.db.recovery_points(project.db.server("bad").id)] == [1]
    assert project.db.cycles(project.db.server("idle").id) == []


def test_sigterm_stops_the_loop_cleanly(project: Project, tmp_path: Path) -> None:
    add_server(project, "s", [str(make_raw(tmp_path / "d.raw", 4 << 20, seed=3))])
    replication.start(project, "s")
    proc = subprocess.Popen([sys.executable, "-m", "godwit", "replicate", "run", "--interval", "1",
                             "--project", str(project.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(project.db.cycles(project.db.server("s").id, ("applied",))) < 2:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not project.db.cycles(project.db.server("s").id, ("open",))
