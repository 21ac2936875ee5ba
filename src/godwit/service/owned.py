"""The cycle locks of servers that appliances replicate, held by the service while it runs.

An appliance's cycles are written into the shared cache store before the service knows of them
(a running cycle's packs, committed cycles not yet reported). To the service's mover such packs
look like orphans, which its orphan collection deletes, and a cycle the service ran itself would
take a number the appliance's chain needs. Both take the server's ``cycle`` lock first, so the
service holds that lock for every appliance's server: the collection skips the server and a
cycle here is refused. (flock locks are per open file: a second open in this process conflicts
too. They die with the process.) Orphans of an appliance's dead cycles are its own to collect.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from godwit.errors import ConflictError
from godwit.state.locks import file_lock, lock_path

log = logging.getLogger("godwit.service")


class OwnedServers:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._held: dict[str, contextlib.ExitStack] = {}
        self._lock = threading.Lock()

    def hold(self, names: list[str]) -> None:
        """Take the cycle lock of each server not yet held; one busy now is tried again next time."""
        with self._lock:
            for name in names:
                if name in self._held:
                    continue
                stack = contextlib.ExitStack()
                try:
                    stack.enter_context(file_lock(lock_path(self.state_dir, name, "cycle"),
                                                  f"the cycle of server {name} (an appliance replicates it)"))
                except ConflictError:
                    log.warning("%s: its cycle lock is busy; the service takes it at the next contact", name)
                    continue
                self._held[name] = stack

    @contextlib.contextmanager
    def released(self, name: str) -> Iterator[None]:
        """Let go of one server's lock for a moment (e.g. for a resync, which takes it itself)."""
        with self._lock:
            stack = self._held.pop(name, None)
        if stack is not None:
            stack.close()
        try:
            yield
        finally:
            self.hold([name])

    def drop(self, names: list[str]) -> None:
        """Let go of these servers for good (their appliance was unregistered)."""
        with self._lock:
            stacks = [self._held.pop(n) for n in names if n in self._held]
        for stack in stacks:
            stack.close()

    def close(self) -> None:
        with self._lock:
            for stack in self._held.values():
                stack.close()
            self._held.clear()
