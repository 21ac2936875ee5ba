"""`godwit token`: create prints the secret once, list never shows it, revoke, errors on one line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.service.harness import godwit, make_project, running


def test_token_commands_and_the_service_agree(tmp_path: Path) -> None:
    project = make_project(tmp_path, None)
    made = json.loads(godwit(project, "token", "create", "ops", "--role", "operator", "--json").stdout)
    secret = made["secret"]
    assert secret.startswith("gw_") and made["token"]["role"] == "operator"
    human = godwit(project, "token", "create", "viewer").stdout
    assert "cannot be shown again" in human
    listed = godwit(project, "token", "list").stdout + godwit(project, "token", "list", "--json").stdout
    assert secret not in listed and "ops" in listed and "viewer" in listed
    bad = godwit(project, "token", "create", "x", "--role", "root", ok=False)
    assert bad.returncode == 2 and "unknown role" in bad.stderr and "Traceback" not in bad.stderr
    markup = godwit(project, "token", "create", "[red]x", ok=False)
    assert markup.returncode == 2 and "[red]x" in markup.stderr
    missing = godwit(project, "token", "revoke", "42", ok=False)
    assert missing.returncode == 4 and "no token with id 42" in missing.stderr
    with running(project, "--mover-interval", "0") as svc, svc.client(secret) as c:
        assert c.get("/api/v1/servers").status_code == 200
        godwit(project, "token", "revoke", str(made["token"]["id"]))
        assert c.get("/api/v1/servers").status_code == 401
        assert httpx.get(f"{svc.url}/healthz").json()["status"] == "ok"
