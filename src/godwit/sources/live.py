"""A disk of a running QEMU (or qemu-storage-daemon), read from an image-fleecing export.

Spec (parsed in ``sources.live_spec``): ``qemu+unix:///path/to/qmp.sock?node=NODE[&nbd=SOCK][&fleece_dir=DIR][&min_free_mib=N][&qga=SOCK][&qga_timeout=S]``.
``node`` is the block node the guest writes (its format node, e.g. the qcow2 one); ``nbd`` is the
unix socket of an NBD server the daemon already runs (QEMU runs at most one), else godwit starts
one on a socket of its own; ``fleece_dir`` holds the temporary overlay (default: godwit's
snapshot folder). The overlay must be on a filesystem the QEMU process can write. ``qga`` is the
unix socket of the guest agent's channel (``org.qemu.guest_agent.0``): with it the guest's
filesystems are frozen around the freeze (``sources.qga``; at most ``qga_timeout`` seconds,
default 10) and the view is filesystem-consistent (``fs``), else crash-consistent (``crash``).

**Space guard.** The overlay grows with every cluster the guest overwrites during the cycle; if
its filesystem filled, QEMU would fail the guest's writes. So a cycle does not start while that
filesystem has less than ``min_free_mib`` (default 256) free, and a running one checks before
every read and aborts (:class:`SpaceLowError`) below it: the overlay is dropped, the tracker
merges its bitmap back, and the engine pauses the server until space returns.

How a cycle reads it (libvirt's pull-mode backup, done over QMP with ``qemu.qmp``):

1. *Leftovers first.* Every export, job and node named ``godwit-f-<key>`` (key: this disk of this
   server) was left by a godwit that died; they are removed, and so is the overlay file.
2. *Freeze* (:meth:`LiveSource.freeze`, on first use): one QMP ``transaction`` adds the bitmap
   the tracker asks for, disables the ones it names, and starts ``blockdev-backup sync=none``
   from the node into a fresh qcow2 overlay whose backing is the node: from then on every guest
   write first copies the old cluster into the overlay, so the overlay reads as the disk at the
   instant of the transaction while the guest goes on writing. Every disk of the server behind
   the same QMP socket is frozen in that same transaction (``sources.live_group``).
3. A read-only NBD export of the overlay (exporting the disabled bitmaps) is read with libnbd.
4. :meth:`close` deletes the export, cancels the job, deletes the node and the overlay file.
   Bitmaps are the tracker's (``godwit.trackers.bitmap``): close never touches them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from godwit.errors import GodwitError, SourceError
from godwit.sources import live_group
from godwit.sources.base import DiskSource, Extent
from godwit.sources.live_fleece import cleanup_leftovers, drop_fleece, new_overlay
from godwit.sources.live_spec import LiveSpec, fleece_name
from godwit.sources.qmp import QmpSession

DIRTY = 1  # NBD qemu:dirty-bitmap flag
STATE_ZERO = 2  # NBD base:allocation flag: the run reads as zeros
CONNECTIONS = 2


class DirtyRun(NamedTuple):
    offset: int
    length: int
    dirty: bool
    zero: bool  # only meaningful when dirty


def _runs(entries: list[int], pos: int) -> list[tuple[int, int, int]]:
    """(start, end, flags) from an NBD block-status answer that starts at ``pos``."""
    out = []
    for i in range(0, len(entries) - 1, 2):
        if entries[i] <= 0:
            break
        out.append((pos, pos + entries[i], entries[i + 1]))
        pos += entries[i]
    return out


class SpaceLowError(SourceError):
    """The filesystem of a fleecing overlay is (nearly) full: the cycle stops before QEMU fails the guest."""


class FreezePlan(NamedTuple):
    """What the tracker wants done to the bitmaps in a disk's freeze transaction."""
    add: str | None
    disable: tuple[str, ...]
    persistent: bool


