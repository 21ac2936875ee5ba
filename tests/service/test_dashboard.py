"""The dashboard over real HTTP: sign in with a token, the servers' page, live updates (SSE)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from godwit.project.project import open_project
from godwit.state.network import NetworkRecords
from tests.service.harness import Service, create_token, done

pytestmark = pytest.mark.both_databases


def test_sign_in_page_and_live_stream(service: Service, admin: str) -> None:
    reader = create_token(service.project, "viewer", "reader")
    p = open_project(service.project)
    try:
        p.db.event("error", "<script>alert(1)</script> & co", server="web")
    finally:
        p.close()
    with httpx.Client(base_url=service.url) as c:
        assert c.get("/").headers["location"] == "/ui"
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
        assert '<span id="data-path">a local folder (no network)</span>' in html
        assert '<span id="network-check">never run</span>' in html
        assert 'data-server="web"' in html and 'data-server="db"' in html and "<caption>Servers</caption>" in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html and "<script>alert" not in html
        assert c.get("/api/v1/servers").status_code == 401  # the cookie opens the dashboard only
        p = open_project(service.project)
        try:
            with p.db.unit() as u:
                NetworkRecords(u.connection).record_check(ok=False, data_plane="private-endpoint",
                                                          failed=["dns <b>cname</b>"])
        finally:
            p.close()
        html = c.get("/ui").text
        assert '<span id="network-check">FAILED at ' in html and ": dns &lt;b&gt;cname&lt;/b&gt;</span>" in html
    with service.client(admin) as api:
        done(api, api.put("/api/v1/replications/web", json={"enabled": True}))
    with httpx.Client(base_url=service.url, cookies={"godwit_token": reader}, timeout=30) as c, \
            c.stream("GET", "/ui/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: status"
        data = json.loads(next(lines).removeprefix("data: "))
    by_name = {s["server"]: s for s in data["servers"]}
    assert any("&" in e["text"] and "<script>" in e["text"] for e in data["events"])  # raw text: JS sets textContent
    assert by_name["web"]["charts"]["throughput"]["label"].startswith("throughput of the last cycles, MB/s: ")
    assert by_name["db"]["charts"]["rpo"] == {"points": "", "label": "seconds between the last commits: none yet"}
    assert by_name["web"]["cells"]["state"] == "replicating" and by_name["web"]["progress"] == 1.0
    assert by_name["db"]["cells"]["state"] == "added" and by_name["db"]["progress"] == 0.0


def _key(html: str) -> str:
    import re

    m = re.search(r'name="key" value="([0-9a-f]{64})"', html)
    assert m, html
    return m.group(1)


def test_actions_go_through_a_confirmation_step(service: Service, admin: str) -> None:
    from tests.service.harness import wait_for

    reader, operator = create_token(service.project, "r", "reader"), create_token(service.project, "o", "operator")
    with httpx.Client(base_url=service.url, cookies={"godwit_token": reader}) as c:
        assert "Test migrate" not in c.get("/ui").text
        assert c.get("/ui/servers/web/confirm", params={"action": "enable"}).status_code == 403
        assert c.post("/ui/servers/web/enable", data={"key": "0" * 64}).status_code == 403
    with httpx.Client(base_url=service.url, cookies={"godwit_token": operator}, timeout=60) as c:
        assert "Test migrate" in c.get("/ui").text and 'aria-label="Test migrate: web"' in c.get("/ui").text
        confirm = c.get("/ui/servers/web/confirm", params={"action": "enable"})
        assert confirm.status_code == 200 and "Enable replication of web?" in confirm.text
        assert c.post("/ui/servers/web/enable", data={"key": "f" * 64}).status_code == 403  # not this session's
        with service.client(admin) as api:
            assert api.get("/api/v1/servers/web").json()["state"] == "added"  # nothing done without the key
        started = c.post("/ui/servers/web/enable", data={"key": _key(confirm.text)})
        assert started.status_code == 303 and started.headers["location"].startswith("/ui/operations/")
        assert _ended(c, started.headers["location"]) == {"state": "succeeded", "failed": False, "done": True,
                                                          "text": "Replication of web is enabled."}
        with service.client(admin) as api:
            wait_for(lambda: api.get("/api/v1/servers/web").json()["latest_recovery_point"] == 1, what="point 1")
        key = _key(c.get("/ui/servers/web/confirm", params={"action": "test"}).text)
        test = c.post("/ui/servers/web/test", data={"key": key})
        assert test.status_code == 303
        page = c.get(test.headers["location"]).text
        assert 'role="status"' in page and "Test migrate: web" in page
        text = str(_ended(c, test.headers["location"])["text"])
        assert text.startswith("Test migration of web at recovery point 1 written: ")
        written = text.split("written: ", 1)[1]
        assert Path(written).read_bytes() == (service.project.parent / "web.raw").read_bytes()
        again = c.post("/ui/servers/db/cleanup", data={"key": key})
        failed = _ended(c, again.headers["location"])
        assert failed["failed"] is True and "no test migration" in str(failed["text"])
        assert c.get("/ui/servers/zzz/confirm", params={"action": "test"}).status_code == 404
        assert c.post("/ui/servers/zzz/test", data={"key": key}).status_code == 404
        assert c.get("/ui/operations/999999/stream").status_code == 404


def _ended(c: httpx.Client, location: str) -> dict[str, object]:
    """Follow an operation's page stream (server-sent events) until it says the operation ended."""
    with c.stream("GET", f"{location}/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                data: dict[str, object] = json.loads(line[6:])
                if data["done"]:
                    return data
    raise AssertionError("the stream ended before the operation")


def test_the_stream_shows_a_running_initial_cycle(tmp_path: Path) -> None:
    from tests.service.harness import make_project, running

    project = make_project(tmp_path, None, servers=("slow",), size=8 << 20)
    toml = project / "godwit.toml"
    toml.write_text(toml.read_text().replace("# max_mbps = 100", "max_mbps = 4", 1))  # seconds to send
    operator = create_token(project, "o", "operator")
    seen: list[tuple[str, str, float]] = []
    with running(project, "--mover-interval", "0") as svc, svc.client(operator) as api:
        api.put("/api/v1/replications/slow", json={"enabled": True}).raise_for_status()
        with httpx.Client(base_url=svc.url, cookies={"godwit_token": operator}, timeout=60) as c, \
                    c.stream("GET", "/ui/stream") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    s = json.loads(line[6:])["servers"][0]
                    seen.append((s["cells"]["state"], s["cells"]["last_cycle"], s["progress"]))
                    if s["cells"]["last_cycle"] == "1":
                        break
    assert ("replicating", "-") in [(state, last) for state, last, _p in seen], seen  # live, while it ran
    assert [p for *_s, p in seen] == sorted(p for *_s, p in seen) and seen[-1] == ("replicating", "1", 1.0)


def test_live_progress_of_a_running_cycle() -> None:
    from godwit.service.dashboard.page import progress
    from godwit.service.progress import LiveProgress
    from godwit.state.views import ServerStatus

    live = LiveProgress()
    status = ServerStatus(server="s", state="replicating", error=None, last_cycle=None, open_cycle=1, rpo_seconds=None,
                          bytes_stored=0, throughput_bps=None, latest_recovery_point=None, disks=[], cycles=[])
    assert live.fraction("s") is None and progress(status, live.fraction("s")) == 0.0
    with live.tracking("s") as report:
        report(0, 1, 4)
        report(1, 0, 4)
        assert live.fraction("s") == 0.125 and progress(status, live.fraction("s")) == 0.125
        report(0, 4, 4)
        assert live.fraction("s") == 0.5
        report(1, 4, 4)
        assert live.fraction("s") == 1.0 and progress(status, 1.0) == 0.99  # read, not yet committed
    assert live.fraction("s") is None
    assert progress(status.model_copy(update={"last_cycle": 1})) == 1.0


def test_charts_of_throughput_and_rpo_per_cycle() -> None:
    from godwit.service.dashboard.page import CHART_H, charts
    from godwit.state.views import CycleStatus, ServerStatus

    def cycle(n: int, committed: float | None, read: int, wall: float) -> CycleStatus:
        return CycleStatus(number=n, kind="delta", state="applied" if committed else "open", consistency="none",
                           started=committed or 0.0, committed=committed, applied=None, bytes_read=read,
                           bytes_changed=0, bytes_sent=0, packs=0, t_read=0, t_cpu=0, t_upload=0, t_throttle=0,
                           t_wall=wall, bottleneck="source")

    status = ServerStatus(server="s", state="replicating", error=None, last_cycle=3, open_cycle=4, rpo_seconds=1,
                          bytes_stored=0, throughput_bps=None, latest_recovery_point=3, disks=[],
                          cycles=[cycle(1, 100.0, 4_000_000, 2.0), cycle(2, 160.0, 1_000_000, 1.0),
                                  cycle(3, 190.0, 0, 0.0), cycle(4, None, 0, 0.0)])
    got = charts(status)
    assert got["throughput"]["label"] == "throughput of the last cycles, MB/s: 2.0, 1.0, 0.0"
    assert got["rpo"]["label"] == "seconds between the last commits: 60, 30"
    ys = [float(p.split(",")[1]) for p in got["throughput"]["points"].split()]
    assert ys[0] < ys[1] < ys[2] <= CHART_H  # higher throughput is drawn higher up
