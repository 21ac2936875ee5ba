"""The QEMU guest agent (QGA): freezing a guest's filesystems around a point-in-time view.

QGA speaks QMP's JSON without a greeting or capabilities negotiation, so it is spoken with
``qemu.qmp``'s client with ``await_greeting`` and ``negotiate`` off. Before any command the
session is synchronised with ``guest-sync`` and a random id (the agent may hold a stale reply of
an earlier client: ``qemu.qmp`` drops replies whose id it did not send, and the echoed id proves
the channel is in step). ``guest-sync-delimited`` would also reset the agent's parser with a raw
0xFF byte, which ``qemu.qmp`` cannot send; ``guest-sync`` is what the protocol allows instead.

:func:`frozen_guest` is the only way godwit freezes: ``guest-fsfreeze-freeze`` with a timeout,
then the body (the QMP transaction), then ``guest-fsfreeze-thaw`` — always: when the body fails,
when godwit is interrupted (``finally``), and from a watchdog thread if the body takes longer
than the timeout. When the freeze command itself times out, a thaw is queued behind it at once
and awaited on a thread of its own (the agent answers in order). A freeze a killed godwit left
is thawed at the next one (``guest-fsfreeze-status`` says ``frozen``). Any failure of the agent
is a warning, never a failed cycle: the view is then crash-consistent, as without an agent.

The connection runs on an event loop of its own thread, so the watchdog can thaw while the
caller's thread is blocked in QMP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from godwit.errors import SourceError

DEFAULT_TIMEOUT = 10.0
LATE_THAW = 300.0  # how long a thaw queued behind a slow freeze waits for the agent

logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
log = logging.getLogger("godwit.qga")


class GuestAgent:
    """One synchronised connection to a guest agent's unix socket (the host end of the
    ``org.qemu.guest_agent.0`` virtio-serial channel)."""

    def __init__(self, path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        from qemu.qmp import QMPClient

        self.path = path
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="godwit-qga", daemon=True)
        self._thread.start()
        self._client = QMPClient("godwit-qga")
        self._client.await_greeting = False
        self._client.negotiate = False
        try:
            self._call(self._client.connect(str(path)), timeout)
            token = secrets.randbelow(1 << 31)
            said = self.execute("guest-sync", id=token)
            if said != token:
                raise SourceError(f"guest agent at {path} answered guest-sync with {said!r}, not {token}")
        except BaseException:
            self.close()
            raise

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        fut = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return fut.result(timeout + 1)
        except SourceError:
            raise
        except Exception as exc:  # timeout, refusal, a closed channel: the caller decides what it means
            fut.cancel()
            what = (f"no answer within {timeout:.0f} s" if isinstance(exc, TimeoutError)
                    else (str(exc) or type(exc).__name__))
            raise SourceError(f"guest agent at {self.path}: {what}") from None

    def execute(self, command: str, timeout: float | None = None, **args: Any) -> Any:
        """Run one command (thread-safe: the watchdog thaws from another thread)."""
        return self._call(self._client.execute(command, args or None), timeout or self.timeout)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self._call(self._client.disconnect(), 2.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


@contextlib.contextmanager
def frozen_guest(path: Path, *, timeout: float, warnings: list[str], what: str) -> Iterator[Callable[[], bool]]:
    """Freeze the guest's filesystems for the body. Yields ``held()``: True while the freeze holds
    (ask it right after the transaction); False if the agent is missing or slow, the freeze
    failed, or the watchdog thawed after ``timeout`` seconds. Never raises for the agent."""
    expired = threading.Event()
    agent: GuestAgent | None = None
    owed = False
    try:
        agent = GuestAgent(path, timeout=timeout)
        if agent.execute("guest-fsfreeze-status") == "frozen":
            agent.execute("guest-fsfreeze-thaw")
            warnings.append(f"{what}: the guest's filesystems were still frozen (a godwit died while it held "
                            "them); thawed")
        owed = True  # from here on a thaw is owed, also if the freeze command times out
        agent.execute("guest-fsfreeze-freeze")
    except SourceError as exc:
        warnings.append(f"{what}: the guest agent could not freeze the filesystems ({exc.message}); "
                        "this view is crash-consistent")
        log.warning("%s: fsfreeze failed: %s", what, exc.message)
        if agent is not None:
            if owed:  # the freeze may still happen late: a thaw queued behind it undoes it
                _thaw_late(agent, what)
            else:
                agent.close()
        agent = None
    except BaseException:  # interrupted while freezing: thaw before giving up
        if agent is not None:
            if owed:
                _thaw(agent, warnings, what)
            agent.close()
        raise
    if agent is None:
        yield lambda: False
        return
    live = agent

    def watchdog() -> None:
        expired.set()
        _thaw(live, warnings, what)

    timer = threading.Timer(timeout, watchdog)
    timer.daemon = True
    timer.start()
    try:
        yield lambda: not expired.is_set()
    finally:
        timer.cancel()
        timer.join()
        if expired.is_set():
            warnings.append(f"{what}: the freeze was held longer than {timeout:g} s and was thawed by the "
                            "watchdog; this view is crash-consistent")
        else:
            _thaw(live, warnings, what)
        live.close()


def _thaw(agent: GuestAgent, warnings: list[str], what: str) -> None:
    try:
        agent.execute("guest-fsfreeze-thaw")
    except SourceError as exc:
        warnings.append(f"{what}: guest-fsfreeze-thaw failed ({exc.message}); the next cycle thaws the guest "
                        "if it is still frozen")
        log.error("%s: thaw failed: %s", what, exc.message)


def _thaw_late(agent: GuestAgent, what: str) -> None:
    """Send the thaw now and wait for it on a thread of its own: the agent answers requests in
    order, so it thaws as soon as the slow freeze returns; the cycle goes on crash-consistent."""
    def wait() -> None:
        try:
            agent.execute("guest-fsfreeze-thaw", timeout=LATE_THAW)
            log.info("%s: thawed after a slow freeze", what)
        except SourceError as exc:
            log.error("%s: the guest did not thaw (%s); the next cycle thaws it if it is still frozen",
                      what, exc.message)
        finally:
            agent.close()

    threading.Thread(target=wait, name="godwit-qga-thaw", daemon=True).start()
