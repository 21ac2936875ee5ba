"""Issue 8.5: what sits at a disk path may have changed since `server add`. A FIFO, a socket, a
directory or a symbolic link swapped in must give a clear SourceError at once, never a hang."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from godwit.engine.inventory import add_server
from godwit.errors import SourceError
from godwit.project.project import Project
from godwit.sources import open_source, record_format
from tests.helpers import make_raw

MiB = 1 << 20


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _link_to_a_disk(path: Path) -> None:
    other = path.with_name("other.img")
    make_raw(other, MiB)
    path.symlink_to(other)


@pytest.fixture
def bound_socket() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


SWAPS: dict[str, tuple[Callable[[Path], None] | None, str]] = {
    "fifo": (_fifo, "FIFO"),
    "socket": (None, "not a regular file or block device"),
    "directory": (_directory, "a directory"),
    "link-to-dev-zero": (_link_to_dev_zero, "symbolic link"),
    "link-to-a-disk": (_link_to_a_disk, "symbolic link"),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("swap", list(SWAPS))
@pytest.mark.parametrize("snapshot", [False, True], ids=["live", "snapshot"])
def test_swapped_path_is_a_clear_error(tmp_path: Path, swap: str, fmt: str, snapshot: bool,
                                       bound_socket: list[socket.socket]) -> None:
    path = tmp_path / "disk.img"
    make, words = SWAPS[swap]
    if make is None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.listen(1)
        bound_socket.append(s)
    else:
        make(path)
    with pytest.raises(SourceError) as info:
        open_source(path, fmt, snapshot_dir=tmp_path / "snaps" if snapshot else None, temp_tag="s-d0-c1")
    assert words in info.value.message
    assert str(path) in info.value.message
    assert info.value.hint
    with pytest.raises(SourceError):  # adding such a path is refused the same way
        record_format(path)


@pytest.mark.timeout(20)
def test_link_given_at_add_is_resolved_once(project: Project, tmp_path: Path) -> None:
    real = make_raw(tmp_path / "real.img", 2 * MiB)
    link = tmp_path / "by-name.img"
    link.symlink_to(real)
    _, disks = add_server(project, "web", [str(link)])
    assert disks[0].spec == str(real)  # what later cycles open, with O_NOFOLLOW
    with open_source(Path(disks[0].spec), disks[0].format) as src:
        assert src.size == 2 * MiB


def _godwit(*args: str, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(project)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_cycle_on_a_disk_replaced_by_a_fifo_fails_fast(project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "disk.img", 2 * MiB)
    add_server(project, "web", [str(disk)])
    assert _godwit("replicate", "start", "web", project=project.root).returncode == 0
    disk.unlink()
    os.mkfifo(disk)
    proc = _godwit("replicate", "cycle", "web", project=project.root)  # used to block in open() forever
    assert proc.returncode == 10, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "FIFO" in proc.stderr
