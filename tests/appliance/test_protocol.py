"""The appliance protocol end to end: a real `godwit serve`, an appliance talking to it over HTTP,
the shared cache store, and the service's own mover applying what the appliance reported."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from godwit.format.keys import hashes_key
from godwit.project.project import open_project
from godwit.state import hashstore
from tests.appliance.site import (
    API,
    appliance,
    appliance_project,
    cycles,
    points,
    queue,
    registration_key,
    replica_bytes,
)
from tests.helpers import scribble
from tests.service.harness import create_token, godwit, make_project, running, wait_for

pytestmark = pytest.mark.both_databases


def test_a_cycle_run_by_the_appliance_is_applied_by_the_service(tmp_path: Path, state_url: str | None) -> None:
    svc_project = make_project(tmp_path, state_url, servers=("web", "db"))
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    folder = appliance_project(tmp_path, svc_project)
    source = tmp_path / "web.raw"
    with running(svc_project, "--mover-interval", "0.2") as svc, appliance(folder, svc, key) as a:
        token = folder / "state" / "appliance" / "token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        assert key not in token.read_text()  # the key is traded, never kept

        first = a.round()  # registered, heartbeat, desired state: web is not replicating yet
        assert first.online and first.cycles == [] and first.errors == []
        with svc.client(operator) as c:
            listed = c.get(f"{API}/appliances").json()
        assert [(x["name"], x["servers"]) for x in listed] == [("site-a", ["web"])]
        assert listed[0]["last_seen"] is not None

        for n in (1, 2):
            if n == 2:
                scribble(source, seed=7)
            cmd = queue(svc, operator, "site-a", "web", "cycle")
            r = a.round()
            assert r.cycles == [("web", n)] and r.reported == [("web", n)], r
            wait_for(lambda n=n: points(svc, operator, "web")[-1:] == [n], what=f"recovery point {n}")
            assert replica_bytes(svc_project, "web") == source.read_bytes()
        assert cycles(svc, operator, "web") == [(1, "applied"), (2, "applied")]
        with svc.client(operator) as c:
            done = c.get(f"{API}/appliances/site-a/commands").json()
            progress = c.get(f"{API}/appliances/site-a/progress").json()
            events = c.get(f"{API}/events", params={"server": "web", "limit": 50}).json()
        assert done[0]["id"] == cmd["id"] and done[0]["result"] == "cycle 2 committed" and done[0]["done"]
        assert progress[0]["server"] == "web" and progress[0]["cycle"] == 2 and progress[0]["error"] is None
        assert any("cycle 2 committed by appliance site-a" in e["message"] for e in events)

    # What the mover needs was in the store or the service's state, not only on the appliance: the
    # block hashes were copied into the service's block-hash folder and left the store.
    p = open_project(svc_project)
    try:
        server = p.db.server("web")
        disk = p.db.disks(server.id)[0]
        assert hashstore.path(p.hashes_dir, disk.uid, 2).is_file()
        assert not p.store.exists(hashes_key(server.uid, disk.uid, 2))
        assert p.db.cycles(p.db.server("db").id) == []  # the appliance never touched db
    finally:
        p.close()


def test_the_appliance_keeps_cycling_while_the_service_is_down(tmp_path: Path, state_url: str | None) -> None:
    svc_project = make_project(tmp_path, state_url, servers=("web",))
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    folder = appliance_project(tmp_path, svc_project)
    source = tmp_path / "web.raw"
    with running(svc_project, "--mover-interval", "0") as svc:  # nothing applied before it stops
        port = svc.url.rsplit(":", 1)[1]
        with svc.client(operator) as c:
            r = c.put(f"{API}/appliances/site-a/settings", json={"interval_seconds": 0.01})
        assert r.status_code == 404  # not registered yet
        ctx = appliance(folder, svc, key)
        a = ctx.__enter__()
        with svc.client(operator) as c:
            r = c.put(f"{API}/appliances/site-a/settings", json={"interval_seconds": 0.01})
        assert r.status_code == 200 and r.json()["interval_seconds"] == 0.01
        queue(svc, operator, "site-a", "web", "cycle")
        first = a.round().reported  # the command's cycle, and one more if the interval passed meanwhile
        last = first[-1][1]
        assert first == [("web", n) for n in range(1, last + 1)]
    try:
        # The service is gone: the appliance goes on with what it was told, and reports nothing.
        offline = list(range(last + 1, last + 3))
        for n in offline:
            scribble(source, seed=n)
            r = a.round()
            assert not r.online and r.cycles == [("web", n)] and r.reported == [], r
        # A restart while the service is away: the plan kept in the appliance's folder still holds.
        offline.append(offline[-1] + 1)
        scribble(source, seed=offline[-1])
        with appliance(folder, svc, None) as restarted:
            r = restarted.round()
            assert not r.online and r.cycles == [("web", offline[-1])], r
        with running(svc_project, "--mover-interval", "0.2", "--port", port) as svc:
            # Its mover applies what it had and collects orphan packs, while the appliance's
            # unreported cycles' packs sit in the store: those must survive (service/owned.py).
            wait_for(lambda: points(svc, operator, "web")[-1:] == [last], what=f"recovery point {last}")
            r = a.round()  # the queued reports in order, then this round's cycle
            newest = offline[-1] + 1
            assert r.online and r.cycles == [("web", newest)], r
            assert r.reported == [("web", n) for n in [*offline, newest]], r
            wait_for(lambda: points(svc, operator, "web")[-1:] == [newest], what=f"recovery point {newest}")
            assert cycles(svc, operator, "web") == [(n, "applied") for n in range(1, newest + 1)]  # each once, in order
            assert replica_bytes(svc_project, "web") == source.read_bytes()
    finally:
        ctx.__exit__(None, None, None)


def test_a_resync_command_discards_unapplied_cycles_on_both_sides(tmp_path: Path, state_url: str | None) -> None:
    svc_project = make_project(tmp_path, state_url, servers=("web",))
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    folder = appliance_project(tmp_path, svc_project)
    source = tmp_path / "web.raw"
    with running(svc_project, "--mover-interval", "0") as svc, appliance(folder, svc, key) as a:
        queue(svc, operator, "site-a", "web")
        assert a.round().reported == [("web", 1)]
        godwit(svc_project, "mover", "run", "--once")  # another process's mover: it applies, the service's lock stays
        scribble(source, seed=11)
        queue(svc, operator, "site-a", "web")
        assert a.round().reported == [("web", 2)]  # committed on the service, not applied
        cmd = queue(svc, operator, "site-a", "web", "resync")
        a.round()
        with svc.client(operator) as c:
            done = {x["id"]: x for x in c.get(f"{API}/appliances/site-a/commands").json()}
        assert done[cmd["id"]]["result"] == "discarded cycles [2]", done
        assert cycles(svc, operator, "web") == [(1, "applied"), (2, "discarded")]
        scribble(source, seed=12)
        queue(svc, operator, "site-a", "web")
        assert a.round().reported == [("web", 3)]  # built on recovery point 1, resending cycle 2's ranges too
        godwit(svc_project, "mover", "run", "--once")
        assert cycles(svc, operator, "web") == [(1, "applied"), (2, "discarded"), (3, "applied")]
        assert replica_bytes(svc_project, "web") == source.read_bytes()
