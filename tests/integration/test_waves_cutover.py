"""Scheduled cutover through the CLI: a wave's planned migration scheduled with --at, listed,
another one cancelled before it starts, and the appliance loop (`replicate run --once`) running
the due one; the servers end migrated with their disks written, and a started cutover cannot be
cancelled."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.ops import waves
from godwit.project.project import Project
from tests.helpers import make_raw, scribble

pytestmark = [pytest.mark.both_databases, pytest.mark.usefixtures("database_env")]


def _godwit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(root)],
                          capture_output=True, text=True, timeout=300)


def test_a_scheduled_wave_cutover_runs_from_the_loop(project: Project, tmp_path: Path) -> None:
    disks = {n: make_raw(tmp_path / f"{n}.raw", 1 << 20, seed=i) for i, n in enumerate(("a", "b", "c"))}
    for n, d in disks.items():
        add_server(project, n, [str(d)])
        replication.start(project, n)
    waves.create(project, "w", ["a", "b"])
    root = project.root
    soon = datetime.fromtimestamp(time.time() + 9).isoformat(timespec="seconds")
    later = datetime.fromtimestamp(time.time() + 3600).isoformat(timespec="seconds")
    s1 = _godwit(root, "migrate", "--wave", "w", "--at", soon, "--out", str(tmp_path / "out"), "--json")
    assert s1.returncode == 0, s1.stderr
    wave_cut = json.loads(s1.stdout)
    assert wave_cut["state"] == "scheduled" and wave_cut["target_kind"] == "wave"
    shown = json.loads(_godwit(root, "wave", "show", "w", "--json").stdout)
    assert [c["id"] for c in shown["cutovers"]] == [wave_cut["id"]]  # the wave shows its pending cutover
    early = _godwit(root, "replicate", "run", "--once", "--json")  # before its time: nothing migrates
    assert early.returncode == 0, early.stderr
    assert project.db.server("a").state == "replicating"
    again = _godwit(root, "migrate", "--wave", "w", "--at", later, "--out", str(tmp_path / "out"))
    assert again.returncode == 2 and "already has a scheduled cutover" in again.stderr
    s2 = json.loads(_godwit(root, "migrate", "c", "--at", later, "--out", str(tmp_path / "out"), "--json").stdout)
    cancelled = _godwit(root, "migrate", "cancel", str(s2["id"]))
    assert cancelled.returncode == 0 and "cancelled cutover" in cancelled.stdout
    past = _godwit(root, "migrate", "c", "--at", "2020-01-01T00:00", "--out", str(tmp_path / "out"))
    assert past.returncode == 2 and "in the past" in past.stderr

    for i, d in enumerate(disks.values()):
        scribble(d, seed=50 + i, writes=3)
    time.sleep(max(0.0, datetime.fromisoformat(soon).timestamp() - time.time()) + 0.2)
    ran = _godwit(root, "replicate", "run", "--once", "--json")
    assert ran.returncode == 0, ran.stderr
    assert f"scheduled cutover {wave_cut['id']} of wave w: done" in ran.stderr
    assert [project.db.server(n).state for n in ("a", "b", "c")] == ["migrated", "migrated", "replicating"]
    for n in ("a", "b"):
        assert (tmp_path / "out" / f"{n}-disk0.raw").read_bytes() == disks[n].read_bytes()
    listed = {c["id"]: c for c in json.loads(_godwit(root, "migrate", "scheduled", "--json").stdout)}
    assert listed[wave_cut["id"]]["state"] == "done" and listed[s2["id"]]["state"] == "cancelled"
    assert listed[wave_cut["id"]]["result"]["failed"] == []
    late = _godwit(root, "migrate", "cancel", str(wave_cut["id"]))
    assert late.returncode == 5 and "only a scheduled one can be cancelled" in late.stderr
