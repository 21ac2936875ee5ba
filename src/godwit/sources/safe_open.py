"""Opening a source disk without trusting what sits at its path.

A disk path is resolved once, when the disk is added (``server add`` stores the real path, links
followed). Every later open refuses a symbolic link there (``O_NOFOLLOW``: a link swapped in
after ``add`` could point anywhere), opens with ``O_NONBLOCK`` (``open()`` of a FIFO otherwise
blocks forever), checks with ``fstat`` that it got a regular file or a block device, and only
then makes the descriptor blocking again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from godwit.errors import SourceError

_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    return "not a regular file"


def open_readonly(path: Path) -> int:
    """Open a disk for reading: a regular file or a block device, never a link, FIFO or socket.

    Returns a blocking descriptor; raises a SourceError that says what to do.
    """
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:
        raise SourceError(f"disk {path} does not exist",
                          hint="check the path, or `godwit server remove` the server") from None
    except PermissionError:
        raise SourceError(f"disk {path} is not readable (permission denied)",
                          hint="run godwit as a user that can read the disk") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise SourceError(f"disk {path} is now a symbolic link; godwit does not follow links "
                              "swapped in after `server add`",
                              hint="put the disk back at its path, or remove the server and add it "
                                   "again with the path you mean") from None
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO with no writer on some kernels
            raise SourceError(f"disk {path} is not a regular file or block device",
                              hint="put the disk back at its path") from None
        raise SourceError(f"disk {path} cannot be opened: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise SourceError(f"disk {path} is {_kind(mode)}, not a regular file or block device",
                              hint="give the path of a disk image file or a block device")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def create_private(path: Path) -> int:
    """Create a new file for our own use (mode 0600): never an existing file, never via a link."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
