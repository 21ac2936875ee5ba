"""A filesystem that can clone files (XFS with reflink), made by the test on a loop device.

Needs root, xfsprogs and a free loop device; skips otherwise. The mount and the loop device are
removed even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SIZE = 320 << 20  # mkfs.xfs refuses filesystems under 300 MiB


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


@contextmanager
def reflink_filesystem(workdir: Path) -> Iterator[Path]:
    """Yield a folder on a fresh XFS (reflink=1) mounted from a loop device."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("mkfs.xfs", "losetup", "mount", "umount")):
        pytest.skip("needs root, xfsprogs, losetup and mount to make an XFS on a loop device")
    image, mnt = workdir / "xfs.img", workdir / "xfs"
    mnt.mkdir()
    loop: str | None = None
    mounted = False
    try:
        with open(image, "wb") as f:
            f.truncate(SIZE)
        mkfs = _run("mkfs.xfs", "-q", "-m", "reflink=1", str(image))
        assert mkfs.returncode == 0, mkfs.stderr
        attach = _run("losetup", "--find", "--show", str(image))
        if attach.returncode != 0:
            pytest.skip(f"no loop device: {attach.stderr.strip()}")
        loop = attach.stdout.strip()
        mount = _run("mount", "-t", "xfs", loop, str(mnt))
        assert mount.returncode == 0, mount.stderr
        mounted = True
        yield mnt
    finally:
        if mounted and _run("umount", str(mnt)).returncode != 0:
            _run("umount", "-l", str(mnt))  # something still holds it: detach lazily
        if loop is not None:
            _run("losetup", "-d", loop)
        image.unlink(missing_ok=True)
