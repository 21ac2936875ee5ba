"""Raw image files and block devices, read directly with pread (the fast path).

Point in time: on filesystems that can clone a file (XFS, Btrfs: FICLONE) the cycle reads a
reflink clone taken at its start, so it sees one instant (``crash`` consistency). Elsewhere it
reads the live file (``none``) and warns when some process holds it open for writing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from godwit.errors import SourceError
from godwit.sources.base import DiskSource, Extent

FICLONE = 0x40049409
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)
F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


def open_for_writing_elsewhere(fd: int) -> bool | None:
    """True when another open file description writes this file (a read lease is refused).

    Returns None when the kernel cannot tell us (not the owner, not a regular file).
    """
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return True
        return None
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
    return False


def open_readonly(path: Path) -> int:
    """Open a disk for reading, or raise a SourceError that says what to do."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(f"disk {path} does not exist",
                          hint="check the path, or `godwit server remove` the server") from None
    except PermissionError:
        raise SourceError(f"disk {path} is not readable (permission denied)",
                          hint="run godwit as a user that can read the disk") from None
    except OSError as exc:
        raise SourceError(f"disk {path} cannot be opened: {exc.strerror}") from None


class FileSource(DiskSource):
    def __init__(self, path: Path, *, snapshot_dir: Path | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.description = str(path)
        self._clone: Path | None = None
        fd = open_readonly(self.path)
        st = os.fstat(fd)
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not (self.is_block or stat.S_ISREG(st.st_mode)):
            os.close(fd)
            raise SourceError(f"disk {path} is neither a regular file nor a block device")
        if snapshot_dir is not None and not self.is_block:
            clone_fd = self._try_clone(fd, snapshot_dir)
            if clone_fd is not None:
                os.close(fd)
                fd = clone_fd
                self.consistency = "crash"
        self._fd = fd
        self.size = os.lseek(fd, 0, os.SEEK_END)
        if self.consistency == "none":
            if self.is_block:
                self.warnings.append(f"{path}: block device read live (no snapshot): consistency none")
            elif open_for_writing_elsewhere(fd):
                self.warnings.append(f"{path} is open for writing by another process and this filesystem "
                                     "cannot snapshot it: the cycle is not point-in-time (consistency none)")

    def _try_clone(self, fd: int, snapshot_dir: Path) -> int | None:
        snapshot_dir.mkdir(parents=True, exist_ok=True)
        clone = snapshot_dir / f"{self.path.name}.{os.getpid()}.clone"
        try:
            out = os.open(clone, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.ioctl(out, FICLONE, fd)
        except OSError:
            os.close(out)
            clone.unlink(missing_ok=True)
            return None
        self._clone = clone
        return out

    def read_into(self, offset: int, buf: memoryview) -> None:
        if offset < 0 or offset + len(buf) > self.size:
            raise SourceError(f"read outside {self.description} ({offset}+{len(buf)} of {self.size})")
        done = 0
        while done < len(buf):
            n = os.preadv(self._fd, [buf[done:]], offset + done)
            if n == 0:
                raise SourceError(f"{self.description} shrank while being read",
                                  hint="replication is paused for this server; check the disk")
            done += n

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise SourceError(f"extents outside {self.description} ({offset}+{length} of {self.size})")
        end = offset + length
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos: the rest is a hole
                    yield Extent(pos, end - pos, False)
                    return
                yield Extent(pos, end - pos, True)  # filesystem cannot tell: read it all
                return
            if data > pos:
                hole_end = min(data, end)
                yield Extent(pos, hole_end - pos, False)
                pos = hole_end
                if pos >= end:
                    return
            hole = min(os.lseek(self._fd, pos, SEEK_HOLE), end)
            yield Extent(pos, hole - pos, True)
            pos = hole

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._clone is not None:
            self._clone.unlink(missing_ok=True)
            self._clone = None
