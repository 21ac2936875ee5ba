"""Talking QMP to a running QEMU or qemu-storage-daemon, with the ``qemu.qmp`` library.

A session is short-lived and used from one thread: a QMP chardev socket serves one client at a
time, so godwit connects when it needs the monitor and disconnects as soon as it is done (a
session left open would lock out the next one, and the operator's own tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from godwit.errors import SourceError

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0
WAIT_STEP = 0.005

# qemu.qmp logs every failed command at ERROR; the caller decides what an error means.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


class QmpError(SourceError):
    """QEMU refused a command: ``qmp_class`` is QEMU's error class (e.g. ``GenericError``)."""

    def __init__(self, message: str, *, qmp_class: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.qmp_class = qmp_class


class QmpSession:
    """One connection to a QMP monitor at a unix socket path."""

    def __init__(self, socket_path: Path) -> None:
        from qemu.qmp import QMPClient

        self.socket_path = socket_path
        self._loop = asyncio.new_event_loop()  # our own: callers are synchronous, on any thread
        self._client = QMPClient("godwit")
        self._open = False
        try:
            self._sync(self._client.connect(str(socket_path)), CONNECT_TIMEOUT)
            self._open = True
        except Exception as exc:  # ConnectError, OSError, TimeoutError: all mean "not reachable"
            self._loop.close()
            raise SourceError(f"cannot reach the QEMU monitor at {socket_path}: {_why(exc)}",
                              hint="check that QEMU (or qemu-storage-daemon) runs with "
                                   "`--chardev socket,path=SOCK,server=on,wait=off,id=m --monitor chardev=m` "
                                   "and that no other client holds the monitor") from None

    def _sync(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def run(self, command: str, **args: Any) -> Any:
        from qemu.qmp import ExecuteError

        try:
            return self._sync(self._client.execute(command, args), COMMAND_TIMEOUT)
        except ExecuteError as exc:
            raise QmpError(f"QEMU refused {command}: {exc.error.error.desc}", qmp_class=exc.error_class) from None
        except Exception as exc:
            raise SourceError(f"QEMU monitor at {self.socket_path} failed during {command}: {_why(exc)}",
                              hint="QEMU may have stopped; the next cycle cleans up and resyncs if needed") from None

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise SourceError(f"QEMU did not {what} within {timeout:.0f} s")
            time.sleep(WAIT_STEP)

    # -- queries --------------------------------------------------------------------------------

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {n["node-name"]: n for n in self.run("query-named-block-nodes", flat=True)}

    def bitmaps(self, node: str) -> dict[str, dict[str, Any]]:
        info = self.nodes().get(node)
        if info is None:
            return {}
        return {b["name"]: b for b in info.get("dirty-bitmaps") or [] if "name" in b}

    def export_ids(self) -> list[str]:
        return [e["id"] for e in self.run("query-block-exports")]

    def job_ids(self) -> list[str]:
        return [j["id"] for j in self.run("query-jobs")]

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(Exception):
                self._sync(self._client.disconnect(), CONNECT_TIMEOUT)
            self._loop.close()

    def __enter__(self) -> QmpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
