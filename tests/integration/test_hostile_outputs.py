"""Issue 8.4: `migrate --out` never follows a link planted in the output folder, never overwrites,
and refuses `/`, a source disk, and a source disk's own folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.project.project import Project
from tests.helpers import make_raw


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(project)],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def replicated(project: Project, tmp_path: Path) -> tuple[Project, Path]:
    (tmp_path / "src").mkdir()
    disk = make_raw(tmp_path / "src" / "d.raw", 4 << 20, seed=11)
    add_server(project, "vm", [str(disk)])
    replication.start(project, "vm")
    apply_server(project, "vm")
    return project, disk


@pytest.mark.parametrize("planted", [".godwit-write-test", "vm-disk0.raw.partial", "vm-disk0.raw"])
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_planted_links_are_never_followed(replicated: tuple[Project, Path], tmp_path: Path, planted: str,
                                          fmt: str) -> None:
    project, _ = replicated
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    out = tmp_path / "out"
    out.mkdir()
    name = planted.replace(".raw", f".{fmt}")
    os.symlink(victim, out / name)
    proc = run(project.root, "migrate", "vm", "--test", "--format", fmt, "--out", str(out))
    assert victim.read_bytes() == b"precious"
    assert (out / name).is_symlink()
    if name == f"vm-disk0.{fmt}":
        assert proc.returncode == 50 and "already exists" in proc.stderr, proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert not (out / f"vm-disk0.{fmt}").is_symlink()
    assert "Traceback" not in proc.stderr
    assert not [p for p in out.iterdir() if p.name.startswith(".godwit-") and p.name != name]  # no temporaries


def test_dangling_planted_link_creates_nothing(replicated: tuple[Project, Path], tmp_path: Path) -> None:
    project, _ = replicated
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "would-be-created"
    os.symlink(target, out / "vm-disk0.raw")
    proc = run(project.root, "migrate", "vm", "--test", "--out", str(out))
    assert proc.returncode == 50, proc.stderr
    assert not target.exists()


def test_output_folder_is_checked(replicated: tuple[Project, Path], tmp_path: Path) -> None:
    project, disk = replicated
    before = disk.read_bytes()
    for out, match in (("/", "must not be /"), (str(disk), "is a source disk"),
                       (str(disk.parent), "folder of source disk"), (str(tmp_path / "src" / "."), "folder of"),
                       (str(project.replicas_dir), "inside the project's replicas"),
                       (str(project.cache_dir / "x"), "inside the project's cache"),
                       (str(project.state_dir), "inside the project's state")):
        proc = run(project.root, "migrate", "vm", "--test", "--out", out)
        assert proc.returncode == 2 and match in proc.stderr, (out, proc.stderr)
    assert disk.read_bytes() == before
    assert sorted(p.name for p in disk.parent.iterdir()) == ["d.raw"]


def test_export_is_whole_and_exact(replicated: tuple[Project, Path], tmp_path: Path) -> None:
    project, disk = replicated
    out = tmp_path / "out"
    assert run(project.root, "migrate", "vm", "--test", "--out", str(out)).returncode == 0
    assert (out / "vm-disk0.raw").read_bytes() == disk.read_bytes()
    assert oct((out / "vm-disk0.raw").stat().st_mode & 0o777) == "0o644"
