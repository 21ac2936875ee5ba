"""The bitmap tracker: QEMU's dirty bitmaps say which clusters the guest wrote since a cycle.

Bitmaps on the disk's node, named by what they track (the names are all the state there is, so
a godwit that died leaves nothing ambiguous):

- ``godwit-c<N>``: every write since the point-in-time view of committed cycle N.
- ``godwit-next-b<N>-<token>``: every write since the view of a cycle (in flight, failed or
  killed) whose base is N. There may be several: each attempt adds one.

A cycle with base N freezes (one QMP transaction, see ``sources.live``): add a new
``godwit-next-b<N>-…``, disable ``godwit-c<N>``, start fleecing. The first ``regions`` of a server's
cycle plans this for every disk behind the same QMP socket (recovering each one's bitmaps first),
so that one transaction freezes them all at one instant. It reads the dirty extents of
``godwit-c<N>`` from the frozen view, split by ``base:allocation`` into CHANGED and ZERO; the
rest is UNCHANGED.

- ``committed(C)``: one transaction adds ``godwit-c<C>``, merges every ``next`` bitmap into it,
  and removes them and every older ``godwit-c*``.
- ``failed``: one transaction merges every ``next`` bitmap into ``godwit-c<N>`` and re-enables
  it. The ``next`` bitmaps are *kept* until a commit: a resumed cycle reuses journaled packs read
  from the failed attempt's view, and a write made after that view to such a block is known only
  to that attempt's ``next`` bitmap; merged into ``godwit-c<C>`` at commit, the next cycle reads it.
- Killed in between: the next ``regions`` does what ``failed`` would have (``next`` bitmaps of
  the same base; without a base or with tracking lost they are just kept), or what ``committed``
  would have (``next`` bitmaps of an older base while
  ``godwit-c<base>`` is missing: they were created at or before the base's view, and never
  disabled, so they hold a superset of the changes since).
- Tracking lost: ``godwit-c<base>`` missing (a QEMU restart loses bitmaps added over QMP; someone
  deleted it; the image was replaced) or ``inconsistent`` (QEMU was killed): a warning (the cycle
  records it as an event) and a full ``scan`` of the disk, never a cycle that misses changes.

A raw image gets bitmaps that are not persistent (QEMU stores bitmaps only in qcow2): they work
while QEMU runs, and its restart means a full resync. A disk that is not a live QEMU disk is
tracked as ``scan`` would.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from godwit.errors import SourceError
from godwit.sources import live_group
from godwit.sources.base import DiskSource
from godwit.sources.live import LiveSource
from godwit.sources.live_spec import LiveSpec, is_live_spec
from godwit.sources.qmp import QmpError, QmpSession
from godwit.trackers.base import ChangeTracker, Kind, Region, TrackedDisk
from godwit.trackers.scan import ScanTracker

log = logging.getLogger("godwit.tracker.bitmap")

PREFIX = "godwit-"
_COMMITTED = re.compile(r"godwit-c(\d+)$")
_NEXT = re.compile(r"godwit-next-b(\d+)-[0-9a-f]+$")


def committed_name(cycle: int) -> str:
    return f"godwit-c{cycle}"


def next_name(base: int | None) -> str:
    return f"godwit-next-b{base or 0}-{secrets.token_hex(4)}"


class BitmapTracker(ChangeTracker):
    name = "bitmap"

    def __init__(self) -> None:
        self._scan = ScanTracker()
        self._base: dict[str, int | None] = {}  # disk spec -> base of the cycle in flight
        self._planned: dict[str, tuple[int | None, bool]] = {}  # disk spec -> (base, tracking usable)
        # disk spec -> the godwit bitmaps (name -> persistent) once the freeze ran: the commit's
        # transaction is made from it without a query (one QEMU round trip less at the commit)
        self._after: dict[str, dict[str, bool]] = {}

    # -- regions --------------------------------------------------------------------------------

    def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]:
        if not isinstance(source, LiveSource):
            yield from self._scan.regions(disk, source, base)
            return
        if not source.frozen:
            # Every disk of this QEMU is planned now and frozen in the same transaction, so the
            # server's point in time is one instant (their regions are asked later, in order).
            for m in source.group.members:
                if not m.frozen and str(m.spec) not in self._planned:
                    self._plan(m, base)
            source.group.keep_session = True  # committed() reuses it: one connection per cycle
            source.freeze()
        planned, usable = self._planned.get(str(source.spec), (None, False))
        want = committed_name(base) if base is not None else None
        if usable and want is not None and planned == base and source.plan is not None \
                and want in source.plan.disable:
            yield from _regions(source, want)
        else:
            yield from self._scan.regions(disk, source, base)

    def _plan(self, source: LiveSource, base: int | None) -> None:
        """Recover the disk's bitmaps and say what its freeze does to them."""
        q = source.qmp
        assert q is not None
        key = str(source.spec)
        disk = TrackedDisk("", source.index, Path(key))
        after: dict[str, bool] = {}
        usable = self.recover(q, source.spec.node, source.bitmaps, base, disk, source.warnings, after=after)
        persistent = source.driver == "qcow2"
        if not persistent and base is None:
            source.warnings.append(f"disk {source.index} is a {source.driver} image: QEMU keeps dirty bitmaps "
                                   "only in qcow2, so tracking is lost when QEMU restarts (then godwit resyncs "
                                   "the whole disk)")
        want = committed_name(base) if base is not None and usable else None
        add = next_name(base)
        source.plan_freeze(add=add, disable=(want,) if want else (), persistent=persistent)
        self._base[key] = base
        self._planned[key] = (base, usable)
        self._after[key] = {**after, add: persistent}

    def recover(self, q: QmpSession, node: str, found: dict[str, dict[str, Any]], base: int | None,
                 disk: TrackedDisk, warnings: list[str], *, after: dict[str, bool] | None = None) -> bool:
        """Bring the node's godwit bitmaps (``found`` when the source opened) to one
        ``godwit-c<base>``; False if tracking was lost. ``after`` gets the godwit bitmaps left
        (name -> persistent)."""
        bitmaps = {n: b for n, b in found.items() if n.startswith(PREFIX)}
        actions: list[dict[str, Any]] = []
        lost = ""
        for n, b in list(bitmaps.items()):
            if b.get("inconsistent"):
                lost = lost or f"bitmap {n} is inconsistent (QEMU stopped uncleanly)"
                actions.append(_act("remove", node, n))
                del bitmaps[n]
        want = committed_name(base) if base is not None else None
        nexts = {n: int(m.group(1)) for n in bitmaps if (m := _NEXT.match(n))}
        # A consistent next bitmap stays until a commit whatever happens (see the docstring):
        # merged into godwit-c<C> then, it covers blocks a resumed cycle took from an older view.
        keep = set(nexts)
        added: dict[str, bool] = {}  # bitmaps this transaction adds -> persistent
        if want is not None and not lost:
            if want not in bitmaps:
                older = [n for n, b in nexts.items() if b < base]  # type: ignore[operator]
                if older:  # died between commit and telling us: those bitmaps cover the base's view
                    added[want] = bool(bitmaps[older[0]].get("persistent"))
                    actions.append(_act("add", node, want, persistent=added[want]))
                    actions += [_merge(node, want, n) for n in older]
                    keep.add(want)
                else:
                    lost = f"bitmap {want} is missing (QEMU restarted, it was deleted, or the disk was replaced)"
            else:
                keep.add(want)
                # Earlier attempts at this cycle: what they saw goes into what this one reads.
                actions += [_merge(node, want, n) for n in nexts]
                if not bitmaps[want].get("recording", True):
                    actions.append(_act("enable", node, want))
        for n in bitmaps:
            if n not in keep:
                actions.append(_act("remove", node, n))
        if actions:
            q.run("transaction", actions=actions)
        if after is not None:
            after.update({n: added[n] if n in added else bool(bitmaps[n].get("persistent")) for n in keep})
        if lost and base is not None:
            warnings.append(f"disk {disk.index}: change tracking was lost ({lost}); "
                            "this cycle reads the whole disk (a full scan resync)")
            log.warning("disk %s: %s; full resync", disk.index, lost)
        return not lost

    # -- commit and failure ------------------------------------------------------------------------

    def committed(self, disk: TrackedDisk, cycle: int) -> None:
        spec = _spec(disk)
        if spec is None:
            return
        self._base.pop(str(spec), None)
        self._planned.pop(str(spec), None)
        known = self._after.pop(str(spec), None)  # what this process's freeze left, if it froze
        new = committed_name(cycle)

        def move(q: QmpSession) -> None:
            if known is not None:
                # The bitmaps as the freeze left them (nobody else moves godwit's bitmaps while
                # the cycle runs): no query. If they changed after all, QEMU refuses the whole
                # transaction (it is atomic) and the bitmaps are asked for.
                with contextlib.suppress(QmpError):
                    _move(q, spec.node, new, known)
                    return
            _move(q, spec.node, new, {n: bool(b.get("persistent")) for n, b in q.bitmaps(spec.node).items()
                                      if n.startswith(PREFIX)})

        self._with_session(spec, move)

    def failed(self, disk: TrackedDisk, cycle: int) -> None:
        spec = _spec(disk)
        if spec is None:
            return
        self._planned.pop(str(spec), None)
        self._after.pop(str(spec), None)
        if str(spec) not in self._base:
            kept = live_group.take(spec.qmp)  # a session kept for us: no longer needed
            if kept is not None:
                kept.close()
            return
        base = self._base.pop(str(spec))

        def merge_back(q: QmpSession) -> None:
            if base is None:
                return  # a full read failed: the next one is full again; the next regions cleans up
            bitmaps = {n for n in q.bitmaps(spec.node) if n.startswith(PREFIX)}
            want = committed_name(base)
            if want not in bitmaps:
                return  # the next regions sees the loss and resyncs
            # The next bitmaps stay: a resumed cycle's journaled blocks need them (docstring).
            actions = [_merge(spec.node, want, n) for n in bitmaps if _NEXT.match(n)]
            actions.append(_act("enable", spec.node, want))
            q.run("transaction", actions=actions)

        self._with_session(spec, merge_back)

    def _with_session(self, spec: LiveSpec, work: Callable[[QmpSession], None]) -> None:
        """Run ``work`` on the session the cycle's disks left (else a new one); keep it for the
        next disk of the same QEMU still to be told, close it after the last."""
        q = live_group.take(spec.qmp)
        if q is not None:
            try:
                work(q)
            except SourceError as exc:
                if isinstance(exc, QmpError):
                    q.close()
                    raise
                q.close()  # a stale session (QEMU restarted): once more on a new one
                q = None
        if q is None:
            q = QmpSession(spec.qmp)
            try:
                work(q)
            except BaseException:
                q.close()
                raise
        if any(LiveSpec.parse(k).qmp == spec.qmp for k in self._base):
            live_group.park(q)
        else:
            q.close()


