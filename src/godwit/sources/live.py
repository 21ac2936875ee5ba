"""A disk of a running QEMU (or qemu-storage-daemon), read from an image-fleecing export.

Spec: ``qemu+unix:///path/to/qmp.sock?node=NODE[&nbd=SOCK][&fleece_dir=DIR][&min_free_mib=N]``.
``node`` is the block node the guest writes (its format node, e.g. the qcow2 one); ``nbd`` is the
unix socket of an NBD server the daemon already runs (QEMU runs at most one), else godwit starts
one on a socket of its own; ``fleece_dir`` holds the temporary overlay (default: godwit's
snapshot folder). The overlay must be on a filesystem the QEMU process can write.

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
   instant of the transaction while the guest goes on writing.
3. A read-only NBD export of the overlay (exporting the disabled bitmaps) is read with libnbd.
4. :meth:`close` deletes the export, cancels the job, deletes the node and the overlay file.
   Bitmaps are the tracker's (``godwit.trackers.bitmap``): close never touches them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from godwit.errors import GodwitError, SourceError, UsageError
from godwit.sources.base import DiskSource, Extent
from godwit.sources.live_fleece import cleanup_leftovers, new_overlay
from godwit.sources.qmp import QmpError, QmpSession

SCHEME = "qemu+unix"
FORMAT = "qemu-live"  # the format recorded for such a disk
FLEECE_PREFIX = "godwit-f-"
DIRTY = 1  # NBD qemu:dirty-bitmap flag
CONNECTIONS = 2
MIN_FREE_MIB = 256


STATE_ZERO = 2  # NBD base:allocation flag: the run reads as zeros


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


@dataclass(frozen=True)
class LiveSpec:
    qmp: Path
    node: str
    nbd: Path | None = None
    fleece_dir: Path | None = None
    min_free_mib: int = MIN_FREE_MIB

    @classmethod
    def parse(cls, spec: str) -> LiveSpec:
        """Parse a ``qemu+unix://`` spec; also the form ``Path()`` leaves (``qemu+unix:/...``)."""
        parts = urlsplit(spec)
        if parts.scheme != SCHEME or not parts.path.startswith("/") or parts.netloc:
            raise UsageError(f"disk {spec!r} is not a live QEMU disk spec",
                             hint="write qemu+unix:///path/to/qmp.sock?node=NODE")
        q = {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=False).items()}
        unknown = set(q) - {"node", "nbd", "fleece_dir", "min_free_mib"}
        if "node" not in q or unknown:
            raise UsageError(f"disk {spec!r}: " + (f"unknown parameter {sorted(unknown)[0]!r}" if unknown
                                                   else "no node= given"),
                             hint="write qemu+unix:///path/to/qmp.sock?node=NODE[&nbd=SOCK][&fleece_dir=DIR]")
        free = q.get("min_free_mib", str(MIN_FREE_MIB))
        if not free.isdigit():
            raise UsageError(f"disk {spec!r}: min_free_mib must be a number of MiB")
        return cls(Path(parts.path), q["node"], Path(q["nbd"]) if "nbd" in q else None,
                   Path(q["fleece_dir"]) if "fleece_dir" in q else None, int(free))

    def __str__(self) -> str:
        extra = "".join(f"&{k}={v}" for k, v in (("nbd", self.nbd), ("fleece_dir", self.fleece_dir)) if v)
        if self.min_free_mib != MIN_FREE_MIB:
            extra += f"&min_free_mib={self.min_free_mib}"
        return f"{SCHEME}://{self.qmp}?node={self.node}{extra}"


def is_live_spec(spec: str) -> bool:
    return spec.startswith(SCHEME + ":")


def fleece_name(key: str) -> str:
    """The node/export/job name of a disk's fleecing objects (QEMU node names are < 32 bytes)."""
    return FLEECE_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def probe_live(spec: str) -> tuple[str, int]:
    """(normalized spec, virtual size) of a live disk, for ``server add``."""
    ls = LiveSpec.parse(spec)
    with QmpSession(ls.qmp) as q:
        node = q.nodes().get(ls.node)
        if node is None:
            raise SourceError(f"QEMU at {ls.qmp} has no block node {ls.node!r}",
                              hint="list them with the QMP command query-named-block-nodes")
        return str(ls), int(node["image"]["virtual-size"])


