"""A planned migration of a server an appliance replicates: the service asks the appliance for the
final cycle (it cannot read the disks itself), waits for its report, applies and exports it.
Against a real `godwit serve`, the appliance driven round by round in this process."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.appliance.site import API, appliance, appliance_project, cycles, queue, registration_key
from tests.helpers import scribble
from tests.service.harness import create_token, finish, make_project, running


@contextlib.contextmanager
def _replicated(tmp_path: Path) -> Iterator[tuple[Any, Any, str, Path]]:
    """A service and appliance ``site-a`` replicating ``web`` (tmp_path/web.raw), its first cycle
    reported: (service, appliance, operator token, source disk)."""
    svc_project = make_project(tmp_path, None, servers=("web",))
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    site = appliance_project(tmp_path, svc_project, "site-a")
    with running(svc_project, "--mover-interval", "0") as svc, appliance(site, svc, key, ("web",)) as a:
        queue(svc, operator, "site-a", "web")
        assert a.round().reported == [("web", 1)]
        yield svc, a, operator, tmp_path / "web.raw"


def _follow(c: Any, r: Any, a: Any) -> list[tuple[str, int]]:
    """Drive the appliance round by round until the operation ``r`` ends; the cycles it ran."""
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    ran: list[tuple[str, int]] = []
    while c.get(r.headers["location"]).json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the planned migration did not end"
        ran += a.round().cycles
        time.sleep(0.1)
    return ran


def test_the_final_cycle_runs_on_the_appliance(tmp_path: Path) -> None:
    with _replicated(tmp_path) as (svc, a, operator, source):
        # Given up in time: the operation fails, the command is withdrawn, replication goes on.
        with svc.client(operator) as c:
            r = c.post(f"{API}/migrations/web/planned", json={"final_cycle_timeout": 0.5})
            op = finish(c, r)
            assert op["state"] == "failed" and "did not report the final cycle" in str(op["error"]), op
            commands = c.get(f"{API}/appliances/site-a/commands").json()
            assert commands[0]["kind"] == "final" and commands[0]["result"].startswith("cancelled"), commands
            assert c.get(f"{API}/servers/web").json()["state"] == "replicating"
        assert a.round().cycles == []  # the withdrawn command is not run (the interval is not due)

        scribble(source, seed=7)  # the server's last writes before it stops
        with svc.client(operator) as c:
            # Every round would run a scheduled cycle now; during the migration only the final runs.
            s = c.put(f"{API}/appliances/site-a/settings", json={"interval_seconds": 0.01})
            assert s.status_code == 200, s.text
            r = c.post(f"{API}/migrations/web/planned", json={"format": "raw", "folder": "cutover"})
            ran = _follow(c, r, a)
            op = finish(c, r)
            assert op["state"] == "succeeded", op
        assert ran == [("web", 2)], ran  # the final cycle, and no scheduled one beside it
        assert a.project.db.cycle(a.project.db.server("web").id, 2).kind == "final"
        result = op["result"]
        assert isinstance(result, dict) and result["recovery_point"] == 2
        exported = Path(result["files"][0])
        assert exported.read_bytes() == source.read_bytes()
        assert cycles(svc, operator, "web") == [(1, "applied"), (2, "applied")]
        with svc.client(operator) as c:
            assert c.get(f"{API}/servers/web").json()["state"] == "migrated"

        # Migrated: the appliance is told to stop, and runs nothing more of it.
        scribble(source, seed=8)
        r2 = a.round()
        assert r2.cycles == [] and a.project.db.server("web").state == "stopped", r2


def test_a_final_cycle_that_fails_on_the_appliance_fails_the_migration(tmp_path: Path) -> None:
    with _replicated(tmp_path) as (svc, a, operator, source):
        source.rename(tmp_path / "web.raw.away")  # the appliance cannot read the disk any more
        with svc.client(operator) as c:
            r = c.post(f"{API}/migrations/web/planned", json={"final_cycle_timeout": 60})
            _follow(c, r, a)
            op = finish(c, r)
            assert op["state"] == "failed" and "did not run the final cycle" in str(op["error"]), op
            assert c.get(f"{API}/servers/web").json()["state"] == "replicating"  # replication goes on
        assert cycles(svc, operator, "web") == [(1, "committed")]
