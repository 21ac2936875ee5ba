"""The engine's operations through a running `godwit serve`: enable replication, the in-process
mover, test migration and cleanup, a cycle now, planned migration, events and metrics; and TLS."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import write_at
from tests.service.harness import create_token, done, finish, make_project, running, wait_for

API = "/api/v1"


@pytest.mark.both_databases
def test_replicate_and_migrate_over_the_api(tmp_path: Path, state_url: str | None) -> None:
    project = make_project(tmp_path, state_url)
    source = tmp_path / "web.raw"
    operator = create_token(project, "op", "operator")
    with running(project, "--mover-interval", "0.2") as svc, svc.client(operator) as c:
        r = c.put(f"{API}/replications/web", json={"enabled": True})
        assert r.status_code == 202 and r.headers["location"] == f"{API}/operations/{r.json()['id']}"
        assert r.json()["kind"] == "enable" and r.json()["state"] in ("queued", "running")
        initial = done(c, r)
        assert isinstance(initial, dict) and initial["number"] == 1 and initial["kind"] == "initial"
        assert c.get(f"{API}/replications/web").json()["last_cycle"] == 1

        def point(n: int) -> bool:
            return n in [p["number"] for p in c.get(f"{API}/servers/web/recovery-points").json()]

        wait_for(lambda: point(1), what="the mover to apply cycle 1")
        test = done(c, c.post(f"{API}/migrations/web/test", json={"folder": "t1"}))
        assert isinstance(test, dict)
        files = [Path(f) for f in test["files"]]
        assert files == [project / "exports" / "t1" / "web-disk0.raw"]
        assert files[0].read_bytes() == source.read_bytes()
        again = finish(c, c.post(f"{API}/migrations/web/test", json={"folder": "t1"}))
        assert again["state"] == "failed" and files[0].read_bytes() == source.read_bytes()  # never overwritten
        assert done(c, c.post(f"{API}/migrations/web/cleanup")) == {"removed": [str(files[0])]}
        assert not files[0].exists()
        nothing = finish(c, c.post(f"{API}/migrations/web/cleanup"))
        assert nothing["error"] == {"error": "server web has no test migration to clean up", "hint": None,
                                    "type": "NotFoundError", "exit_code": 4}

        write_at(source, 1 << 20, b"changed" * 1000)
        cycle = done(c, c.post(f"{API}/replications/web/cycles"))
        assert isinstance(cycle, dict) and cycle["number"] == 2 and cycle["bytes_changed"] > 0
        wait_for(lambda: point(2), what="the mover to apply cycle 2")
        write_at(source, 3 << 20, b"final" * 1000)  # only the planned migration's final cycle carries it
        planned = done(c, c.post(f"{API}/migrations/web/planned", json={"format": "vhd", "folder": "cutover"}))
        assert isinstance(planned, dict)
        vhd = Path(planned["files"][0])
        size = source.stat().st_size
        assert vhd.read_bytes()[:size] == source.read_bytes()
        assert c.get(f"{API}/servers/web").json()["state"] == "migrated"
        refused = finish(c, c.put(f"{API}/replications/web", json={"enabled": True}))
        assert refused["state"] == "failed" and refused["error"]["type"] == "ConflictError"  # type: ignore[index]
        kinds_run = [o["kind"] for o in c.get(f"{API}/operations", params={"server": "web"}).json()]
        assert kinds_run == ["enable", "planned", "cycle", "cleanup", "cleanup", "test", "test", "enable"]
        kinds = [m["kind"] for m in c.get(f"{API}/servers/web/migrations").json()]
        assert kinds == ["test", "planned"]
        messages = [e["message"] for e in c.get(f"{API}/events", params={"server": "web"}).json()]
        assert any("migrated at recovery point" in m for m in messages)
        metrics = c.get("/metrics").text
        assert 'godwit_cycles{server="web",state="applied"} 3.0' in metrics
        assert 'godwit_http_requests_total{method="POST",route="/api/v1/replications/{name}/cycles",status="202"}' \
            in metrics


def test_tls_with_cert_and_key(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_pem, key_pem, ca_pem = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    project = make_project(tmp_path, None)
    token = create_token(project, "r", "reader")
    with running(project, "--cert", str(cert_pem), "--key", str(key_pem), "--mover-interval", "0",
                 verify=ssl.create_default_context(cafile=str(ca_pem))) as svc:
        assert svc.url.startswith("https://127.0.0.1:")
        with svc.client(token) as c:
            assert [s["server"] for s in c.get(f"{API}/servers").json()] == ["web"]
        with pytest.raises(httpx.ConnectError):  # not trusted without the CA
            httpx.get(f"{svc.url}/healthz")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(svc.url.replace("https://", "http://") + "/healthz")
    other = trustme.CA().issue_cert("127.0.0.1")
    wrong_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(wrong_key))
    for args, says in ((["--cert", str(cert_pem)], "--cert and --key go together"),
                       (["--cert", str(cert_pem), "--key", str(wrong_key)], "cannot load the certificate")):
        proc = subprocess.run([sys.executable, "-m", "godwit", "serve", "--port", "0", *args, "-p", str(project)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
