"""An appliance's project beside a service's, sharing its cache folder, and a way to drive it.

The appliance runs in the test's process (so a test can run one round at a time) but talks to a
real `godwit serve` (tests/service/harness.py) over real HTTP, as `godwit appliance run` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from godwit.appliance.agent import Appliance
from godwit.appliance.link import ServiceLink
from godwit.appliance.settings import ApplianceSettings
from godwit.project.project import init, open_project
from godwit.state.tokens import Tokens
from tests.service.harness import Service

API = "/api/v1"


def registration_key(service_project: Path) -> str:
    p = open_project(service_project)
    try:
        with p.db.unit() as u:
            return Tokens(u.connection).new_registration_key()
    finally:
        p.close()


def appliance_project(root: Path, service_project: Path, name: str = "site-a", *, extra_toml: str = "") -> Path:
    """A project folder for an appliance whose [cache] is the service's cache folder."""
    init(root / name, name=name).close()
    cfg = root / name / "godwit.toml"
    text = re.sub(r'(?m)^path = "cache"', f"path = {json.dumps(str(service_project / 'cache'))}", cfg.read_text())
    cfg.write_text(text + extra_toml)
    return root / name


@contextmanager
def appliance(folder: Path, svc: Service, key: str | None, servers: tuple[str, ...] = ("web",),
              ca_bundle: str | None = None) -> Iterator[Appliance]:
    p = open_project(folder)
    link = ServiceLink(svc.url, router=p.router, ca_bundle=ca_bundle, timeout=10)
    try:
        a = Appliance(p, ApplianceSettings(svc.url, folder.name, servers, key, poll_seconds=0.1), link)
        a.ensure_token()
        yield a
    finally:
        link.close()
        p.close()


def queue(svc: Service, operator: str, appliance: str, server: str, kind: str = "cycle") -> dict[str, Any]:
    with svc.client(operator) as c:
        r = c.post(f"{API}/appliances/{appliance}/commands", json={"server": server, "kind": kind})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def points(svc: Service, token: str, server: str) -> list[int]:
    with svc.client(token) as c:
        r = c.get(f"{API}/servers/{server}/recovery-points")
    assert r.status_code == 200, r.text
    return [p["number"] for p in r.json()]


def cycles(svc: Service, token: str, server: str) -> list[tuple[int, str]]:
    with svc.client(token) as c:
        r = c.get(f"{API}/servers/{server}/cycles")
    assert r.status_code == 200, r.text
    return [(c["number"], c["state"]) for c in r.json()]


def replica_bytes(service_project: Path, server: str) -> bytes:
    return next((service_project / "replicas").glob(f"{server}-*/disk0-*.img")).read_bytes()
