"""What the service refuses from appliances: a resend is taken once, a report out of the chain's
order is a 409, and an appliance's token sees and touches nothing of another appliance's."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from godwit.appliance.link import TokenRefused
from godwit.appliance.wire import cycle_report
from godwit.engine import lifecycle
from godwit.project.project import open_project
from godwit.service.protocol_models import CycleReport
from tests.appliance.site import API, appliance, appliance_project, cycles, queue, registration_key
from tests.helpers import scribble
from tests.service.harness import create_token, make_project, running


def _token(folder: Path) -> str:
    return str(json.loads((folder / "state" / "appliance" / "token").read_text())["secret"])


def test_resends_are_taken_once_and_gaps_are_refused(tmp_path: Path) -> None:
    svc_project = make_project(tmp_path, None, servers=("web", "db"))
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    site_a = appliance_project(tmp_path, svc_project, "site-a")
    site_b = appliance_project(tmp_path, svc_project, "site-b")
    with running(svc_project, "--mover-interval", "0") as svc, appliance(site_a, svc, key, ("web",)) as a, \
            appliance(site_b, svc, key, ("db",)) as b:
        queue(svc, operator, "site-a", "web")
        assert a.round().reported == [("web", 1)]
        p = a.project
        web = p.db.server("web")
        again = cycle_report(p, web, p.db.cycle(web.id, 1))
        with svc.client(_token(site_a)) as c:
            r = c.post(f"{API}/appliance/cycles", json=again)
            assert r.status_code == 200 and r.json() == {"server": "web", "number": 1, "duplicate": True}, r.text

            # Two more cycles committed here but not yet reported: 3 before 2 is a gap.
            for seed in (2, 3):
                scribble(tmp_path / "web.raw", seed=seed)
                lifecycle.cycle(p, "web")
            two, three = (cycle_report(p, web, p.db.cycle(web.id, n)) for n in (2, 3))
            r = c.post(f"{API}/appliance/cycles", json=three)
            assert r.status_code == 409 and "expects a cycle built on cycle 1" in r.json()["error"], r.text
            r = c.post(f"{API}/appliance/cycles", json=dict(two, bytes_sent=two["bytes_sent"] + 1))
            assert r.status_code == 200, r.text  # the service checks the chain and the objects, not figures
            r = c.post(f"{API}/appliance/cycles", json=two)  # the same number, other content
            assert r.status_code == 409 and "other content" in r.json()["error"], r.text
            r = c.post(f"{API}/appliance/cycles", json=dict(three, number=2, parent=1))
            assert r.status_code == 409, r.text
            r = c.post(f"{API}/appliance/cycles", json=three)
            assert r.status_code == 200 and r.json()["duplicate"] is False, r.text
            r = c.post(f"{API}/appliance/cycles", json=two)  # behind the chain now
            assert r.status_code == 409, r.text
        assert cycles(svc, operator, "web") == [(1, "committed"), (2, "committed"), (3, "committed")]
        with svc.client(operator) as c:  # the service runs no cycle of an appliance's server: at once
            answers = (c.post(f"{API}/replications/web/cycles"),
                       c.put(f"{API}/replications/web", json={"enabled": True}))
            for r in answers:
                assert r.status_code == 409 and "replicated by appliance site-a" in r.json()["error"], r.text
        assert CycleReport.model_validate_json(json.dumps(two)).number == 2  # the appliance's JSON is the API's

        # A replacement appliance (a new folder, a new state) numbers above the service's cycles and
        # starts with a full cycle, which needs nothing before it.
        site_c = appliance_project(tmp_path, svc_project, "site-c")
        with appliance(site_c, svc, key, ("web",)) as c3:
            r = c3.round()  # web replicates already: its first cycle is due at once
            assert r.cycles == [("web", 4)] and r.reported == [("web", 4)], r
            assert c3.project.db.cycle(c3.project.db.server("web").id, 4).kind == "initial"

        # site-b's server, and its commands, do not exist for site-a's token.
        b.round()
        cmd = queue(svc, operator, "site-b", "db", "stop")
        with svc.client(_token(site_a)) as c:
            desired = c.get(f"{API}/appliance/desired").json()
            assert [s["name"] for s in desired["servers"]] == ["web"] and desired["commands"] == []
            for server in ("db", "nope"):
                r = c.post(f"{API}/appliance/cycles", json=dict(three, server=server, number=1, parent=None))
                assert r.status_code == 404 and r.json() == {
                    "error": f"no server named {server!r}", "hint": "`godwit server list` shows the servers"}
                r = c.get(f"{API}/servers/{server}")
                assert r.status_code == 404
                r = c.post(f"{API}/appliance/progress", json={"server": server})
                assert r.status_code == 404
            for cid in (cmd["id"], cmd["id"] + 1000):
                r = c.post(f"{API}/appliance/commands/{cid}/done", json={"result": "x"})
                assert r.status_code == 404 and r.json()["error"] == f"no command with id {cid}"
            # An appliance cannot act as an operator, nor read others' appliances.
            assert c.post(f"{API}/appliances/site-b/commands", json={"server": "db", "kind": "cycle"}
                          ).status_code == 403
            assert c.get(f"{API}/appliances/site-b/commands").status_code == 403
        with svc.client(operator) as c:
            # Nor can people use the appliance's side; and a command names that appliance's server.
            assert c.get(f"{API}/appliance/desired").status_code == 403
            assert c.post(f"{API}/appliances/site-a/commands", json={"server": "db", "kind": "cycle"}
                          ).status_code == 404
        with httpx.Client(base_url=svc.url) as c:
            assert c.get(f"{API}/appliance/desired").status_code == 401

        # The appliance's warnings and errors reach the service once each, in order.
        a.project.db.event("error", "disk on fire", server="web")
        a.project.db.event("warning", "smoke", server="db")  # not its server: kept, without the name
        a.round()
        a.round()
        with svc.client(operator) as c:
            seen = [(e["message"], e["server"]) for e in c.get(f"{API}/events", params={"limit": 200}).json()
                    if e["message"] in ("appliance site-a: disk on fire", "appliance site-a: smoke")]
        assert seen == [("appliance site-a: smoke", None), ("appliance site-a: disk on fire", "web")]

        # The interval and throttle an operator sets are what the appliance runs with.
        with svc.client(operator) as c:
            r = c.put(f"{API}/appliances/site-a/settings", json={"interval_seconds": 600, "max_mbps": 80})
            assert r.status_code == 200 and r.json() == {"interval_seconds": 600.0, "max_mbps": 80.0}
            assert c.put(f"{API}/appliances/site-a/settings", json={"max_mbps": 0}).status_code == 422
        a.round()
        assert a.desired is not None and a.desired.interval_seconds == 600 and a.project.max_mbps_override == 80

        # A revoked token stops the appliance with the way out; its file is left for a person.
        admin = create_token(svc_project, "admin", "admin")
        with svc.client(admin) as c:
            tid = next(t["id"] for t in c.get(f"{API}/tokens").json() if t["appliance"] == "site-b")
            assert c.delete(f"{API}/tokens/{tid}").status_code == 200
        with pytest.raises(TokenRefused, match="refused the appliance's token"):
            b.round()
        assert (site_b / "state" / "appliance" / "token").exists()

    svc = open_project(svc_project)
    try:
        assert svc.db.server("db").state == "stopped"  # the stop command stopped it on the service
    finally:
        svc.close()
