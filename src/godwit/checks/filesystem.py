"""A folder's filesystem as godwit uses it: its type, O_DIRECT, reflink (FICLONE), free space.

Every probe works on a scratch file named ``.tmp-godwit-doctor-*`` in the folder itself (the
folder's own filesystem is the question), created with ``O_EXCL | O_NOFOLLOW`` and removed after.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from godwit.checks.finding import Finding, failed, passed, warned

FICLONE = 0x40049409  # the ioctl sources/file.py clones a raw disk with
ALIGN = 4096
#: Filesystems that live in memory: a cache or replica there is gone after a reboot.
RAM_FILESYSTEMS = {"tmpfs", "ramfs", "devtmpfs"}
REFLINK_FILESYSTEMS = "XFS (mkfs.xfs -m reflink=1, the default) or Btrfs"
MIN_FREE = 1 << 30  # below this a single initial cycle of a small disk can fill the cache
LOW_FREE_RATIO = 0.05


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) of ``path``, from /proc/self/mountinfo (longest match)."""
    target = os.path.realpath(path)
    best = ("/", "unknown")
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or not rfields:
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, rfields[0])
    return best


@contextlib.contextmanager
def scratch(folder: Path, flags: int = 0) -> Iterator[tuple[Path, int]]:
    path = folder / f".tmp-godwit-doctor-{secrets.token_hex(6)}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600)
    except OSError:
        path.unlink(missing_ok=True)  # ramfs creates the file, then refuses O_DIRECT
        raise
    try:
        yield path, fd
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def check_type(label: str, folder: Path) -> Finding:
    point, fstype = mount_of(folder)
    name = f"{label}: filesystem"
    if fstype in RAM_FILESYSTEMS:
        return failed(name, f"{folder} is on {fstype} (mounted at {point}), which lives in memory: what is "
                      "stored there is lost at reboot and bounded by RAM",
                      f"put the {label} folder on a disk filesystem (ext4, XFS): edit [{label}] path in godwit.toml")
    return passed(name, f"{fstype}, mounted at {point}")


def check_o_direct(label: str, folder: Path) -> Finding:
    """The local store writes packs with O_DIRECT; without it every pack fills the page cache."""
    name = f"{label}: O_DIRECT"
    o_direct = getattr(os, "O_DIRECT", 0)
    if not o_direct:
        return warned(name, "this platform has no O_DIRECT", "run godwit on Linux")
    fstype = mount_of(folder)[1]
    buf = mmap.mmap(-1, ALIGN)  # page-aligned, as O_DIRECT wants
    buf.write(b"godwit doctor\n".ljust(ALIGN, b"\0"))
    try:
        with scratch(folder, o_direct) as (_, fd):
            written = os.pwrite(fd, buf, 0)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return failed(name, f"{fstype} refuses direct I/O ({exc.strerror}): packs would go through the page "
                          "cache, costing more CPU than hashing and compressing them (docs/benchmarks.md)",
                          f"put the {label} folder on ext4 or XFS: edit [{label}] path in godwit.toml")
        return failed(name, f"cannot write a scratch file in {folder}: {exc.strerror}",
                      f"make {folder} writable by this user")
    finally:
        buf.close()
    if written != ALIGN:
        return failed(name, f"a {ALIGN}-byte direct write wrote {written} bytes", "check the filesystem")
    return passed(name, f"a page-aligned direct write works on {fstype}")


def check_reflink(label: str, folder: Path) -> Finding:
    """FICLONE in this folder: what makes a raw-file source on the same filesystem point-in-time."""
    name = f"{label}: reflink"
    fstype = mount_of(folder)[1]
    try:
        with scratch(folder) as (_, src), scratch(folder) as (_, dst):
            os.write(src, b"godwit doctor reflink\n".ljust(ALIGN, b"\0"))
            fcntl.ioctl(dst, FICLONE, src)
            ok = os.pread(dst, 22, 0) == b"godwit doctor reflink\n"
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV, errno.ENOSYS):
            return warned(name, f"{fstype} cannot clone files (FICLONE: {exc.strerror}): raw-file disks here are "
                          "read live, so their cycles are not point-in-time (consistency none)",
                          f"for crash-consistent cycles of raw files keep them and the project on "
                          f"{REFLINK_FILESYSTEMS}")
        return failed(name, f"cannot write a scratch file in {folder}: {exc.strerror}",
                      f"make {folder} writable by this user")
    if not ok:
        return failed(name, "a reflinked copy read back differently", "check the filesystem")
    return passed(name, f"{fstype} clones files (FICLONE): raw-file disks on it get point-in-time cycles")


def check_free(label: str, folder: Path) -> Finding:
    name = f"{label}: free space"
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return failed(name, f"cannot stat {folder}: {exc.strerror}", f"check [{label}] path in godwit.toml")
    free_gib, total_gib = usage.free / (1 << 30), usage.total / (1 << 30)
    detail = f"{free_gib:.1f} GiB free of {total_gib:.1f} GiB"
    fix = (f"free space on {mount_of(folder)[0]}, or move the {label} folder: an initial cycle stores "
           "every allocated block of a server's disks (compressed) until the mover has applied it")
    if usage.free < MIN_FREE:
        return failed(name, detail, fix)
    if usage.free < usage.total * LOW_FREE_RATIO:
        return warned(name, f"{detail} (under {LOW_FREE_RATIO:.0%})", fix)
    return passed(name, detail)


def check_folder(label: str, folder: Path, *, direct: bool = True, reflink: bool = True) -> list[Finding]:
    """The filesystem checks of one folder (a project's cache or replicas folder)."""
    if not folder.is_dir():
        return [failed(f"{label}: folder", f"{folder} does not exist",
                       f"create it, or fix [{label}] path in godwit.toml")]
    found = [check_type(label, folder)]
    if direct:
        found.append(check_o_direct(label, folder))
    if reflink:
        found.append(check_reflink(label, folder))
    return [*found, check_free(label, folder)]
