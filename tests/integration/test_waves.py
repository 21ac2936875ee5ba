"""Waves: membership rules, and a wave of three servers test-migrated then planned-migrated in
parallel through the CLI, with one server's shutdown command failing: the two others migrate
(bytes equal to their sources), the third keeps replicating, and the report and exit code say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server, remove_server
from godwit.engine.mover import apply_server
from godwit.errors import ConflictError, NotFoundError
from godwit.ops import waves
from godwit.project.project import Project
from tests.helpers import make_raw, scribble

pytestmark = pytest.mark.both_databases

SIZE = 2 << 20


def _servers(project: Project, tmp_path: Path, names: list[str]) -> dict[str, Path]:
    disks = {}
    for i, n in enumerate(names):
        disks[n] = make_raw(tmp_path / f"{n}.raw", SIZE, seed=i)
        add_server(project, n, [str(disks[n])])
    return disks


def test_a_server_is_in_at_most_one_wave(project: Project, tmp_path: Path) -> None:
    _servers(project, tmp_path, ["a", "b", "c"])
    w = waves.create(project, "w1", ["b", "a"])
    assert w.servers == ["b", "a"]
    with pytest.raises(ConflictError, match="already in wave w1"):
        waves.create(project, "w2", ["c", "a"])
    assert [x.name for x in waves.list_waves(project)] == ["w1"]  # nothing of w2 was kept
    with pytest.raises(ConflictError, match="already exists"):
        waves.create(project, "w1", ["c"])
    with pytest.raises(NotFoundError):
        waves.create(project, "w3", ["nope"])
    remove_server(project, "a")  # a removed server leaves its wave
    assert waves.show(project, "w1").servers == ["b"]
    waves.remove(project, "w1")
    assert waves.create(project, "w2", ["b", "c"]).servers == ["b", "c"]
    with pytest.raises(NotFoundError):
        waves.show(project, "w1")


def _godwit(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(root)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.usefixtures("database_env")
def test_a_wave_of_three_with_one_failing_shutdown(project: Project, tmp_path: Path) -> None:
    names = ["web1", "web2", "db1"]
    disks = _servers(project, tmp_path, names)
    for n in names:
        replication.start(project, n)
        apply_server(project, n)  # a recovery point for the test migration
    root = project.root
    created = _godwit(root, "wave", "create", "w", *[a for n in names for a in ("--server", n)], "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["servers"] == names
    listed = json.loads(_godwit(root, "wave", "list", "--json").stdout)
    assert [w["name"] for w in listed] == ["w"]

    tested = _godwit(root, "migrate", "--wave", "w", "--test", "--out", str(tmp_path / "test"), "--json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rep = json.loads(tested.stdout)
    assert [s["ok"] for s in rep["servers"]] == [True] * 3 and rep["failed"] == []
    for n in names:
        assert (tmp_path / "test" / f"{n}-disk0.raw").read_bytes() == disks[n].read_bytes()

    for i, n in enumerate(names):  # changes after the test migration: the final sync must carry them
        scribble(disks[n], seed=100 + i, writes=5)
    marks = tmp_path / "marks"
    marks.mkdir()
    # The shutdown command of db1 fails; the others leave a mark that they ran.
    cmd = f'test {{server}} != db1 && touch {marks}/{{server}}'
    planned = _godwit(root, "migrate", "--wave", "w", "--out", str(tmp_path / "final"), "--parallel", "2",
                      "--shutdown-command", cmd, "--json")
    assert planned.returncode == 50, planned.stdout  # MigrationError: the wave did not fully migrate
    assert "1 of 3 server(s) failed: db1 (replicating)" in planned.stderr, planned.stdout
    doc = json.loads(planned.stdout)
    assert doc["failed"] == ["db1"] and doc["error"]["exit_code"] == 50
    rep = {s["server"]: s for s in doc["servers"]}
    assert rep["web1"]["ok"] and rep["web2"]["ok"] and not rep["db1"]["ok"]
    assert rep["web1"]["state"] == rep["web2"]["state"] == "migrated"
    assert rep["db1"]["state"] == "replicating" and "shutdown command failed" in rep["db1"]["error"]
    assert sorted(p.name for p in marks.iterdir()) == ["web1", "web2"]
    for n in ("web1", "web2"):
        assert (tmp_path / "final" / f"{n}-disk0.raw").read_bytes() == disks[n].read_bytes()
    assert not (tmp_path / "final" / "db1-disk0.raw").exists()

    # db1 really keeps replicating: a new cycle runs and the wave can be retried for it alone.
    scribble(disks["db1"], seed=7, writes=3)
    assert replication.cycle(project, "db1").bytes_sent > 0
    shown = json.loads(_godwit(root, "wave", "show", "w", "--json").stdout)
    assert shown["states"] == {"web1": "migrated", "web2": "migrated", "db1": "replicating"}
    human = _godwit(root, "migrate", "--wave", "w", "--out", str(tmp_path / "final2"))
    assert human.returncode == 50 and "web1: FAILED: server web1 is already migrated" in human.stdout
