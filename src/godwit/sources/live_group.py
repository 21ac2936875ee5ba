"""The live disks of one server behind one QMP socket, in one cycle: one session, one freeze.

A QMP chardev serves one client at a time, so the disks of one QEMU share one ``QmpSession``
for the whole cycle (opened by the first disk, closed by the last). And they are frozen together:
the first disk that needs its view freezes every member of the group in ONE ``transaction``
(each disk's bitmap add/disable and its ``blockdev-backup``), so the server's recovery point is
one instant across those disks. Disks behind different sockets (other QEMU processes) are other
groups, frozen one after the other; the manifest's ``consistency_detail`` says so.

When a member's spec names a guest agent (``&qga=``), the guest's filesystems are frozen around
that one transaction (``sources.qga.frozen_guest``) and the members become ``fs``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from godwit.errors import SourceError
from godwit.sources.qga import frozen_guest
from godwit.sources.qmp import QmpError, QmpSession

if TYPE_CHECKING:
    from godwit.sources.live import LiveSource

_lock = threading.Lock()
_groups: dict[tuple[str, Path], LiveGroup] = {}
_serial = itertools.count(1)
_parked: dict[Path, QmpSession] = {}  # sessions kept for the tracker's commit (see ``park``)


class LiveGroup:
    def __init__(self, key: tuple[str, Path]) -> None:
        self.key = key
        self.members: list[LiveSource] = []
        self.session: QmpSession | None = None
        self.keep_session = False  # the tracker wants the session after the last disk closed
        self.started_nbd: Path | None = None  # the NBD server godwit started in QEMU (one at most)
        self._freezing = threading.Lock()

    @property
    def qmp(self) -> QmpSession:
        if self.session is None:
            self.session = QmpSession(self.key[1])
        return self.session

    def nbd_socket(self, sock: Path, what: str) -> Path:
        """The socket of the NBD server godwit runs in QEMU for this group: started once."""
        if self.started_nbd is not None:
            return self.started_nbd
        q = self.qmp
        if sock.exists():  # a godwit that died left its NBD server running in QEMU: ours to stop
            with contextlib.suppress(QmpError):
                q.run("nbd-server-stop")
            sock.unlink(missing_ok=True)
        try:
            q.run("nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})  # the legacy form
        except QmpError as exc:
            raise SourceError(f"{what}: cannot start an NBD server in QEMU ({exc.message})",
                              hint="QEMU runs one NBD server at most: add &nbd=/path/to/its.sock "
                                   "to the disk's spec") from None
        self.started_nbd = sock
        return sock

    def stop_nbd(self) -> None:
        if self.started_nbd is not None and self.session is not None:
            with contextlib.suppress(SourceError):
                self.session.run("nbd-server-stop")
            self.started_nbd.unlink(missing_ok=True)
        self.started_nbd = None

    def freeze(self) -> None:
        """Freeze every member not frozen yet, in one transaction (guest agent around it)."""
        with self._freezing:
            todo = [m for m in self.members if not m.frozen]
            if todo:
                self._freeze(todo)

    def _freeze(self, todo: list[LiveSource]) -> None:
        q = self.qmp
        try:
            agent = next((m.spec for m in todo if m.spec.qga is not None), None)
            if agent is None:
                self._freeze_at_once(q, todo)
                return
            for m in todo:
                m.prepare_overlay(q)
            actions: list[dict[str, Any]] = [a for m in todo for a in m.freeze_actions()]
            instant = f"{self.key[1]}#{next(_serial)}"
            assert agent.qga is not None
            warnings = todo[0].warnings
            with frozen_guest(agent.qga, timeout=agent.qga_timeout, warnings=warnings,
                              what=f"guest of {agent.qmp}") as holding:
                q.run("transaction", actions=actions)
                held = holding()
            for m in todo:
                m.frozen_at(instant, filesystem=held)
            for m in todo:
                m.export_view(q)
        except BaseException:
            for m in todo:
                m.warnings.extend(m.teardown_view())
            raise

    def _freeze_at_once(self, q: QmpSession, todo: list[LiveSource]) -> None:
        """Without a guest agent nothing happens between the commands: the overlays' nodes, the
        transaction and the exports are sent back to back (one wait for QEMU, not three), and
        what each one that succeeded made is recorded for the teardown."""
        for m in todo:
            m.make_overlay()
        socks = [m.export_socket() for m in todo]  # in the fleecing folder, made just now
        actions: list[dict[str, Any]] = [a for m in todo for a in m.freeze_actions()]
        instant = f"{self.key[1]}#{next(_serial)}"
        commands = [m.add_overlay_command() for m in todo] + [("transaction", {"actions": actions})]
        commands += [m.export_command() for m in todo]
        answers = q.run_all(commands)
        n = len(todo)
        for m, a in zip(todo, answers[:n], strict=True):
            if not isinstance(a, QmpError):
                m.made("node")
        if not isinstance(answers[n], QmpError):
            for m in todo:
                m.frozen_at(instant, filesystem=False)
        for m, a in zip(todo, answers[n + 1:], strict=True):
            if not isinstance(a, QmpError):
                m.made("export")
        refused = next((a for a in answers if isinstance(a, QmpError)), None)
        if refused is not None:
            raise refused
        for m, sock in zip(todo, socks, strict=True):
            m.exported_view(sock)


def join(member: LiveSource, group_key: str | None) -> LiveGroup:
    """The group of ``member`` (a new one when ``group_key`` is None: a disk on its own)."""
    path = member.spec.qmp
    with _lock:
        key = (group_key or f"anon-{next(_serial)}", path)
        group = _groups.setdefault(key, LiveGroup(key))
        group.members.append(member)
        stale = _parked.pop(path, None) if group.session is None else None
    if stale is not None:  # kept for a tracker that was never told: it would lock the monitor out
        stale.close()
    return group


def leave(member: LiveSource, group: LiveGroup) -> None:
    """Drop ``member``; the last one out closes the session."""
    with _lock:
        if member in group.members:
            group.members.remove(member)
        last = not group.members
        if last:
            _groups.pop(group.key, None)
    if last and group.session is not None:
        group.stop_nbd()
        if group.keep_session:
            park(group.session)
        else:
            group.session.close()
        group.session = None


def park(session: QmpSession) -> None:
    """Keep ``session`` for the tracker's commit right after the disks closed: one connection per
    cycle instead of two. One that nobody takes is closed by the next ``join`` of its socket."""
    with _lock:
        old = _parked.pop(session.socket_path, None)
        _parked[session.socket_path] = session
    if old is not None and old is not session:
        old.close()


def take(path: Path) -> QmpSession | None:
    """The parked session of ``path``, if any (the caller closes or parks it again)."""
    with _lock:
        return _parked.pop(path, None)