class LiveSource(DiskSource):
    """A live QEMU disk; every read sees the frozen view of :meth:`freeze`."""

    def __init__(self, spec: LiveSpec, *, key: str, fleece_dir: Path) -> None:
        super().__init__()
        self.spec = spec
        self.description = str(spec)
        self.name = fleece_name(key)
        self._fleece_dir = spec.fleece_dir or fleece_dir
        self.overlay = self._fleece_dir / f"{self.name}.qcow2"
        self.qmp: QmpSession | None = QmpSession(spec.qmp)
        self.frozen = False
        self.consistency = "crash"  # nothing is read but from the frozen view (freeze on first use)
        self.exported: list[str] = []
        self._reader: Any = None  # the NbdSource reading the export
        self._dirty_handle: Any = None
        self._started_nbd: Path | None = None
        try:
            nodes = self.qmp.nodes()
            node = nodes.get(spec.node)
            listed = (node or {}).get("dirty-bitmaps") or []
            self.bitmaps: dict[str, dict[str, Any]] = {b["name"]: b for b in listed if "name" in b}
            if node is None:
                raise SourceError(f"QEMU at {spec.qmp} has no block node {spec.node!r}",
                                  hint="the disk was removed or renamed; fix the server's disk or re-add it")
            self.size = int(node["image"]["virtual-size"])
            self.driver = str(node["drv"])
            self.warnings.extend(cleanup_leftovers(self.qmp, self.name, self.overlay, nodes=nodes))
        except BaseException:
            self.qmp.close()
            raise

    # -- freezing -------------------------------------------------------------------------------

    def freeze(self, *, add: str | None = None, disable: tuple[str, ...] = (), persistent: bool = True) -> None:
        """Take the point-in-time view: one transaction that adds bitmap ``add`` (enabled), disables
        ``disable`` and starts fleecing; then export the view with the disabled bitmaps."""
        if self.frozen:
            raise SourceError(f"{self.description} is already frozen")
        q = self._monitor()
        name, node = self.name, self.spec.node
        self._fleece_dir.mkdir(parents=True, exist_ok=True)
        self.check_space()
        new_overlay(self.overlay, self.size)
        try:
            q.run("blockdev-add", driver="qcow2", **{"node-name": name}, backing=node,
                  file={"driver": "file", "filename": str(self.overlay)})
            actions: list[dict[str, Any]] = []
            if add is not None:
                actions.append({"type": "block-dirty-bitmap-add",
                                "data": {"node": node, "name": add, "persistent": persistent}})
            actions += [{"type": "block-dirty-bitmap-disable", "data": {"node": node, "name": b}} for b in disable]
            actions.append({"type": "blockdev-backup",
                            "data": {"device": node, "target": name, "sync": "none", "job-id": name}})
            q.run("transaction", actions=actions)
            self.frozen = True
            sock = self._nbd_socket(q)
            q.run("block-export-add", type="nbd", id=name, **{"node-name": name}, writable=False,
                  bitmaps=list(disable))
            self.exported = list(disable)
            self._connect(sock)
        except BaseException:
            self.warnings.extend(self._teardown())
            raise

    def _nbd_socket(self, q: QmpSession) -> Path:
        if self.spec.nbd is not None:
            return self.spec.nbd
        sock = self._fleece_dir / f"{self.name}.nbd"
        if sock.exists():  # a godwit that died left its NBD server running in QEMU: ours to stop
            with contextlib.suppress(QmpError):
                q.run("nbd-server-stop")
            sock.unlink(missing_ok=True)
        try:
            q.run("nbd-server-start", addr={"type": "unix", "data": {"path": str(sock)}})  # the legacy form
        except QmpError as exc:
            raise SourceError(f"{self.description}: cannot start an NBD server in QEMU ({exc.message})",
                              hint="QEMU runs one NBD server at most: add &nbd=/path/to/its.sock "
                                   "to the disk's spec") from None
        self._started_nbd = sock
        return sock

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
        if self.qmp is None:
            raise SourceError(f"{self.description} is closed")
        return self.qmp

    # -- reading --------------------------------------------------------------------------------

    def read_into(self, offset: int, buf: memoryview) -> None:
        if not self.frozen:
            self.freeze()
        self.check_space()
        self._reader.read_into(offset, buf)

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

    def _teardown(self) -> list[str]:
        warnings: list[str] = []
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._dirty_handle is not None:
            with contextlib.suppress(Exception):
                self._dirty_handle.shutdown()
            self._dirty_handle = None
        if self.qmp is not None:
            try:
                warnings += cleanup_leftovers(self.qmp, self.name, self.overlay, quiet=True)
            except GodwitError as exc:  # QEMU gone or refusing: the next open cleans up; keep the cycle's error
                warnings.append(f"{self.description}: fleecing teardown failed ({exc.message}); "
                                "the next cycle or `godwit sources sweep` removes what is left")
            if self._started_nbd is not None:
                with contextlib.suppress(SourceError):
                    self.qmp.run("nbd-server-stop")
                with contextlib.suppress(FileNotFoundError):
                    self._started_nbd.unlink()
                self._started_nbd = None
        self.frozen = False
        self.exported = []
        return warnings

    def close(self) -> None:
        if self.qmp is None:
            return
        try:
            self.warnings.extend(self._teardown())
        finally:
            self.qmp.close()
            self.qmp = None


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
    # interrupted one left.
    key = (temp_tag or str(ls)).rsplit("-c", 1)[0] if temp_tag else str(ls)
    return LiveSource(ls, key=key, fleece_dir=snapshot_dir or Path(os.environ.get("TMPDIR", "/tmp")))
