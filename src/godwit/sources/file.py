"""Raw image files and block devices, read directly with pread (the fast path).

Point in time: on filesystems that can clone a file (XFS, Btrfs: FICLONE) the cycle reads a
reflink clone taken at its start, so it sees one instant (``crash`` consistency). Elsewhere it
reads the live file (``none``) and warns when some process holds it open for writing.

The clone is created as ``<snapshot_dir>/<temp tag>.clone`` (``O_EXCL | O_NOFOLLOW``) and its name
is removed as soon as it is cloned: it lives only as long as our descriptor, so a killed godwit
leaves no clone pinning old blocks, and no two opens can ever share one.
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
from godwit.sources.safe_open import create_private, open_readonly
from godwit.sources.temp_names import temp_name

__all__ = ["FileSource", "open_for_writing_elsewhere", "open_readonly"]

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


class FileSource(DiskSource):
    def __init__(self, path: Path, *, snapshot_dir: Path | None = None, temp_tag: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.description = str(path)
        #: The name the clone was made under (removed at once; kept for diagnostics).
        self.clone_name: str | None = None
        fd = open_readonly(self.path)  # a regular file or block device, never a link or FIFO
        self.is_block = stat.S_ISBLK(os.fstat(fd).st_mode)
        if snapshot_dir is not None and not self.is_block:
            try:
                clone_fd = self._try_clone(fd, snapshot_dir, temp_name(temp_tag))
            except BaseException:
                os.close(fd)
                raise
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

    def _try_clone(self, fd: int, snapshot_dir: Path, name: str) -> int | None:
        """A reflink clone of ``fd``, open and already unlinked; None where cloning is not possible."""
        snapshot_dir.mkdir(parents=True, exist_ok=True)
        clone = snapshot_dir / f"{name}.clone"
        try:
            out = create_private(clone)
        except FileExistsError:
            # Only a run of the same server, disk and cycle uses this name, and the cycle lock
            # serialises those: this is a leftover of a killed run (or a planted link). Remove it.
            try:
                clone.unlink()
                out = create_private(clone)
            except OSError:
                return None
        except OSError:
            return None
        try:
            fcntl.ioctl(out, FICLONE, fd)
        except OSError:
            os.close(out)
            clone.unlink(missing_ok=True)
            return None
        clone.unlink(missing_ok=True)  # the descriptor keeps the clone; a killed godwit leaves none
        self.clone_name = clone.name
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
