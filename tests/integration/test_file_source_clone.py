"""Raw files read from a reflink clone (FICLONE) on a filesystem that has it, made for the test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.sources import open_source
from godwit.sources.base import DiskSource
from godwit.sources.file import FileSource
from tests.reflinkfs import reflink_filesystem

MiB = 1 << 20


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with reflink_filesystem(tmp_path_factory.mktemp("reflink")) as mnt:
        yield mnt


def _read_all(src: DiskSource) -> bytes:
    buf = bytearray(src.size)
    src.read_into(0, memoryview(buf))
    return bytes(buf)


def _write(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_clone_is_point_in_time(xfs: Path, tmp_path: Path) -> None:
    folder = xfs / "one"
    folder.mkdir()
    disk = folder / "disk.img"
    before = os.urandom(4 * MiB)
    disk.write_bytes(before)
    snapdir = xfs / "snapshots"
    with open_source(disk, "raw", snapshot_dir=snapdir, temp_tag="srv1-d0-c7") as src:
        assert src.consistency == "crash", src.warnings
        assert src.warnings == []
        assert isinstance(src, FileSource) and src.clone_name == "srv1-d0-c7.clone"
        assert list(snapdir.iterdir()) == []  # the clone lives only in our descriptor
        _write(disk, MiB, b"\xee" * MiB)  # the guest writes after the clone
        disk.write_bytes(disk.read_bytes()[:2 * MiB])  # and even truncates the file
        assert _read_all(src) == before
    assert list(snapdir.iterdir()) == []


def test_two_disks_with_one_name_get_their_own_clone(xfs: Path) -> None:
    """Issue 8.2: clones were named after the file, so disk 0 read disk 1's content."""
    disks = []
    for name in ("a", "b"):
        (xfs / name).mkdir()
        path = xfs / name / "disk.img"
        data = os.urandom(2 * MiB)
        path.write_bytes(data)
        disks.append((path, data))
    snapdir = xfs / "snapshots2"
    sources = [open_source(p, "raw", snapshot_dir=snapdir, temp_tag=f"srv-d{i}-c1")
               for i, (p, _) in enumerate(disks)]
    try:
        assert [s.consistency for s in sources] == ["crash", "crash"]
        for src, (_, data) in zip(sources, disks, strict=True):
            assert _read_all(src) == data
    finally:
        for s in sources:
            s.close()


def test_untagged_opens_never_collide(xfs: Path) -> None:
    (xfs / "c").mkdir()
    path = xfs / "c" / "disk.img"
    path.write_bytes(os.urandom(MiB))
    snapdir = xfs / "snapshots3"
    with open_source(path, "raw", snapshot_dir=snapdir) as one, \
         open_source(path, "raw", snapshot_dir=snapdir) as two:
        assert isinstance(one, FileSource) and isinstance(two, FileSource)
        assert one.clone_name and two.clone_name and one.clone_name != two.clone_name
        assert "disk.img" not in one.clone_name


def test_leftover_or_planted_clone_name_is_replaced_not_followed(xfs: Path, tmp_path: Path) -> None:
    (xfs / "d").mkdir()
    path = xfs / "d" / "disk.img"
    data = os.urandom(MiB)
    path.write_bytes(data)
    snapdir = xfs / "snapshots4"
    snapdir.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (snapdir / "srv-d0-c3.clone").symlink_to(victim)  # planted, or left by a killed run
    with open_source(path, "raw", snapshot_dir=snapdir, temp_tag="srv-d0-c3") as src:
        assert src.consistency == "crash"
        assert _read_all(src) == data
    assert victim.read_bytes() == b"precious"
    assert list(snapdir.iterdir()) == []
