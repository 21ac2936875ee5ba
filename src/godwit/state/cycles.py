"""The SQL a replication cycle needs: opening it, its resume journal, its settings, its commit.

Each function is one unit of work (one transaction) on a ``StateDB``; the cycle runner in
``godwit.engine.cycle`` calls nothing else that writes cycle rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from sqlalchemy import func, select

from godwit.state import schema as t
from godwit.state.db import Cycle, StateDB
from godwit.state.servers import CYCLE_SETTINGS_PREFIX


@dataclass(frozen=True)
class CycleSettings:
    """The settings that shape a cycle's blocks and digests; an open cycle resumes only with these."""
    block_size: int
    hash: str
    tracker: str

    def describe(self) -> str:
        return f"block size {self.block_size // 1024} KiB, hash {self.hash}, tracker {self.tracker}"


@dataclass(frozen=True)
class JournalRow:
    pack_id: str
    size: int
    payload: bytes


@dataclass(frozen=True)
class CycleDiskStats:
    disk_id: int
    size: int
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    extents: int


def _settings_key(cycle_id: int) -> str:
    return f"{CYCLE_SETTINGS_PREFIX}{cycle_id}"  # server removal deletes these by the same prefix


def open_cycle(db: StateDB, server_id: int, kind: str, settings: CycleSettings) -> Cycle:
    """Insert the server's next cycle, state ``open``, with the settings it is made with.

    Reading the next number and inserting the row is one transaction under the server row's lock,
    so two writers never take the same number.
    """
    with db.tx() as c:
        # A no-op UPDATE takes the server row's lock first (PostgreSQL: the row lock; SQLite: the write
        # lock), so a concurrent opener waits instead of reading the same last number.
        c.execute(t.servers.update().where(t.servers.c.id == server_id).values(id=t.servers.c.id))
        last = c.execute(select(func.max(t.cycles.c.number)).where(t.cycles.c.server_id == server_id)).scalar()
        number = int(last or 0) + 1
        res = c.execute(t.cycles.insert().values(server_id=server_id, number=number, kind=kind, state="open",
                                                 started=time.time()))
        assert res.inserted_primary_key is not None
        cycle_id = int(res.inserted_primary_key[0])
        # Settings of cycles that a resync discarded are of no use any more.
        gone = select(t.cycles.c.id).where(t.cycles.c.server_id == server_id, t.cycles.c.state == "discarded")
        c.execute(t.meta.delete().where(t.meta.c.key.in_(
            [_settings_key(r.id) for r in c.execute(gone)])))
        c.execute(t.meta.insert().values(key=_settings_key(cycle_id), value=json.dumps(
            {"block_size": settings.block_size, "hash": settings.hash, "tracker": settings.tracker})))
    return db.cycle(server_id, number)


def settings_of(db: StateDB, cycle_id: int) -> CycleSettings | None:
    """The settings an open cycle was started with; None for a cycle opened before they were kept."""
    with db.tx() as c:
        value = c.execute(select(t.meta.c.value).where(t.meta.c.key == _settings_key(cycle_id))).scalar()
    if value is None:
        return None
    try:
        doc = json.loads(value)
        return CycleSettings(int(doc["block_size"]), str(doc["hash"]), str(doc["tracker"]))
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: the journal's own shape is checked instead


def journal_rows(db: StateDB, cycle_id: int) -> list[JournalRow]:
    with db.tx() as c:
        rows = c.execute(select(t.journal).where(t.journal.c.cycle_id == cycle_id)).all()
    return [JournalRow(r.pack_id, r.size, r.payload) for r in rows]


def add_journal(db: StateDB, cycle_id: int, pack_id: str, size: int, payload: bytes) -> None:
    """Record a pack whose put returned (it is durable) as part of the open cycle."""
    with db.tx() as c:
        c.execute(t.journal.insert().values(cycle_id=cycle_id, pack_id=pack_id, size=size, payload=payload))


def discard_open(db: StateDB, cycle_id: int) -> list[str]:
    """Mark an open cycle ``discarded`` and drop its journal; returns the pack ids it held, for the
    caller to delete (a pack left behind is an orphan the mover collects)."""
    with db.tx() as c:
        packs = [r.pack_id for r in c.execute(select(t.journal.c.pack_id).where(t.journal.c.cycle_id == cycle_id))]
        c.execute(t.journal.delete().where(t.journal.c.cycle_id == cycle_id))
        c.execute(t.cycles.update().where(t.cycles.c.id == cycle_id, t.cycles.c.state == "open")
                  .values(state="discarded"))
        c.execute(t.meta.delete().where(t.meta.c.key == _settings_key(cycle_id)))
    return packs


def record_disk_stats(db: StateDB, cycle_id: int, rows: list[CycleDiskStats]) -> None:
    with db.tx() as c:
        for r in rows:
            c.execute(t.cycle_disks.insert().values(cycle_id=cycle_id, disk_id=r.disk_id, size=r.size,
                                                    bytes_read=r.bytes_read, bytes_changed=r.bytes_changed,
                                                    bytes_sent=r.bytes_sent, extents=r.extents))


def mark_committed(db: StateDB, cycle_id: int, server_id: int, *, manifest_key: str, consistency: str,
                   disk_sizes: dict[int, int], stats: dict[str, float | int],
                   disk_stats: list[CycleDiskStats] | None = None,
                   event: tuple[str, int, str] | None = None) -> None:
    """The cycle exists now (its manifest is stored): record it, the disks' sizes and figures, drop
    its journal, and add the ``(server, cycle, message)`` info event: one transaction (one fsync)."""
    with db.unit() as u:
        c = u.connection
        c.execute(t.cycles.update().where(t.cycles.c.id == cycle_id).values(
            state="committed", committed=time.time(), manifest_key=manifest_key, consistency=consistency,
            **stats))
        for idx, size in disk_sizes.items():
            c.execute(t.disks.update().where(t.disks.c.server_id == server_id, t.disks.c.idx == idx)
                      .values(size=size))
        for r in disk_stats or []:
            c.execute(t.cycle_disks.insert().values(cycle_id=cycle_id, disk_id=r.disk_id, size=r.size,
                                                    bytes_read=r.bytes_read, bytes_changed=r.bytes_changed,
                                                    bytes_sent=r.bytes_sent, extents=r.extents))
        c.execute(t.journal.delete().where(t.journal.c.cycle_id == cycle_id))
        c.execute(t.meta.delete().where(t.meta.c.key == _settings_key(cycle_id)))
        if event is not None:
            server, number, message = event
            u.events.add("info", message, server=server, cycle=number)
