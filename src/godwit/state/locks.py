"""Advisory per-server locks, so two processes never run a cycle or an apply on one server."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from godwit.errors import ConflictError


@contextmanager
def server_lock(state_dir: Path, server: str, role: str, *, wait: float = 0.0) -> Iterator[None]:
    """Hold ``role`` (cycle, apply) for ``server``; wait up to ``wait`` seconds for another process
    to let go, then refuse.

    flock locks die with the process, so a ``kill -9`` never leaves a stale lock behind.
    """
    d = state_dir / "locks"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{server}.{role}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ConflictError(f"another godwit process is running the {role} of server {server}",
                                        hint="wait for it to finish, or stop it") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
