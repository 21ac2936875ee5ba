"""The acting commands through `godwit --service URL`, and the service's background operations:
the same end state as the local commands, one operation per server (409), a failure carrying its
error, roles (a reader cannot act), and a service killed with -9 mid-operation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import write_at
from tests.service.harness import create_token, done, finish, make_project, running, wait_for

API = "/api/v1"
#: What a cycle's result must agree on, locally and through the service (the rest are timings).
STEADY = ("server", "number", "kind", "consistency", "resumed", "packs_uploaded", "packs_reused", "bytes_read",
          "bytes_changed", "bytes_sent", "warnings", "disks")


def cli(*args: str, token: str | None = None, service: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GODWIT_TOKEN", "GODWIT_SERVICE")}
    if token is not None:
        env["GODWIT_TOKEN"] = token
    pre = ("--service", service) if service else ()
    return subprocess.run([sys.executable, "-m", "godwit", *pre, *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def ok(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _steady(cycle: dict[str, Any]) -> dict[str, Any]:
    return {k: cycle[k] for k in STEADY}


def _throttled(project: Path, mbps: float) -> None:
    toml = project / "godwit.toml"
    toml.write_text(toml.read_text().replace("# max_mbps = 100", f"max_mbps = {mbps}", 1))


@pytest.mark.slow
@pytest.mark.both_databases
def test_acting_commands_through_the_service_end_as_locally(tmp_path: Path, state_url: str | None) -> None:
    local = make_project(tmp_path / "local", None, servers=("web", "db"))
    served = make_project(tmp_path / "served", state_url, servers=("web", "db"))
    sources = {p: p.parent / "web.raw" for p in (local, served)}
    operator = create_token(served, "op", "operator")
    with running(served, "--mover-interval", "0.2") as svc, svc.client(operator) as api:
        def remote(*args: str) -> Any:
            return ok(cli(*args, "--json", token=operator, service=svc.url))

        def point(n: int) -> bool:
            return bool(api.get(f"{API}/servers/web").json()["latest_recovery_point"] == n)

        here = ok(cli("replicate", "start", "web", "--json", "-p", str(local)))
        there = remote("replicate", "start", "web")
        assert _steady(there) == _steady(here) and there["number"] == 1 and "bottleneck" in there
        for p in (local, served):
            write_at(sources[p], 1 << 20, b"changed" * 1000)
        here = ok(cli("replicate", "cycle", "web", "--json", "-p", str(local)))
        there = remote("replicate", "cycle", "web")
        assert _steady(there) == _steady(here) and there["number"] == 2 and there["bytes_changed"] > 0

        assert cli("mover", "run", "--once", "-p", str(local)).returncode == 0
        wait_for(lambda: point(2), what="the service's mover to apply cycle 2")
        here = ok(cli("migrate", "web", "--test", "--out", str(tmp_path / "t-local"), "--json", "-p", str(local)))
        there = remote("migrate", "web", "--test", "--out", "t1")
        assert there["files"] == [str(served / "exports" / "t1" / "web-disk0.raw")]
        assert (there["kind"], there["recovery_point"], there["format"]) == ("test", 2, "raw") \
            == (here["kind"], here["recovery_point"], here["format"])
        assert Path(there["files"][0]).read_bytes() == Path(here["files"][0]).read_bytes() \
            == sources[served].read_bytes()
        assert remote("migrate", "cleanup", "web") == {"removed": there["files"]}
        assert len(ok(cli("migrate", "cleanup", "web", "--json", "-p", str(local)))["removed"]) == 1
        assert not Path(there["files"][0]).exists()

        for p in (local, served):
            write_at(sources[p], 3 << 20, b"final" * 1000)
        here = ok(cli("migrate", "web", "--format", "vhd", "--out", str(tmp_path / "p-local"), "--json",
                      "-p", str(local)))
        there = remote("migrate", "web", "--format", "vhd", "--out", "cutover")
        size = sources[served].stat().st_size
        assert there["recovery_point"] == here["recovery_point"] == 3
        assert Path(there["files"][0]).read_bytes()[:size] == sources[served].read_bytes()
        stopped = cli("replicate", "stop", "db", token=operator, service=svc.url)
        assert stopped.returncode == 0 and "replication of db stopped" in stopped.stdout
        assert cli("replicate", "stop", "db", "-p", str(local)).returncode == 0

        def states(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
            return [(s["server"], s["state"], s["last_cycle"], s["latest_recovery_point"]) for s in rows]

        reader = create_token(served, "r", "reader")
        assert states(ok(cli("replicate", "status", "--json", token=reader, service=svc.url))) \
            == states(ok(cli("replicate", "status", "--json", "-p", str(local)))) \
            == [("db", "stopped", None, None), ("web", "migrated", 3, 3)]
        kinds = [o["kind"] for o in api.get(f"{API}/operations").json()]
        assert kinds == ["planned", "cleanup", "test", "cycle", "enable"] and \
            all(o["state"] == "succeeded" for o in api.get(f"{API}/operations").json())


def test_one_operation_per_server_failures_and_roles(tmp_path: Path) -> None:
    project = make_project(tmp_path, None, servers=("web", "db"), size=8 << 20)
    _throttled(project, 4)  # the initial cycle takes seconds
    operator, reader = create_token(project, "op", "operator"), create_token(project, "r", "reader")
    with running(project, "--mover-interval", "0") as svc, svc.client(operator) as api:
        enabling = api.put(f"{API}/replications/web", json={"enabled": True})
        assert enabling.status_code == 202
        op_id = enabling.json()["id"]
        busy = api.post(f"{API}/replications/web/cycles")
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"].startswith(f"server web is busy with operation {op_id} (enable, ")
        assert f"/api/v1/operations/{op_id}" in busy.json()["hint"]
        again = cli("replicate", "cycle", "web", token=operator, service=svc.url)
        assert again.returncode == 5 and f"busy with operation {op_id}" in again.stderr

        for args in (("replicate", "cycle", "db"), ("migrate", "db", "--test")):
            refused = cli(*args, token=reader, service=svc.url)
            assert refused.returncode == 3 and "needs the operator role (403)" in refused.stderr, refused.stderr
            assert reader not in refused.stderr + refused.stdout and "Traceback" not in refused.stderr
        assert api.get(f"{API}/operations", params={"server": "db"}).json() == []  # nothing started
        bad = cli("replicate", "cycle", "db", token="gw_" + "x" * 43, service=svc.url)
        assert bad.returncode == 3 and "did not accept the token (401)" in bad.stderr and "gw_x" not in bad.stderr

        failed = cli("migrate", "db", "--test", "--json", token=operator, service=svc.url)  # db has no point
        assert failed.returncode != 0 and "Traceback" not in failed.stderr
        op = api.get(f"{API}/operations", params={"server": "db"}).json()[0]
        assert op["kind"] == "test" and op["state"] == "failed" and op["result"] is None
        assert op["error"]["error"] in failed.stderr + failed.stdout and failed.returncode == op["error"]["exit_code"]
        assert op["finished"] >= op["started"] >= op["created"]
        path = cli("migrate", "db", "--test", "--out", "/tmp/x", token=operator, service=svc.url)
        assert path.returncode == 2 and "names a folder under the service's export directory" in path.stderr
        assert cli("replicate", "cycle", "db", "--max-mbps", "5", token=operator, service=svc.url).returncode == 2
        assert api.get(f"{API}/operations/999999").status_code == 404
        assert api.post(f"{API}/replications/zzz/cycles").status_code == 404

        final = finish(api, enabling)
        assert final["state"] == "succeeded" and final["progress"] == 1.0
        assert isinstance(final["result"], dict) and final["result"]["number"] == 1
        assert done(api, api.post(f"{API}/replications/web/cycles"))["number"] == 2  # type: ignore[index]


def test_a_service_killed_mid_operation_marks_it_interrupted_and_the_cycle_resumes(tmp_path: Path) -> None:
    project = make_project(tmp_path, None, servers=("web",), size=8 << 20)
    source = tmp_path / "web.raw"
    _throttled(project, 2)  # ~2.5 MB to send: about ten seconds
    toml = project / "godwit.toml"
    toml.write_text(toml.read_text().replace("pack_size_mib = 32", "pack_size_mib = 1", 1))  # packs to resume from
    operator = create_token(project, "op", "operator")
    with running(project, "--mover-interval", "0") as svc, svc.client(operator) as api:
        r = api.put(f"{API}/replications/web", json={"enabled": True})
        location = r.headers["location"]

        def halfway() -> bool:
            op = api.get(location).json()
            assert op["state"] in ("queued", "running"), op  # still running when it is killed
            return bool(op["state"] == "running" and (op["progress"] or 0) > 0.6)

        wait_for(halfway, what="the initial cycle to be under way")
        time.sleep(5)  # a pack or two stored: something to resume from
        assert api.get(location).json()["state"] == "running"
        svc.proc.kill()  # -9: no shutdown of any kind
        svc.proc.wait()
    toml.write_text(toml.read_text().replace("max_mbps = 2", "# max_mbps = 100", 1))
    with running(project, "--mover-interval", "0.2") as svc, svc.client(operator) as api:
        op = api.get(location).json()
        assert op["state"] == "failed" and op["error"]["type"] == "Interrupted", op
        assert "interrupted" in op["error"]["error"] and op["finished"] is not None
        events = [e["message"] for e in api.get(f"{API}/events", params={"server": "web"}).json()]
        assert f"operation {op['id']} (enable) was interrupted: the service stopped while it ran" in events
        t0 = time.monotonic()
        resumed = done(api, api.post(f"{API}/replications/web/cycles"))
        assert isinstance(resumed, dict) and resumed["number"] == 1 and resumed["resumed"] is True, resumed
        assert resumed["packs_reused"] > 0 and time.monotonic() - t0 < 30
        wait_for(lambda: api.get(f"{API}/servers/web").json()["latest_recovery_point"] == 1, what="point 1")
        test = done(api, api.post(f"{API}/migrations/web/test", json={"folder": "after"}))
        assert isinstance(test, dict) and Path(test["files"][0]).read_bytes() == source.read_bytes()  # bit-exact


def test_the_operations_api_answers_its_schema(tmp_path: Path) -> None:
    project = make_project(tmp_path, None)
    admin = create_token(project, "a", "admin")
    with running(project, "--mover-interval", "0") as svc:
        spec = httpx.get(f"{svc.url}/openapi.json").json()
        cycles = spec["paths"]["/api/v1/replications/{name}/cycles"]["post"]["responses"]
        assert cycles["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OperationView"}
        assert "200" not in cycles and "409" in cycles
        with svc.client(admin) as api:
            assert api.get(f"{API}/operations").json() == []
