"""Tokens and roles over real HTTP: every bad-token case looks the same, every role boundary holds."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from godwit.project.project import open_project
from godwit.state.tokens import Tokens
from tests.service.harness import Service, create_token, done, finish, godwit, make_project

pytestmark = pytest.mark.both_databases

API = "/api/v1"


def _new(svc: Service, admin: str, role: str, **extra: object) -> tuple[int, str]:
    with svc.client(admin) as c:
        r = c.post(f"{API}/tokens", json={"name": f"t-{role}", "role": role, **extra})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token"]["role"] == role
    return int(body["token"]["id"]), str(body["secret"])


def test_every_bad_token_gets_the_same_401(service: Service, admin: str, tmp_path: Path) -> None:
    _, expiring = _new(service, admin, "reader", expires_in_days=1 / 86400)  # one second
    revoked_id, revoked = _new(service, admin, "admin")
    with service.client(admin) as c:
        assert c.delete(f"{API}/tokens/{revoked_id}").json()["revoked"] is not None
    other = make_project(tmp_path / "other", None, servers=())
    foreign = create_token(other, "admin", "admin")  # another project's valid token
    p = open_project(service.project)
    with p.db.unit() as u:  # a token of another project in this very database (a shared PostgreSQL)
        same_db_other_project = Tokens(u.connection).create("someone-else", "admin", "x").secret
    p.close()
    time.sleep(1.1)
    cases: dict[str, dict[str, str]] = {
        "missing": {},
        "wrong": {"Authorization": "Bearer gw_" + "A" * 43},
        "not ours": {"Authorization": "Bearer not-a-godwit-token"},
        "no credentials": {"Authorization": "Bearer"},
        "basic": {"Authorization": "Basic YWRtaW46YWRtaW4="},
        "expired": {"Authorization": f"Bearer {expiring}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "other project": {"Authorization": f"Bearer {foreign}"},
        "other project, same db": {"Authorization": f"Bearer {same_db_other_project}"},
    }
    answers = set()
    with httpx.Client(base_url=service.url) as c:
        for path in (f"{API}/servers", f"{API}/servers/web", f"{API}/servers/nope", f"{API}/tokens", "/metrics"):
            for what, headers in cases.items():
                r = c.get(path, headers=headers)
                assert r.status_code == 401, (what, path, r.text)
                answers.add((r.content, r.headers.get("www-authenticate")))
    assert answers == {(b'{"error":"not authenticated","hint":null}', "Bearer")}, answers


def test_a_secret_is_stored_only_as_its_digest(service: Service, admin: str) -> None:
    _, secret = _new(service, admin, "operator")
    p = open_project(service.project)
    try:
        with p.db.tx() as c:
            from sqlalchemy import text

            rows = [tuple(map(str, r)) for r in c.execute(text("SELECT * FROM tokens"))]
    finally:
        p.close()
    assert rows and not any(secret in col or admin in col for row in rows for col in row)
    listed = godwit(service.project, "token", "list", "--json").stdout
    assert secret not in listed and admin not in listed and '"operator"' in listed


def test_reader_reads_but_cannot_act(service: Service, admin: str) -> None:
    _, reader = _new(service, admin, "reader")
    with service.client(reader) as c:
        for path in (f"{API}/servers", f"{API}/servers/web", f"{API}/servers/web/disks", f"{API}/servers/web/cycles",
                     f"{API}/servers/web/recovery-points", f"{API}/servers/web/migrations", f"{API}/replications",
                     f"{API}/events", f"{API}/appliances", "/metrics"):
            assert c.get(path).status_code == 200, path
        assert [s["server"] for s in c.get(f"{API}/servers").json()] == ["db", "web"]
        forbidden = [c.put(f"{API}/replications/web", json={"enabled": True}),
                     c.post(f"{API}/replications/web/cycles"),
                     c.post(f"{API}/migrations/web/test", json={}),
                     c.post(f"{API}/migrations/web/cleanup"),
                     c.post(f"{API}/migrations/web/planned", json={}),
                     c.get(f"{API}/tokens"),
                     c.post(f"{API}/tokens", json={"name": "x", "role": "admin"}),
                     c.delete(f"{API}/tokens/1"),
                     c.post(f"{API}/appliances/heartbeat")]
    assert [r.status_code for r in forbidden] == [403] * len(forbidden)
    with service.client(admin) as c:
        assert c.get(f"{API}/servers/web").json()["state"] == "added"  # nothing happened


def test_operator_acts_but_cannot_manage_tokens(service: Service, admin: str) -> None:
    _, operator = _new(service, admin, "operator")
    with service.client(operator) as c:
        r = c.put(f"{API}/replications/web", json={"enabled": True})
        assert done(c, r)["number"] == 1  # type: ignore[index]
        assert c.get(f"{API}/replications/web").json()["state"] == "replicating"
        assert c.put(f"{API}/replications/web", json={"enabled": False}).json()["state"] == "stopped"
        refused = finish(c, c.post(f"{API}/replications/web/cycles"))  # stopped: the engine refuses
        assert refused["state"] == "failed" and refused["error"]["type"] == "ConflictError"  # type: ignore[index]
        assert [c.get(f"{API}/tokens").status_code, c.post(f"{API}/tokens", json={"name": "x", "role": "reader"})
                .status_code, c.delete(f"{API}/tokens/1").status_code] == [403, 403, 403]
    with service.client(admin) as c:
        assert c.get(f"{API}/tokens").status_code == 200
        assert c.delete(f"{API}/tokens/999999").status_code == 404


def test_an_appliance_sees_and_acts_on_its_servers_only(service: Service, admin: str) -> None:
    key = godwit(service.project, "token", "registration-key").stdout.strip()
    with service.client(admin) as c:
        done(c, c.put(f"{API}/replications/web", json={"enabled": True}))
        done(c, c.put(f"{API}/replications/db", json={"enabled": True}))
    with httpx.Client(base_url=service.url) as c:
        assert c.post(f"{API}/appliances/register", json={"name": "a1", "key": key + "x", "servers": ["web"]}
                      ).status_code == 401
        assert c.post(f"{API}/appliances/register", json={"name": "a1", "key": key, "servers": ["nope"]}
                      ).status_code == 404
        r = c.post(f"{API}/appliances/register", json={"name": "a1", "key": key, "servers": ["web"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["appliance"]["servers"] == ["web"] and body["token"]["role"] == "appliance"
    token = body["secret"]
    with service.client(token) as c:
        assert [s["server"] for s in c.get(f"{API}/servers").json()] == ["web"]
        assert [s["server"] for s in c.get(f"{API}/replications").json()] == ["web"]
        hidden, unknown = c.get(f"{API}/servers/db"), c.get(f"{API}/servers/zzz")
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["error"].replace("'db'", "X") == unknown.json()["error"].replace("'zzz'", "X")
        assert c.post(f"{API}/replications/db/cycles").status_code == 404
        own = c.post(f"{API}/replications/web/cycles")  # its cycles run on the appliance, never here
        assert own.status_code == 409 and "replicated by appliance a1" in own.json()["error"], own.text
        assert {o["server"] for o in c.get(f"{API}/operations").json()} == {"web"}  # its servers' only
        assert {e["server"] for e in c.get(f"{API}/events").json()} == {"web"}
        assert c.get(f"{API}/events", params={"server": "db"}).json() == []
        assert c.put(f"{API}/replications/web", json={"enabled": False}).status_code == 403
        assert c.post(f"{API}/migrations/web/test", json={}).status_code == 403
        assert c.get(f"{API}/appliances").status_code == 403
        beat = c.post(f"{API}/appliances/heartbeat")
        assert beat.status_code == 200 and beat.json()["last_seen"] is not None
    with service.client(admin) as c:
        assert 'godwit_appliance_heartbeat_age_seconds{appliance="a1"}' in c.get("/metrics").text
        assert [a["name"] for a in c.get(f"{API}/appliances").json()] == ["a1"]
    with httpx.Client(base_url=service.url) as c:  # registering again revokes the old token
        c.post(f"{API}/appliances/register", json={"name": "a1", "key": key, "servers": []}).raise_for_status()
    with service.client(token) as c:
        assert c.get(f"{API}/servers").status_code == 401


def test_registration_attempts_are_rate_limited(service: Service) -> None:
    with httpx.Client(base_url=service.url) as c:
        codes = [c.post(f"{API}/appliances/register", json={"name": "a", "key": "guess", "servers": []}).status_code
                 for _ in range(11)]
        assert codes == [401] * 10 + [429]
        assert int(c.post(f"{API}/appliances/register", json={"name": "a", "key": "k"}).headers["retry-after"]) > 0
