"""Unregistering an appliance: its token stops working, the service lets go of its servers (which
it held for the appliance), their replication stops, and they can be removed or replicated by
another appliance. Against a real `godwit serve`, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.appliance.link import TokenRefused
from tests.appliance.site import API, appliance, appliance_project, cycles, queue, registration_key
from tests.service.harness import create_token, make_project, running


def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GODWIT_TOKEN", "GODWIT_SERVICE")}
    if token is not None:
        env["GODWIT_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "godwit", *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_unregister_frees_the_servers_and_refuses_the_token(tmp_path: Path) -> None:
    svc_project = make_project(tmp_path, None, servers=("web", "db"))
    key = registration_key(svc_project)
    operator = create_token(svc_project, "op", "operator")
    admin = create_token(svc_project, "admin", "admin")
    site_a = appliance_project(tmp_path, svc_project, "site-a")
    with running(svc_project, "--mover-interval", "0") as svc, appliance(site_a, svc, key, ("web",)) as a:
        queue(svc, operator, "site-a", "web")
        assert a.round().reported == [("web", 1)]
        assert cycles(svc, operator, "web") == [(1, "committed")]

        listed = cli("--service", svc.url, "appliance", "list", "--json", token=operator)
        assert listed.returncode == 0, listed.stderr
        assert [(v["name"], v["servers"]) for v in json.loads(listed.stdout)] == [("site-a", ["web"])]

        # While the service holds the server for the appliance, nothing else may take it.
        removed = cli("server", "remove", "web", "--force", "-p", str(svc_project))
        assert removed.returncode != 0
        local = cli("appliance", "unregister", "site-a", "--yes", "-p", str(svc_project))
        assert local.returncode != 0 and "--service" in local.stderr, local.stderr
        # Unregistering is an admin's: an operator is refused, and nothing changes.
        assert cli("--service", svc.url, "appliance", "unregister", "site-a", "--yes", token=operator).returncode != 0
        missing = cli("--service", svc.url, "appliance", "unregister", "site-z", "--yes", token=admin)
        assert missing.returncode != 0 and "site-z" in missing.stderr, missing.stderr

        done = cli("--service", svc.url, "appliance", "unregister", "site-a", "--yes", "--json", token=admin)
        assert done.returncode == 0, done.stderr
        body = json.loads(done.stdout)
        assert body["appliance"]["servers"] == ["web"] and body["stopped"] == ["web"]

        # The appliance's token is refused at once; it is no longer listed.
        with pytest.raises(TokenRefused):
            a.round()
        with svc.client(operator) as c:
            assert c.get(f"{API}/appliances").json() == []
            web = c.get(f"{API}/servers/web").json()
            assert web["state"] == "stopped", web
            events = [e["message"] for e in c.get(f"{API}/events").json()]
        assert any("appliance site-a unregistered" in m for m in events), events

        # The service let go of the server's lock: it can be removed now, with the service running.
        removed = cli("server", "remove", "web", "--force", "-p", str(svc_project))
        assert removed.returncode == 0, removed.stderr
        with svc.client(operator) as c:
            assert c.get(f"{API}/servers/web").status_code == 404


def test_a_name_that_is_not_a_name_never_reaches_another_route(tmp_path: Path) -> None:
    # No service at all: the name is refused before any request (a request would fail to connect).
    for argv in (("appliance", "unregister", "../tokens/1", "--yes"), ("replicate", "stop", "web/../../tokens"),
                 ("migrate", "x%2F..", "--test")):
        r = cli("--service", "http://127.0.0.1:9", *argv, token="gw_not-a-token")
        assert r.returncode == 2 and "is not a name" in r.stderr, (argv, r.returncode, r.stderr)
