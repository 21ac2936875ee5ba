"""Talking QMP to a running QEMU or qemu-storage-daemon, with the ``qemu.qmp`` library.

A session is used from one thread at a time: a QMP chardev socket serves one client at a time, so
godwit holds one session per QEMU for a cycle (``sources.live_group``: every disk of that QEMU
shares it, and the bitmap tracker's commit reuses it) and disconnects as soon as the cycle is done
(a session left open would lock out the next one, and the operator's own tools).

Waiting for QEMU to finish something asynchronous (an export deleted, a job ended) listens for
its event rather than polling a query: one round trip, no sleep.
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
        self.commands = 0  # round trips so far (a benchmark reads it)
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

        self.commands += 1
        try:
            return self._sync(self._client.execute(command, args), COMMAND_TIMEOUT)
        except ExecuteError as exc:
            raise QmpError(f"QEMU refused {command}: {exc.error.error.desc}", qmp_class=exc.error_class) from None
        except Exception as exc:
            raise SourceError(f"QEMU monitor at {self.socket_path} failed during {command}: {_why(exc)}",
                              hint="QEMU may have stopped; the next cycle cleans up and resyncs if needed") from None

    def run_all(self, commands: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Run ``commands`` in order, sent back to back (QEMU runs a monitor's commands one after
        the other, in order): one wait instead of one per command. Each item of the answer is the
        command's return value or the ``QmpError`` QEMU refused it with; a later command that
        needs an earlier one's work fails by itself (e.g. "no node") when that one was refused."""
        from qemu.qmp import ExecuteError

        async def one(cmd: str, args: dict[str, Any]) -> Any:
            try:
                return await self._client.execute(cmd, args)
            except ExecuteError as exc:
                return QmpError(f"QEMU refused {cmd}: {exc.error.error.desc}", qmp_class=exc.error_class)

        async def go() -> list[Any]:
            return list(await asyncio.gather(*(one(c, a) for c, a in commands)))

        self.commands += len(commands)
        try:
            return self._sync(go(), COMMAND_TIMEOUT)  # type: ignore[no-any-return]
        except Exception as exc:
            raise SourceError(f"QEMU monitor at {self.socket_path} failed during "
                              f"{', '.join(c for c, _ in commands)}: {_why(exc)}",
                              hint="QEMU may have stopped; the next cycle cleans up and resyncs if needed") from None

    def run_awaiting(self, commands: list[tuple[str, dict[str, Any]]], events: list[tuple[str, dict[str, Any]]],
                     *, timeout: float = 30.0) -> list[QmpError]:
        """Run ``commands`` in order, then wait for every ``(name, data)`` event (each item of
        ``data`` must match the event's), listening from before the first command. A refused
        command is returned, not raised, and its event (same position) is not awaited."""
        from qemu.qmp import EventListener, ExecuteError

        refused: list[QmpError] = []

        def matches(ev: Any, data: dict[str, Any]) -> bool:
            got = ev.get("data") or {}
            return all(got.get(k) == v for k, v in data.items())

        async def go() -> None:
            listener = EventListener(names={n for n, _ in events})
            with self._client.listen(listener):
                pending = []
                for (cmd, args), want in zip(commands, events, strict=True):
                    self.commands += 1
                    try:
                        await self._client.execute(cmd, args)
                        pending.append(want)
                    except ExecuteError as exc:
                        refused.append(QmpError(f"QEMU refused {cmd}: {exc.error.error.desc}",
                                                qmp_class=exc.error_class))
                while pending:
                    ev = await listener.get()
                    pending = [w for w in pending if not (w[0] == ev["event"] and matches(ev, w[1]))]

        try:
            self._sync(go(), timeout)
        except Exception as exc:
            raise SourceError(f"QEMU monitor at {self.socket_path}: {', '.join(c for c, _ in commands)} did not "
                              f"finish: {_why(exc)}", hint="QEMU may have stopped; the next cycle cleans up") from None
        return refused

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
