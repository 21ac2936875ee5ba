"""The local replica's file primitives: safe opens, hole punching, directory fsync, range merging."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
from pathlib import Path

from godwit.errors import ReplicaError

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]

_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range (it then reads as zeros). False when the filesystem cannot."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


def open_file(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open one of the replica's own files: never through a link, never a FIFO or a device (a
    planted one would redirect writes or block forever)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ReplicaError(f"{path} is a symbolic link", hint="move it aside; godwit made no such link") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ReplicaError(f"{path} is not a regular file", hint="move it aside; godwit made no such file")
    return fd


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def merge(ranges: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Sorted, non-overlapping (offset, length) ranges clipped to ``limit``."""
    out: list[tuple[int, int]] = []
    for off, n in sorted(ranges):
        end = min(off + n, limit)
        if end <= off:
            continue
        if out and off <= out[-1][0] + out[-1][1]:
            s = out[-1][0]
            out[-1] = (s, max(out[-1][0] + out[-1][1], end) - s)
        else:
            out.append((off, end - off))
    return out


def data_runs(fd: int, offset: int, length: int) -> list[tuple[int, int, bool]]:
    """``(offset, length, is_data)`` runs covering the range, from SEEK_DATA/SEEK_HOLE (all data
    where the filesystem cannot tell). Holes read as zeros without touching the disk."""
    end = offset + length
    out: list[tuple[int, int, bool]] = []
    pos = offset
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                data = end
            elif exc.errno == errno.EINVAL:
                return [(offset, length, True)]
            else:
                raise
        data = min(data, end)
        if data > pos:
            out.append((pos, data - pos, False))
        if data >= end:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        out.append((data, hole - data, True))
        pos = hole
    return out