def _move(q: QmpSession, node: str, new: str, bitmaps: dict[str, bool]) -> None:
    """The commit's transaction: add ``new``, merge every ``next`` bitmap into it, remove the
    rest of ``bitmaps`` (the node's godwit bitmaps, name -> persistent)."""
    nexts = [n for n in bitmaps if _NEXT.match(n)]
    if not nexts:
        return  # told twice, or the cycle ran without bitmaps: nothing to move
    actions = []
    if new not in bitmaps:
        actions.append(_act("add", node, new, persistent=bitmaps[nexts[0]]))
    actions += [_merge(node, new, n) for n in nexts]
    actions += [_act("remove", node, n) for n in bitmaps if n != new]
    q.run("transaction", actions=actions)


def _spec(disk: TrackedDisk) -> LiveSpec | None:
    text = str(disk.path)
    return LiveSpec.parse(text) if is_live_spec(text) else None


def _act(what: str, node: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"type": f"block-dirty-bitmap-{what}", "data": {"node": node, "name": name, **extra}}


def _merge(node: str, target: str, source: str) -> dict[str, Any]:
    return {"type": "block-dirty-bitmap-merge", "data": {"node": node, "target": target, "bitmaps": [source]}}


def _regions(source: LiveSource, bitmap: str) -> Iterator[Region]:
    """Dirty runs are CHANGED, or ZERO where they read as zeros now; clean runs are UNCHANGED."""
    for r in source.dirty_runs(bitmap):
        kind = (Kind.ZERO if r.zero else Kind.CHANGED) if r.dirty else Kind.UNCHANGED
        yield Region(r.offset, r.length, kind)
