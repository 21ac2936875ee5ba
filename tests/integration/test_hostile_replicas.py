"""Issue 8.1: a replica belongs to one server and disk by uid. A server removed and added again
under its old name, or a state database restored from an older copy, must never reuse the old
replica's recovery points: `migrate --test` is bit-exact or fails, never exit 0 with wrong bytes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import make_raw, scribble


def godwit(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(project)],
                          capture_output=True, text=True, timeout=300)


def ok(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = godwit(project, *args)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def _init(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    subprocess.run([sys.executable, "-m", "godwit", "init", str(proj)], check=True, capture_output=True)
    return proj


def test_server_added_again_under_its_name_gets_a_new_replica(tmp_path: Path) -> None:
    proj = _init(tmp_path)
    disk = make_raw(tmp_path / "disk.raw", 32 << 20, seed=1)
    ok(proj, "server", "add", "vm", "--disk", str(disk))
    ok(proj, "replicate", "start", "vm")
    for seed in (2, 3):
        ok(proj, "mover", "run", "--once")
        scribble(disk, seed=seed, writes=20)
        ok(proj, "replicate", "cycle", "vm")
    ok(proj, "mover", "run", "--once")
    subprocess.run(["truncate", "-s", "24M", str(disk)], check=True)
    shrank = godwit(proj, "replicate", "cycle", "vm")
    assert shrank.returncode == 10 and "re-add" in shrank.stderr, shrank.stderr
    # The hint's advice, followed to the letter.
    ok(proj, "server", "remove", "vm", "--force")
    ok(proj, "server", "add", "vm", "--disk", str(disk))
    ok(proj, "replicate", "start", "vm")
    ok(proj, "mover", "run", "--once")
    scribble(disk, seed=4, writes=20)
    ok(proj, "replicate", "cycle", "vm")
    ok(proj, "mover", "run", "--once")
    out = tmp_path / "out"
    mig = godwit(proj, "migrate", "vm", "--test", "--out", str(out))
    assert mig.returncode == 0, mig.stderr  # a fresh replica: the migration works, and is exact
    assert (out / "vm-disk0.raw").read_bytes() == disk.read_bytes()
    assert len(list((proj / "replicas").glob("vm-*"))) == 2  # the old replica is kept, apart


def test_replica_of_a_newer_history_is_refused(tmp_path: Path) -> None:
    """A state database restored from an older copy: the replica is ahead of it, so applying or
    exporting would mix histories. Refused with the replica error's code."""
    proj = _init(tmp_path)
    disk = make_raw(tmp_path / "disk.raw", 8 << 20, seed=5)
    ok(proj, "server", "add", "vm", "--disk", str(disk))
    ok(proj, "replicate", "start", "vm")
    ok(proj, "mover", "run", "--once")
    old = tmp_path / "godwit.db.old"
    shutil.copy(proj / "state" / "godwit.db", old)
    for seed in (6, 7):
        scribble(disk, seed=seed, writes=10)
        ok(proj, "replicate", "cycle", "vm")
        ok(proj, "mover", "run", "--once")
    shutil.copy(old, proj / "state" / "godwit.db")
    scribble(disk, seed=8, writes=10)
    ok(proj, "replicate", "cycle", "vm")  # the cache side is fine; the replica is not
    mover = godwit(proj, "mover", "run", "--once")
    assert mover.returncode == 40 and "does not know" in mover.stderr, mover.stderr
    mig = godwit(proj, "migrate", "vm", "--test", "--out", str(tmp_path / "out"))
    assert mig.returncode == 40, mig.stderr
    assert not list((tmp_path / "out").glob("*.raw"))


def test_points_file_of_another_disk_is_refused(tmp_path: Path) -> None:
    proj = _init(tmp_path)
    disk = make_raw(tmp_path / "disk.raw", 4 << 20, seed=9)
    ok(proj, "server", "add", "vm", "--disk", str(disk))
    ok(proj, "replicate", "start", "vm")
    ok(proj, "mover", "run", "--once")
    points = next((proj / "replicas").glob("vm-*/disk0-*.points.json"))
    points.write_text(points.read_text().replace('"disk_uid": "', '"disk_uid": "x'))
    mig = godwit(proj, "migrate", "vm", "--test", "--out", str(tmp_path / "out"))
    assert mig.returncode == 40 and "belongs to another" in mig.stderr, mig.stderr


def test_planted_files_in_a_replica_are_refused(tmp_path: Path) -> None:
    """A replica's own files are opened without following links and must be regular files."""
    import os

    proj = _init(tmp_path)
    disk = make_raw(tmp_path / "disk.raw", 4 << 20, seed=12)
    ok(proj, "server", "add", "vm", "--disk", str(disk))
    ok(proj, "replicate", "start", "vm")
    ok(proj, "mover", "run", "--once")
    scribble(disk, seed=13, writes=10)
    ok(proj, "replicate", "cycle", "vm")
    ok(proj, "mover", "run", "--once")
    undo = next((proj / "replicas").glob("vm-*/disk0-*.undo/0000000002.undo"))
    undo.unlink()
    os.mkfifo(undo)
    mig = godwit(proj, "migrate", "vm", "--test", "-r", "1", "--out", str(tmp_path / "out"))
    assert mig.returncode == 40 and "not a regular file" in mig.stderr, mig.stderr
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    live = next((proj / "replicas").glob("vm-*/disk0-*.img"))
    live.unlink()
    live.symlink_to(victim)
    scribble(disk, seed=14, writes=10)
    ok(proj, "replicate", "cycle", "vm")
    mover = godwit(proj, "mover", "run", "--once")
    assert mover.returncode == 40 and "symbolic link" in mover.stderr, mover.stderr
    assert victim.read_bytes() == b"precious"
