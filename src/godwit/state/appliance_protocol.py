"""The service's side of the appliance protocol: reported cycles, commands, progress, settings.

A cycle an appliance reports becomes a ``committed`` row of ``cycles`` (with its ``cycle_disks``),
exactly what a local cycle leaves behind, so the mover applies it unchanged. The report is taken
only in chain order: its number must be above every number the server has, and its parent must be
the server's latest live cycle (committed or applied), or none at all (a full cycle, such as a
replaced appliance's first, needs nothing before it: the mover applies it over any point). A
resend of the very same report (same digest) is a no-op; anything else under a taken number is a
conflict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from godwit.errors import ConflictError, NotFoundError
from godwit.state import schema as t
from godwit.state.models import fits_int64

COMMANDS = ("cycle", "stop", "resync", "final")  # final: a planned migration's (service/final_cycle.py)


@dataclass(frozen=True)
class ReportedDisk:
    index: int
    size: int
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    extents: int


@dataclass(frozen=True)
class ReportedCycle:
    number: int
    parent: int | None
    kind: str
    consistency: str
    manifest_key: str
    started: float
    committed: float
    stats: dict[str, float | int]  # bytes_read, bytes_changed, bytes_sent, packs, t_read … t_wall
    disks: tuple[ReportedDisk, ...]


@dataclass(frozen=True)
class Command:
    id: int
    server: str
    kind: str
    created: float
    done: float | None
    result: str | None


@dataclass(frozen=True)
class Progress:
    server: str
    cycle: int | None
    bytes_done: int
    bytes_total: int
    throughput_bps: float | None
    rpo_seconds: float | None
    error: str | None
    updated: float


@dataclass(frozen=True)
class Settings:
    interval_seconds: float | None
    max_mbps: float | None
    last_event: int


class ApplianceProtocol:
    """The protocol's tables (and the cycles it adds), on one unit of work's connection."""

    def __init__(self, c: Connection) -> None:
        self.c = c

    # -- cycles -----------------------------------------------------------------------------

    def last_number(self, server_id: int) -> int | None:
        """The highest cycle number the server has, in any state (a discarded number is not reused)."""
        n = self.c.execute(select(func.max(t.cycles.c.number)).where(t.cycles.c.server_id == server_id)).scalar()
        return int(n) if n is not None else None

    def live_parent(self, server_id: int) -> int | None:
        """The number the next cycle must build on: the latest committed or applied cycle."""
        n = self.c.execute(select(func.max(t.cycles.c.number)).where(
            t.cycles.c.server_id == server_id, t.cycles.c.state.in_(("committed", "applied")))).scalar()
        return int(n) if n is not None else None

    def latest_point(self, server_id: int) -> int | None:
        n = self.c.execute(select(func.max(t.recovery_points.c.number)).where(
            t.recovery_points.c.server_id == server_id, t.recovery_points.c.state == "live")).scalar()
        return int(n) if n is not None else None

    def accept_cycle(self, appliance_id: int, server_id: int, server: str, rep: ReportedCycle,
                     digest: str) -> bool:
        """Record the reported cycle as committed; False if this very report was taken before.

        ConflictError (409) for a number already taken by another report, a number at or below the
        server's last one, or a parent that is not the server's latest live cycle (a gap).
        """
        # A no-op UPDATE takes the server row's lock first, so two reports of one server queue up.
        self.c.execute(t.servers.update().where(t.servers.c.id == server_id).values(id=t.servers.c.id))
        prior = self.c.execute(select(t.appliance_cycles).where(
            t.appliance_cycles.c.server_id == server_id, t.appliance_cycles.c.number == rep.number)).first()
        if prior is not None:
            if prior.digest == digest and prior.appliance_id == appliance_id:
                return False
            raise ConflictError(f"cycle {rep.number} of {server} was already reported with other content",
                                hint="a cycle is reported once; this appliance's state differs from the service's")
        last = self.last_number(server_id)
        if last is not None and rep.number <= last:
            raise ConflictError(f"cycle {rep.number} of {server} is out of order: the service has cycle {last}",
                                hint="cycles are reported in order, each once")
        parent = self.live_parent(server_id)
        if rep.parent is not None and rep.parent != parent:  # None: a full cycle, needing nothing before it
            want = "an initial cycle" if parent is None else f"a cycle built on cycle {parent}"
            raise ConflictError(f"cycle {rep.number} of {server} builds on "
                                f"{'nothing' if rep.parent is None else f'cycle {rep.parent}'}; the service "
                                f"expects {want}", hint="report the cycles in between first")
        try:
            cid = self.c.execute(t.cycles.insert().values(
                server_id=server_id, number=rep.number, kind=rep.kind, state="committed",
                consistency=rep.consistency, started=rep.started, committed=rep.committed,
                manifest_key=rep.manifest_key, **rep.stats)).inserted_primary_key[0]  # type: ignore[index]
            disks = {r.idx: r.id for r in self.c.execute(
                select(t.disks.c.idx, t.disks.c.id).where(t.disks.c.server_id == server_id))}
            for d in rep.disks:
                if d.index not in disks:
                    raise ConflictError(f"cycle {rep.number} of {server} names disk {d.index}, which the "
                                        f"server does not have")
                self.c.execute(t.cycle_disks.insert().values(
                    cycle_id=cid, disk_id=disks[d.index], size=d.size, bytes_read=d.bytes_read,
                    bytes_changed=d.bytes_changed, bytes_sent=d.bytes_sent, extents=d.extents))
                self.c.execute(t.disks.update().where(t.disks.c.id == disks[d.index]).values(size=d.size))
            self.c.execute(t.appliance_cycles.insert().values(
                server_id=server_id, number=rep.number, appliance_id=appliance_id, digest=digest,
                received=time.time()))
        except IntegrityError:  # a concurrent report of the same number won; the unit rolls back
            raise ConflictError(f"cycle {rep.number} of {server} was reported twice at once") from None
        return True

    def reported_numbers(self, server_id: int) -> list[int]:
        rows = self.c.execute(select(t.appliance_cycles.c.number).where(t.appliance_cycles.c.server_id == server_id)
                              .order_by(t.appliance_cycles.c.number))
        return [int(r.number) for r in rows]

    # -- commands ---------------------------------------------------------------------------

    def _command(self, r: Any) -> Command:
        return Command(r.id, r.server, r.kind, r.created, r.done, r.result)

    def _commands(self) -> Any:
        return (select(t.appliance_commands, t.servers.c.name.label("server"))
                .select_from(t.appliance_commands.join(t.servers, t.appliance_commands.c.server_id == t.servers.c.id)))

    def add_command(self, appliance_id: int, server_id: int, kind: str) -> Command:
        if kind not in COMMANDS:
            raise ValueError(kind)
        cid = self.c.execute(t.appliance_commands.insert().values(
            appliance_id=appliance_id, server_id=server_id, kind=kind, created=time.time())
        ).inserted_primary_key[0]  # type: ignore[index]
        return self._command(self.c.execute(self._commands().where(t.appliance_commands.c.id == cid)).one())

    def commands(self, appliance_id: int, *, pending: bool = False, limit: int = 100) -> list[Command]:
        q = self._commands().where(t.appliance_commands.c.appliance_id == appliance_id)
        if pending:
            q = q.where(t.appliance_commands.c.done.is_(None))
        rows = self.c.execute(q.order_by(t.appliance_commands.c.id.desc() if not pending
                                         else t.appliance_commands.c.id).limit(limit))
        return [self._command(r) for r in rows]

    def command(self, command_id: int) -> Command:
        r = self.c.execute(self._commands().where(t.appliance_commands.c.id == command_id)).first()
        if r is None:
            raise NotFoundError(f"no command with id {command_id}")
        return self._command(r)

    def migrating(self, server: str) -> bool:
        """Whether a planned migration of ``server`` is queued or running (it waits for the final cycle)."""
        q = select(t.operations.c.id).where(t.operations.c.server == server, t.operations.c.kind == "planned",
                                            t.operations.c.state.in_(("queued", "running")))
        return self.c.execute(q.limit(1)).first() is not None

    def final_cycle_after(self, server_id: int, number: int) -> int | None:
        """The first reported ``final`` cycle numbered above ``number``, if one has come."""
        q = select(func.min(t.cycles.c.number)).where(
            t.cycles.c.server_id == server_id, t.cycles.c.number > number, t.cycles.c.kind == "final",
            t.cycles.c.state.in_(("committed", "applied")))
        n = self.c.execute(q).scalar()
        return int(n) if n is not None else None

    def finish_command(self, appliance_id: int, command_id: int, result: str) -> Command:
        """Mark one of this appliance's commands done (again: no change). Another's is unknown (404)."""
        q = self._commands().where(t.appliance_commands.c.id == command_id,
                                   t.appliance_commands.c.appliance_id == appliance_id)
        r = self.c.execute(q).first() if fits_int64(command_id) else None
        if r is None:
            raise NotFoundError(f"no command with id {command_id}")
        if r.done is None:
            self.c.execute(t.appliance_commands.update().where(t.appliance_commands.c.id == command_id)
                           .values(done=time.time(), result=result[:2000]))
            r = self.c.execute(q).one()
        return self._command(r)

    # -- progress and settings --------------------------------------------------------------

    def set_progress(self, appliance_id: int, server_id: int, p: Progress) -> None:
        key = (t.appliance_progress.c.appliance_id == appliance_id, t.appliance_progress.c.server_id == server_id)
        values = {"cycle": p.cycle, "bytes_done": p.bytes_done, "bytes_total": p.bytes_total,
                  "throughput_bps": p.throughput_bps, "rpo_seconds": p.rpo_seconds, "error": p.error,
                  "updated": p.updated}
        if self.c.execute(t.appliance_progress.update().where(*key).values(**values)).rowcount == 0:
            self.c.execute(t.appliance_progress.insert().values(appliance_id=appliance_id, server_id=server_id,
                                                                **values))

    def progress(self, appliance_id: int) -> list[Progress]:
        rows = self.c.execute(
            select(t.appliance_progress, t.servers.c.name.label("server"))
            .select_from(t.appliance_progress.join(t.servers, t.appliance_progress.c.server_id == t.servers.c.id))
            .where(t.appliance_progress.c.appliance_id == appliance_id).order_by(t.servers.c.name))
        return [Progress(r.server, r.cycle, r.bytes_done, r.bytes_total, r.throughput_bps, r.rpo_seconds, r.error,
                         r.updated) for r in rows]

    def settings(self, appliance_id: int) -> Settings:
        r = self.c.execute(select(t.appliance_settings).where(t.appliance_settings.c.appliance_id == appliance_id)
                           ).first()
        return Settings(r.interval_seconds, r.max_mbps, int(r.last_event)) if r else Settings(None, None, 0)

    def _set(self, appliance_id: int, **values: Any) -> None:
        q = t.appliance_settings.update().where(t.appliance_settings.c.appliance_id == appliance_id)
        if self.c.execute(q.values(**values)).rowcount == 0:
            self.c.execute(t.appliance_settings.insert().values(
                appliance_id=appliance_id, **{"last_event": 0, **values}))

    def set_settings(self, appliance_id: int, interval_seconds: float | None, max_mbps: float | None) -> Settings:
        self._set(appliance_id, interval_seconds=interval_seconds, max_mbps=max_mbps)
        return self.settings(appliance_id)

    def set_last_event(self, appliance_id: int, last_event: int) -> None:
        self._set(appliance_id, last_event=last_event)
