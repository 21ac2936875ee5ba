"""Committing a cycle: block-hash files, then the manifest (a conditional create), then the state.

The hash files are written by the pipeline as it goes (``<cycle>.tmp``) and published here; once
the state says committed, hash files that no resume, verify or resync can need are deleted.

A cycle without a manifest does not exist. If the process dies between the manifest's put and
the state update, the next run finds the manifest and only finishes the bookkeeping.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from godwit.engine.cycle.work import DiskWork
from godwit.errors import CorruptObjectError, ObjectExistsError, ObjectMissingError
from godwit.format import manifest
from godwit.format.keys import manifest_key
from godwit.state import cycles, hashstore
from godwit.state.db import Cycle, Server, StateDB
from godwit.stores.base import ObjectStore

log = logging.getLogger("godwit.cycle")


def stored_manifest(store: ObjectStore, server: Server, cyc: Cycle) -> manifest.Manifest | None:
    """The manifest of an open cycle when its put landed before the process died, else None."""
    key = manifest_key(server.uid, cyc.number)
    try:
        data = store.get(key)
    except ObjectMissingError:
        return None
    m = manifest.decode(data, key)
    if m.server_uid != server.uid or m.cycle != cyc.number:
        raise CorruptObjectError(f"{key} belongs to another server or cycle")
    return m


def build_manifest(server: Server, cyc: Cycle, works: list[DiskWork], *, parent: int | None, consistency: str,
                   store_id: str, bs: int, algorithm: str) -> manifest.Manifest:
    return manifest.Manifest(
        store_id=store_id, server_uid=server.uid, server_name=server.name, cycle=cyc.number,
        parent=parent, created=datetime.now(UTC).isoformat(timespec="seconds"), consistency=consistency,
        block_size=bs, hash=algorithm,
        disks=[manifest.DiskManifest(w.disk.idx, w.size, w.previous_size, w.extents, merge_runs(w.zeros))
               for w in works])


def write_hashes(hashes_dir: Path, works: list[DiskWork], cycle: int, algorithm: str, bs: int) -> None:
    """Publish every disk's hash file, which the pipeline wrote (and fsynced) window by window."""
    for w in works:
        if w.new is None or w.new.path != hashstore.path(hashes_dir, w.disk.uid, cycle):
            raise ValueError(f"disk {w.disk.idx}: the pipeline wrote no block-hash file for cycle {cycle}")
        w.new.publish()


def put_manifest(store: ObjectStore, server: Server, m: manifest.Manifest) -> str:
    """Store the manifest with a conditional create; returns its key."""
    key = manifest_key(server.uid, m.cycle)
    manifest.validate(m, key)  # never commit what the mover would refuse
    body = m.encode()
    try:
        store.put(key, body, overwrite=False)
    except ObjectExistsError:
        # A retried create whose first attempt landed finds our own manifest: that is success.
        if store.get(key) == body:
            log.info("%s cycle %d: manifest already stored by an earlier attempt", server.name, m.cycle)
        else:
            raise ObjectExistsError(f"cycle {m.cycle} of server {server.name} already has a manifest "
                                    "in the cache store that this appliance did not write",
                                    hint="two appliances may be replicating the same server into one "
                                         "store; stop one") from None
    return key


def disk_stats(works: list[DiskWork]) -> list[cycles.CycleDiskStats]:
    return [cycles.CycleDiskStats(w.disk.id, w.size, w.bytes_read, w.bytes_changed, w.bytes_sent, len(w.extents))
            for w in works]


def record_disks(db: StateDB, cyc: Cycle, works: list[DiskWork]) -> None:
    cycles.record_disk_stats(db, cyc.id, disk_stats(works))


def mark_committed(db: StateDB, hashes_dir: Path, server: Server, cyc: Cycle, m: manifest.Manifest,
                   stats: dict[str, float | int], works: list[DiskWork] | None = None) -> None:
    """The state says committed; with ``works``, the disks' figures are recorded in the same
    transaction (as is the event)."""
    key = manifest_key(server.uid, cyc.number)
    cycles.mark_committed(db, cyc.id, server.id, manifest_key=key, consistency=m.consistency,
                          disk_sizes={d.index: d.size for d in m.disks}, stats=stats,
                          disk_stats=disk_stats(works) if works is not None else None,
                          event=(server.name, cyc.number,
                                 f"cycle {cyc.number} committed ({m.consistency} consistency)"))
    # Cycles first, then points: a cycle the mover applies in between is in one list or the other.
    keep = {c.number for c in db.cycles(server.id, ("committed",))}
    keep |= {rp.number for rp in db.recovery_points(server.id)}
    for uid in [w.disk.uid for w in works] if works is not None else [d.uid for d in db.disks(server.id)]:
        hashstore.clear_forced(hashes_dir, uid)  # a resync's forced ranges are in this cycle now
        hashstore.retain(hashes_dir, uid, cyc.number, keep)
    log.info("%s cycle %d committed: %s", server.name, cyc.number, key)


def merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(runs):
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n)
        else:
            out.append((off, n))
    return out
