"""The final cycle of a planned migration, when an appliance replicates the server.

The service cannot read such a server's disks (and holds its cycle lock for the appliance), so it
asks the appliance: a ``final`` command. While the planned migration is queued or running, the
desired state marks the server ``final`` and the appliance runs no scheduled cycle of it, so the
final cycle stays the last one. The service waits until the command is done and the cycle is
reported (it then is a committed cycle here like any other), and the migration applies and
exports it.
"""

from __future__ import annotations

import time

from godwit.errors import ConflictError, MigrationError
from godwit.project.project import Project
from godwit.state.appliance_protocol import ApplianceProtocol
from godwit.state.appliances import Appliances

#: Seconds between two looks at the state while waiting for the appliance.
POLL = 0.25


def owner_of(project: Project, server: str) -> str | None:
    """The appliance that replicates ``server``, if one does."""
    with project.db.unit() as u:
        return next((a.name for a in Appliances(u.connection).all() if server in a.servers), None)


def ask_final_cycle(project: Project, appliance: str, server: str, *, timeout: float) -> int:
    """Queue the ``final`` command and wait for its reported cycle; its number."""
    with project.db.unit() as u:
        a = Appliances(u.connection).find(appliance)
        if a is None or server not in a.servers:
            raise MigrationError(f"appliance {appliance} no longer replicates server {server}")
        s = u.servers.get(server)
        if s.state not in ("replicating", "paused"):  # what planned_migration refuses: before asking
            raise ConflictError(f"server {server} is {s.state}, not replicating",
                                hint=f"queue a cycle for appliance {appliance} first")
        proto = ApplianceProtocol(u.connection)
        before = proto.last_number(s.id) or 0
        cmd = proto.add_command(a.id, s.id, "final")
        u.events.add("info", f"planned migration: final cycle asked of appliance {appliance}", server=server)
    deadline = time.monotonic() + timeout
    while True:
        with project.db.unit() as u:
            proto = ApplianceProtocol(u.connection)
            done = proto.command(cmd.id)
            number = proto.final_cycle_after(s.id, before)
            last_seen = Appliances(u.connection).by_id(a.id).last_seen
        if done.done is not None and not (done.result or "").startswith("final cycle"):
            raise MigrationError(f"appliance {appliance} did not run the final cycle of {server}: {done.result}",
                                 hint="replication goes on; fix what it says and start the migration again")
        if number is not None:
            return number
        if time.monotonic() > deadline:
            with project.db.unit() as u:  # a late appliance must not run it after all
                ApplianceProtocol(u.connection).finish_command(a.id, cmd.id, "cancelled: the migration gave up")
            seen = f"{time.time() - last_seen:.0f} s ago" if last_seen else "never"
            raise MigrationError(f"appliance {appliance} did not report the final cycle of {server} in "
                                 f"{timeout:.0f} s (its last contact: {seen})",
                                 hint="check that `godwit appliance run` runs and reaches the service; "
                                      "replication goes on")
        time.sleep(POLL)
