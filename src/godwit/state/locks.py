"""Advisory locks on files: per server, so two processes never run a cycle or an apply on one
server, and around schema upgrades of a SQLite database.

The holder writes its pid, command and start time into the lock file, so a refusal can say who
holds the lock and since when.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from godwit.errors import ConflictError
from godwit.state import holders


def lock_path(state_dir: Path, server: str, role: str) -> Path:
    return state_dir / "locks" / f"{server}.{role}.lock"


def holder_of(path: Path) -> holders.Holder | None:
    """Who holds the lock file ``path`` right now, or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return holders.decode(os.pread(fd, 4096, 0)) or holders.Holder(0, "unknown", None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def holder(state_dir: Path, server: str, role: str) -> holders.Holder | None:
    """Who holds ``role`` of ``server`` right now, or None when nobody does."""
    return holder_of(lock_path(state_dir, server, role))


@contextmanager
def file_lock(path: Path, what: str, *, wait: float = 0.0, hint: str = "wait for it to finish, or stop it"
              ) -> Iterator[None]:
    """Hold an exclusive flock on ``path``; wait up to ``wait`` seconds for another process to let
    go, then raise ConflictError naming ``what`` and the holder.

    flock locks die with the process, so a ``kill -9`` never leaves a stale lock behind (a stale
    holder record is harmless: it is only read while the lock is held).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    who = holders.decode(os.pread(fd, 4096, 0))
                    by = f" ({who.describe()})" if who else ""
                    raise ConflictError(f"another godwit process is running {what}{by}", hint=hint) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holders.encode(holders.me()), 0)
        yield
    finally:
        os.close(fd)


@contextmanager
def server_lock(state_dir: Path, server: str, role: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold ``role`` (cycle, apply) for ``server``; wait up to ``wait`` seconds, then refuse."""
    with file_lock(lock_path(state_dir, server, role), f"the {role} of server {server}", wait=wait):
        yield
