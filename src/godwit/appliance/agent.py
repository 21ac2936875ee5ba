"""The appliance's loop: pull the desired state, report in order, run the cycles that are due.

**Out only, and the service may be away.** Every round starts with a pull of the desired state
(which is also the heartbeat). If the service does not answer, the appliance keeps replicating
what it was last told (the plan is kept in ``state/appliance/desired.json``) and tries again next
round.

**Reports in order, each once.** The appliance keeps no queue of its own: its project's state
*is* the queue. Every pull says which cycle of each server the service has last taken
(``last_cycle``); the appliance then sends its locally committed cycles above that number, oldest
first, stopping at the first refusal. The service takes a report only as the next link of the
server's chain and answers a resend of the same report as already accepted, so a lost answer or
a crash between a commit and its report costs one harmless resend. Warnings and errors are
forwarded the same way, by event id above the service's ``last_event``.

**Nothing only here.** A cycle's manifest and packs are in the cache store when it commits; its
block hashes are put there before it is reported (``wire.cycle_report``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from godwit.appliance.link import Refused, ServiceDown, ServiceLink, TokenRefused
from godwit.appliance.progress import ProgressSender
from godwit.appliance.settings import ApplianceSettings, SavedToken, read_token, save_token
from godwit.appliance.wire import Desired, ServerPlan, cycle_report, parse_desired
from godwit.engine import lifecycle
from godwit.errors import ConfigError, GodwitError, UsageError
from godwit.project.project import Project
from godwit.state import hashstore
from godwit.state.appliances import events_after, mirror_server

log = logging.getLogger("godwit.appliance")
FORWARDED = ("warning", "error")


@dataclass
class RoundReport:
    online: bool = False
    reported: list[tuple[str, int]] = field(default_factory=list)
    cycles: list[tuple[str, int]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)


class Appliance:
    def __init__(self, project: Project, settings: ApplianceSettings, link: ServiceLink) -> None:
        self.project = project
        self.settings = settings
        self.link = link
        self.folder = project.state_dir / "appliance"
        self.desired: Desired | None = self._load_desired()
        self._last_try: dict[str, float] = {}
        self._blocked: str | None = None  # why no cycle may run (another cache store)

    # -- registration -------------------------------------------------------------------------

    def ensure_token(self) -> None:
        """Use the saved token, or register once with the key and save the token (mode 0600)."""
        saved = read_token(self.folder)
        if saved is not None and (saved.service != self.link.url or saved.name != self.settings.name):
            raise ConfigError(f"this appliance is registered as {saved.name} with {saved.service}",
                              hint=f"remove {self.folder / 'token'} to register anew")
        if saved is None:
            if not self.settings.key:
                raise UsageError("this appliance has no token yet: give the project's registration key",
                                 hint="--key, $GODWIT_REGISTRATION_KEY, or key_file in --config")
            body = self.link.register(self.settings.name, self.settings.key, list(self.settings.servers))
            saved = SavedToken(self.link.url, self.settings.name, str(body["secret"]))
            save_token(self.folder, saved)
            log.info("registered as %s for %s", self.settings.name, ", ".join(body["appliance"]["servers"]) or "-")
        self.link.use_token(saved.secret)

    # -- one round ----------------------------------------------------------------------------

    def round(self) -> RoundReport:
        rep = RoundReport()
        commands: list[Any] = []
        if self._sync(rep, pull=True):
            assert self.desired is not None
            commands = list(self.desired.commands)
        for cmd in commands:
            self._command(cmd, rep)
        for plan in self.desired.servers if self.desired else []:
            if plan.replicate and not plan.final and self._due(plan.name):
                self._cycle(plan.name, rep)
        if rep.online and rep.cycles:
            self._sync(rep, pull=False)  # report the new cycles now, not a poll later
        return rep

    def _sync(self, rep: RoundReport, *, pull: bool) -> bool:
        """Pull (and adopt) the desired state, then send what the service lacks; False if away."""
        try:
            if pull:
                self._adopt(parse_desired(self.link.desired()))
                rep.online = True
            self._flush(rep)
            return True
        except ServiceDown as exc:
            log.warning("%s", exc.message)
        except TokenRefused as exc:  # revoked, or another service at this URL: a person decides
            raise TokenRefused(exc.message, hint=f"if it was revoked, remove {self.folder / 'token'} and run "
                                                 "again with the registration key") from None
        except GodwitError as exc:  # e.g. the cache store is unreachable: the next round retries
            log.error("%s", exc.message)
            rep.errors.append(("", exc.message))
        return rep.online

    def run(self, stop: threading.Event, *, on_round: Callable[[RoundReport], None] | None = None) -> None:
        self.ensure_token()
        log.info("control plane: %s", self.link.path)
        while not stop.is_set():
            rep = self.round()
            if on_round is not None:
                on_round(rep)
            stop.wait(self.settings.poll_seconds)

    # -- the desired state --------------------------------------------------------------------

    def _adopt(self, d: Desired) -> None:
        """Mirror the service's plan into this appliance's state and settings."""
        store_id = self.project.store_id()
        was, self._blocked = self._blocked, None
        if d.store_id != store_id:
            self._blocked = (f"this appliance's cache store ({store_id}) is not the one the service's mover "
                             f"reads ({d.store_id}); no cycle runs until [cache] names the same store")
            if self._blocked != was:  # once, not every round
                self.project.db.event("error", self._blocked)
        now = time.time()
        with self.project.db.unit() as u:
            for plan in d.servers:
                sid = mirror_server(u.connection, plan.name, plan.uid,
                                    [(x.index, x.uid, x.spec, x.format, x.size) for x in plan.disks],
                                    floor=plan.last_cycle)
                server = u.servers.get(plan.name)
                if plan.replicate and server.state in ("added", "stopped"):
                    u.servers.set_state(sid, "replicating")
                elif not plan.replicate and server.state in ("replicating", "paused"):
                    u.servers.set_state(sid, "stopped")
                for c in u.cycles.for_server(sid, ("committed",)):  # the service applied them
                    if plan.latest_recovery_point is not None and c.number <= plan.latest_recovery_point:
                        u.cycles.mark_applied(c.id, now)
        for plan in d.servers:
            self._prune(plan)
        self.project.max_mbps_override = d.max_mbps
        self.desired = d
        self._save_desired(d)

    def _prune(self, plan: ServerPlan) -> None:
        """Block hashes below the service's latest recovery point are of no use here any more (a
        resync builds on that point; unreported cycles and the next cycle's base are above it)."""
        if plan.latest_recovery_point is None:
            return
        server = self.project.db.server(plan.name)
        for disk in self.project.db.disks(server.id):
            hashstore.prune(self.project.hashes_dir, disk.uid, plan.latest_recovery_point)

    # -- reports ------------------------------------------------------------------------------

    def _flush(self, rep: RoundReport) -> None:
        assert self.desired is not None
        for plan in self.desired.servers:
            self._flush_cycles(plan, rep)
        self._flush_events()

    def _flush_cycles(self, plan: ServerPlan, rep: RoundReport) -> None:
        server = self.project.db.server(plan.name)
        taken = plan.last_cycle or 0
        for c in self.project.db.cycles(server.id, ("committed", "applied")):
            if c.number <= taken:
                continue
            try:
                self.link.report_cycle(cycle_report(self.project, server, c))
            except Refused as exc:
                msg = f"the service refused the report of cycle {c.number}: {exc.message}"
                log.error("%s: %s", plan.name, msg)
                rep.errors.append((plan.name, msg))
                return  # the later ones build on it: they wait
            rep.reported.append((plan.name, c.number))
            taken = c.number
        # What the next pull will say; kept so that a report of this round is not sent twice.
        self._set_last(plan.name, taken)

    def _set_last(self, name: str, number: int) -> None:
        if self.desired is None:
            return
        servers = [p.model_copy(update={"last_cycle": number}) if p.name == name else p
                   for p in self.desired.servers]
        self.desired = self.desired.model_copy(update={"servers": servers})

    def _flush_events(self) -> None:
        assert self.desired is not None
        last = self.desired.last_event
        while True:
            with self.project.db.unit() as u:
                rows = events_after(u.connection, last, FORWARDED)
            if not rows:
                break
            known = {p.name for p in self.desired.servers}
            batch = [{"id": r["id"], "ts": r["ts"], "level": r["level"], "message": str(r["message"])[:2000],
                      "server": r["server"] if r["server"] in known else None, "cycle": r["cycle"]} for r in rows]
            last = self.link.report_events(batch)
        self.desired = self.desired.model_copy(update={"last_event": last})

    # -- commands and cycles ------------------------------------------------------------------

    def _command(self, cmd: Any, rep: RoundReport) -> None:
        try:
            if cmd.kind == "cycle":
                result = self._cycle(cmd.server, rep)
            elif cmd.kind == "final":  # a planned migration waits for it (and runs no other cycle)
                result = self._cycle(cmd.server, rep, kind="final")
            elif cmd.kind == "stop":
                lifecycle.stop(self.project, cmd.server)
                result = "stopped"
            elif cmd.kind == "resync":
                result = f"discarded cycles {lifecycle.resync(self.project, cmd.server) or 'none'}"
            else:
                result = f"unknown command {cmd.kind!r}"
        except GodwitError as exc:
            result = f"failed: {exc.message}"
        try:
            self.link.command_done(cmd.id, result)
        except GodwitError as exc:  # done again next round: each command is safe to repeat
            log.warning("command %d: %s", cmd.id, exc.message)

    def _due(self, name: str) -> bool:
        assert self.desired is not None
        return time.monotonic() - self._last_try.get(name, -1e18) >= self.desired.interval_seconds

    def _cycle(self, name: str, rep: RoundReport, kind: str = "delta") -> str:
        if self._blocked:
            rep.errors.append((name, self._blocked))
            return f"failed: {self._blocked}"
        self._last_try[name] = time.monotonic()
        server = self.project.db.server(name)
        if server.state not in ("replicating", "paused"):
            return "not replicating"
        done = [c for c in self.project.db.cycles(server.id, ("committed", "applied")) if c.committed]
        sender = ProgressSender(self._post_progress, name, (done[-1].number + 1) if done else 1,
                                rpo_since=done[-1].committed if done else None)
        try:
            with sender:
                res = lifecycle.cycle(self.project, name, progress=sender, kind=kind)
        except GodwitError as exc:
            self.project.db.event("error", exc.message, server=name)
            rep.errors.append((name, exc.message))
            self._post_progress(sender.snapshot(error=exc.message))
            return f"failed: {exc.message}"
        rep.cycles.append((name, res.number))
        self._collect(name)
        final = sender.snapshot()
        final.update(cycle=res.number, rpo_seconds=0.0)
        self._post_progress(final)
        return f"{'final ' if kind == 'final' else ''}cycle {res.number} committed"

    def _collect(self, name: str) -> None:
        """Delete packs that no cycle of this appliance names (put by a run that died before
        journaling them). The service leaves an appliance's servers alone here (service/owned.py):
        only the appliance knows which packs its running and unreported cycles need."""
        from godwit.engine.mover import collect_orphans

        server = self.project.db.server(name)
        try:
            collect_orphans(self.project, server)
        except GodwitError as exc:
            log.warning("%s: orphan packs not collected: %s", name, exc.message)

    def _post_progress(self, body: dict[str, Any]) -> None:
        with contextlib.suppress(GodwitError):  # a snapshot; the next one replaces it
            self.link.report_progress(body)

    # -- the plan kept across restarts ----------------------------------------------------------

    def _desired_path(self) -> Path:
        return self.folder / "desired.json"

    def _load_desired(self) -> Desired | None:
        try:
            return parse_desired(json.loads(self._desired_path().read_text(encoding="utf-8")))
        except (OSError, ValueError, GodwitError):
            return None

    def _save_desired(self, d: Desired) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".desired.new"
        tmp.write_text(d.model_dump_json(), encoding="utf-8")
        os.replace(tmp, self._desired_path())