class LiveSource(DiskSource):
    """A live QEMU disk; every read sees the frozen view of :meth:`freeze`."""

    def __init__(self, spec: LiveSpec, *, key: str, fleece_dir: Path, group: str | None = None,
                 index: int = 0) -> None:
        super().__init__()
        self.spec = spec
        self.description = str(spec)
        self.index = index  # the disk's index in its server (for messages)
        self.name = fleece_name(key)
        self._fleece_dir = spec.fleece_dir or fleece_dir
        self.overlay = self._fleece_dir / f"{self.name}.qcow2"
        self.frozen = False
        self.closed = False
        self.consistency = "crash"  # nothing is read but from the frozen view (freeze on first use)
        self.view = "fleecing"
        self.instant = ""  # what the members of one freeze transaction share
        self.plan: FreezePlan | None = None
        self.exported: list[str] = []
        self._held: set[str] = set()  # what this cycle made in QEMU: "node", "job", "export"
        self._reader: Any = None  # the NbdSource reading the export
        self._dirty_handle: Any = None
        self.group = live_group.join(self, group)
        try:
            nodes = self.group.qmp.nodes()
            node = nodes.get(spec.node)
            listed = (node or {}).get("dirty-bitmaps") or []
            self.bitmaps: dict[str, dict[str, Any]] = {b["name"]: b for b in listed if "name" in b}
            if node is None:
                raise SourceError(f"QEMU at {spec.qmp} has no block node {spec.node!r}",
                                  hint="the disk was removed or renamed; fix the server's disk or re-add it")
            self.size = int(node["image"]["virtual-size"])
            self.driver = str(node["drv"])
            self.warnings.extend(cleanup_leftovers(self.group.qmp, self.name, self.overlay, nodes=nodes))
        except BaseException:
            self.closed = True
            live_group.leave(self, self.group)
            raise

    @property
    def qmp(self) -> QmpSession | None:
        """The monitor session this cycle shares with the other disks of the same QEMU."""
        return None if self.closed else self.group.qmp

    # -- freezing -------------------------------------------------------------------------------

    def plan_freeze(self, *, add: str | None = None, disable: tuple[str, ...] = (), persistent: bool = True) -> None:
        """Say what the freeze transaction does to this disk's bitmaps (before it runs)."""
        if self.frozen:
            raise SourceError(f"{self.description} is already frozen")
        self.plan = FreezePlan(add, tuple(disable), persistent)

    def freeze(self, *, add: str | None = None, disable: tuple[str, ...] = (), persistent: bool = True) -> None:
        """Take the point-in-time view: one transaction that adds bitmap ``add`` (enabled), disables
        ``disable`` and starts fleecing, for this disk and every other disk of the group that is
        not frozen yet; then export each view with its disabled bitmaps."""
        if self.frozen:
            raise SourceError(f"{self.description} is already frozen")
        self._monitor()
        if add is not None or disable:
            self.plan_freeze(add=add, disable=disable, persistent=persistent)
        self.group.freeze()

    def prepare_overlay(self, q: QmpSession) -> None:
        """The overlay file and its node (blockdev-add cannot be part of a transaction)."""
        self.make_overlay()
        cmd, args = self.add_overlay_command()
        q.run(cmd, **args)
        self.made("node")

    def make_overlay(self) -> None:
        """The overlay file (a copy of a template: no QEMU round trip)."""
        self._fleece_dir.mkdir(parents=True, exist_ok=True)
        self.check_space()
        new_overlay(self.overlay, self.size)

    def add_overlay_command(self) -> tuple[str, dict[str, Any]]:
        return "blockdev-add", {"driver": "qcow2", "node-name": self.name, "backing": self.spec.node,
                                "file": {"driver": "file", "filename": str(self.overlay)}}

    def made(self, what: str) -> None:
        """QEMU made this cycle's ``node``, ``job`` or ``export``: the teardown removes it."""
        self._held.add(what)

    def freeze_actions(self) -> list[dict[str, Any]]:
        node, plan = self.spec.node, self.plan or FreezePlan(None, (), True)
        actions: list[dict[str, Any]] = []
        if plan.add is not None:
            actions.append({"type": "block-dirty-bitmap-add",
                            "data": {"node": node, "name": plan.add, "persistent": plan.persistent}})
        actions += [{"type": "block-dirty-bitmap-disable", "data": {"node": node, "name": b}} for b in plan.disable]
        actions.append({"type": "blockdev-backup",
                        "data": {"device": node, "target": self.name, "sync": "none", "job-id": self.name}})
        return actions

    def frozen_at(self, instant: str, *, filesystem: bool) -> None:
        """The transaction ran (the job exists); ``filesystem``: the guest agent held the freeze."""
        self._held.add("job")
        self.frozen = True
        self.instant = instant
        self.consistency = "fs" if filesystem else "crash"
        self.view = "guest agent fsfreeze, fleecing" if filesystem else "fleecing"

    def export_socket(self) -> Path:
        """The NBD server's socket (godwit starts one in QEMU, once per group, when the spec names none)."""
        return self.spec.nbd or self.group.nbd_socket(self._fleece_dir / f"{self.name}.nbd", self.description)

    def export_command(self) -> tuple[str, dict[str, Any]]:
        """A read-only NBD export of the view with the disabled bitmaps (they must be disabled first)."""
        disable = list(self.plan.disable) if self.plan else []
        return "block-export-add", {"type": "nbd", "id": self.name, "node-name": self.name, "writable": False,
                                    "bitmaps": disable}

    def exported_view(self, sock: Path) -> None:
        """The export exists: connect to it."""
        self._held.add("export")
        self.exported = list(self.plan.disable) if self.plan else []
        self._connect(sock)

    def export_view(self, q: QmpSession) -> None:
        sock = self.export_socket()
        cmd, args = self.export_command()
        q.run(cmd, **args)
        self.exported_view(sock)

    def _connect(self, sock: Path) -> None:
        from godwit.sources.nbd import NbdSource, _import_nbd
        from godwit.sources.qemu_nbd import ALLOCATION

        nbd = _import_nbd()
        if nbd is None:
            raise SourceError("cannot read a live QEMU disk: the libnbd Python binding is missing",
                              hint="install python3-libnbd and run tools/link_libnbd.py")
        handles = []
        for i in range(CONNECTIONS + 1):
            h = nbd.NBD()
            h.set_handle_name(f"godwit:{self.name}:{i}")
            h.add_meta_context(ALLOCATION)
            for b in self.exported:
                h.add_meta_context(f"qemu:dirty-bitmap:{b}")
            h.set_export_name(self.name)
            try:
                h.connect_unix(str(sock))
            except nbd.Error as exc:
                raise SourceError(f"{self.description}: cannot connect to the fleecing export: {exc.string}") from None
            handles.append(h)
        self._dirty_handle = handles.pop()
        self._reader = NbdSource(Path(self.description), "qcow2", _Connections(handles), nbd,  # type: ignore[arg-type]
                                 consistency="crash", warnings=[])
        if self._reader.size != self.size:
            raise SourceError(f"{self.description}: the fleecing export is {self._reader.size} bytes, "
                              f"the disk {self.size}")

    def check_space(self) -> None:
        """Raise SpaceLowError when the overlay's filesystem has less than min_free_mib free.

        Called before every read (a statvfs costs microseconds; a read, milliseconds)."""
        st = os.statvfs(self._fleece_dir)
        free = st.f_bavail * st.f_frsize
        if free < self.spec.min_free_mib << 20:
            raise SpaceLowError(
                f"{self.description}: only {free >> 20} MiB free where the fleecing overlay lives "
                f"({self._fleece_dir}, below min_free_mib={self.spec.min_free_mib}); the cycle stops before "
                "QEMU runs out of space for the guest's writes",
                hint=f"free space in {self._fleece_dir} (replication resumes by itself), or move the overlay "
                     "with &fleece_dir= in the disk's spec")

    def _monitor(self) -> QmpSession:
        q = self.qmp
        if q is None:
            raise SourceError(f"{self.description} is closed")
        return q

    # -- reading --------------------------------------------------------------------------------

    def read_into(self, offset: int, buf: memoryview) -> None:
        if not self.frozen:
            self.freeze()
        self.check_space()
        self._reader.read_into(offset, buf)

    def read_many(self, pieces: Sequence[tuple[int, memoryview]]) -> None:
        if not self.frozen:
            self.freeze()
        self.check_space()
        self._reader.read_many(pieces)

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        if not self.frozen:
            self.freeze()
        return self._reader.extents(offset, length)  # type: ignore[no-any-return]

    def dirty_runs(self, bitmap: str) -> Iterator[DirtyRun]:
        """Runs of an exported bitmap, covering the disk in order, each dirty or not and, when
        dirty, whether it reads as zeros. One NBD block-status request answers both contexts
        (the bitmap and base:allocation) for up to 1 GiB: a 2 GiB disk costs two round trips."""
        if bitmap not in self.exported:
            raise SourceError(f"bitmap {bitmap} is not exported by {self.description}")
        from godwit.sources.qemu_nbd import ALLOCATION

        context = f"qemu:dirty-bitmap:{bitmap}"
        h = self._dirty_handle
        found: dict[str, list[int]] = {context: [], ALLOCATION: []}

        def collect(meta: str, _off: int, entries: list[int], _err: object) -> int:
            if meta in found:
                found[meta].extend(entries)
            return 0

        pos = 0
        while pos < self.size:
            for v in found.values():
                v.clear()
            h.block_status(min(self.size - pos, 1 << 30), pos, collect)
            dirty, alloc = _runs(found[context], pos), _runs(found[ALLOCATION], pos)
            if not dirty:  # nothing said: treat the rest as dirty data, never as clean
                yield DirtyRun(pos, self.size - pos, True, False)
                return
            stop = min(self.size, dirty[-1][1])
            # Walk both run lists together; where allocation said nothing, the run is data.
            ai = 0
            for a, b, is_dirty in dirty:
                b = min(b, stop)
                while a < b:
                    while ai < len(alloc) and alloc[ai][1] <= a:
                        ai += 1
                    if not is_dirty:
                        yield DirtyRun(a, b - a, False, False)
                        a = b
                    elif ai < len(alloc) and alloc[ai][0] <= a:
                        end = min(b, alloc[ai][1])
                        yield DirtyRun(a, end - a, True, bool(alloc[ai][2] & STATE_ZERO))
                        a = end
                    else:
                        end = min(b, alloc[ai][0]) if ai < len(alloc) else b
                        yield DirtyRun(a, end - a, True, False)
                        a = end
            pos = stop

    # -- teardown -------------------------------------------------------------------------------

    def teardown_view(self) -> list[str]:
        """Remove what this cycle made (it knows what: no query); returns warnings."""
        warnings: list[str] = []
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._dirty_handle is not None:
            with contextlib.suppress(Exception):
                self._dirty_handle.shutdown()
            self._dirty_handle = None
        q = self.qmp
        if q is not None:
            try:
                if self._held:
                    drop_fleece(q, self.name, export="export" in self._held, job="job" in self._held)
                self._held.clear()
                self.overlay.unlink(missing_ok=True)
            except GodwitError as exc:  # QEMU gone or refusing: the next open cleans up; keep the cycle's error
                warnings.append(f"{self.description}: fleecing teardown failed ({exc.message}); "
                                "the next cycle or `godwit sources sweep` removes what is left")
        self.frozen = False
        self.exported = []
        return warnings

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.warnings.extend(self.teardown_view())
        finally:
            self.closed = True
            live_group.leave(self, self.group)


class _Connections:
    """What NbdSource needs of a server when the server is QEMU itself: the connections."""

    proc = None
    snapshot = None

    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles

    def stderr_line(self) -> str:
        return ""

    def release(self) -> list[str]:
        for h in self.handles:
            with contextlib.suppress(Exception):
                h.shutdown()
        self.handles.clear()
        return []


def open_live(spec: str, *, temp_tag: str | None, snapshot_dir: Path | None) -> LiveSource:
    ls = LiveSpec.parse(spec)
    # The key names this disk of this server without the cycle: a later cycle finds what an
    # interrupted one left. The group (this server's cycle) shares a session and a freeze.
    key, group, index = str(ls), None, 0
    if temp_tag:
        key, _, cycle = temp_tag.rpartition("-c")
        server, _, disk = key.rpartition("-d")
        group = f"{server}-c{cycle}" if server else None
        index = int(disk) if disk.isdigit() else 0
    return LiveSource(ls, key=key, fleece_dir=snapshot_dir or Path(os.environ.get("TMPDIR", "/tmp")),
                      group=group, index=index)
