"""The dashboard over real HTTP: sign in with a token, the servers' page, live updates (SSE)."""

from __future__ import annotations

import json

import httpx
import pytest

from godwit.project.project import open_project
from tests.service.harness import Service, create_token

pytestmark = pytest.mark.both_databases


def test_sign_in_page_and_live_stream(service: Service, admin: str) -> None:
    reader = create_token(service.project, "viewer", "reader")
    p = open_project(service.project)
    try:
        p.db.event("error", "<script>alert(1)</script> & co", server="web")
    finally:
        p.close()
    with httpx.Client(base_url=service.url) as c:
        first = c.get("/ui")
        assert first.status_code == 303 and first.headers["location"] == "/ui/login"
        assert c.get("/ui/stream").status_code == 401
        form = c.get("/ui/login").text
        assert '<label for="token">' in form and 'type="password"' in form
        bad = c.post("/ui/login", data={"token": "gw_nope"})
        assert bad.status_code == 401 and "not accepted" in bad.text and "godwit_token" not in bad.headers.get(
            "set-cookie", "")
        ok = c.post("/ui/login", data={"token": reader})
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        html = c.get("/ui").text
        assert 'data-server="web"' in html and 'data-server="db"' in html and "<caption>Servers</caption>" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html and "<script>alert" not in html
        assert c.get("/api/v1/servers").status_code == 401  # the cookie opens the dashboard only
    with service.client(admin) as api:
        api.put("/api/v1/replications/web", json={"enabled": True}).raise_for_status()
    with httpx.Client(base_url=service.url, cookies={"godwit_token": reader}, timeout=30) as c, \
            c.stream("GET", "/ui/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: status"
        data = json.loads(next(lines).removeprefix("data: "))
    by_name = {s["server"]: s for s in data["servers"]}
    assert by_name["web"]["cells"]["state"] == "replicating" and by_name["web"]["progress"] == 1.0
    assert by_name["db"]["cells"]["state"] == "added" and by_name["db"]["progress"] == 0.0
