"""Hostile guest images: `godwit assess` fails with a clear error, in bounded time, and never
touches the host (nothing is mounted here; the appliance reads a read-only NBD export)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from godwit.assess.child import guestfs_env
from godwit.assess.guest import Guest, GuestProblem
from tests.guest_images import GuestSpec, build
from tests.integration.test_assess import godwit, replicate

pytestmark = [pytest.mark.slow]
MiB = 1 << 20


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    subprocess.run([sys.executable, "-m", "godwit", "init", str(root / "proj")], check=True, capture_output=True)
    return root


def test_corrupt_filesystem(root: Path) -> None:
    disk = build(root / "corrupt.raw", GuestSpec(disk_size=512 * MiB))
    with open(disk, "r+b") as f:  # the superblock and the group descriptors: garbage
        f.seek(MiB)
        f.write(os.urandom(64 * 1024))
    replicate(root, "corrupt", disk)
    proc = godwit(root, "assess", "corrupt", ok=False)
    assert proc.returncode == 70, proc.stderr
    assert "no operating system found on the disks of corrupt" in proc.stderr and "Traceback" not in proc.stderr


def test_prepare_refuses_what_it_cannot_read(root: Path) -> None:
    out = root / "corrupt-migrated"
    godwit(root, "migrate", "corrupt", "--test", "--out", str(out), "--format", "raw")
    before = (out / "corrupt-disk0.raw").read_bytes()
    proc = godwit(root, "prepare", "corrupt", "--for", "azure", ok=False)
    assert proc.returncode == 70, proc.stderr
    assert "guest preparation refused: no operating system found" in proc.stderr
    assert (out / "corrupt-disk0.raw").read_bytes() == before  # refused: nothing written


def test_huge_file_where_a_small_one_belongs(root: Path) -> None:
    disk = build(root / "huge.raw", GuestSpec(disk_size=512 * MiB, sparse={"etc/fstab": 8 << 30}))
    replicate(root, "huge", disk)
    t0 = time.monotonic()
    proc = godwit(root, "assess", "huge", ok=False)
    assert proc.returncode == 70 and time.monotonic() - t0 < 120
    assert "/dev/sda1: guest file /etc/fstab is 8192 MiB" in proc.stderr, proc.stderr


def test_symlink_loops_are_errors_not_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import guestfs

    disk = build(tmp_path / "loop.raw", GuestSpec(disk_size=512 * MiB, links={
        "etc/loop-a": "/etc/loop-b", "etc/loop-b": "loop-a", "etc/network/interfaces": "/dev/zero"}))
    for k, v in guestfs_env().items():
        if k.startswith("LIBGUESTFS"):
            monkeypatch.setenv(k, v)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(disk), format="raw", readonly=True)
        g.launch()
        guest = Guest(g)
        g.mount_ro("/dev/sda1", "/")
        with pytest.raises(GuestProblem, match="/etc/loop-a"):
            guest.text("/etc/loop-a")
        with pytest.raises(GuestProblem, match="/etc/network/interfaces is not a regular file"):
            guest.text("/etc/network/interfaces")  # the guest's /dev/zero, never the host's
        assert guest.text("/etc/hostname") == "guest\n"
    finally:
        g.close()


def test_timeout_stops_the_appliance(root: Path) -> None:
    t0 = time.monotonic()
    proc = godwit(root, "assess", "corrupt", "--timeout", "3", ok=False)  # the first test's server
    assert proc.returncode == 70 and "did not finish in 3 s" in proc.stderr
    assert time.monotonic() - t0 < 30
    time.sleep(1)
    # The child and its qemu were killed: no process still serves from this project's temp folder.
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).find("godwit-assess-") >= 0]
    assert leftovers == []


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""
