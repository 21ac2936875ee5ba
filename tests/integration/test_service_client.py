"""`godwit --service URL` for the read commands: the same answers as the local project, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.service.harness import create_token, make_project, running


def cli(*args: str, token: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GODWIT_TOKEN", "GODWIT_SERVICE")}
    if token is not None:
        env["GODWIT_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "godwit", *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env, cwd=cwd)


def _steady(value: object) -> object:
    """The status without its RPO figures, which are ages and grow between two reads."""
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if not k.startswith("rpo")}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def test_read_commands_through_the_service(tmp_path: Path) -> None:
    project = make_project(tmp_path, None, servers=("web", "db"))
    reader = create_token(project, "r", "reader")
    assert cli("replicate", "start", "web", "-p", str(project)).returncode == 0
    with running(project, "--mover-interval", "0") as svc:
        local = json.loads(cli("replicate", "status", "--json", "-p", str(project)).stdout)
        remote = cli("--service", svc.url, "replicate", "status", "--json", token=reader, cwd=tmp_path)
        assert remote.returncode == 0, remote.stderr
        assert _steady(json.loads(remote.stdout)) == _steady(local)
        one = json.loads(cli("--service", svc.url, "replicate", "status", "web", "--json", token=reader).stdout)
        assert [s["server"] for s in one] == ["web"] and one[0]["last_cycle"] == 1
        table = cli("--service", svc.url, "replicate", "status", token=reader)
        assert table.returncode == 0 and "web" in table.stdout and "db" in table.stdout
        events = cli("--service", svc.url, "events", "web", "--json", token=reader)
        assert json.loads(events.stdout) == json.loads(cli("events", "web", "--json", "-p", str(project)).stdout)

        missing = cli("--service", svc.url, "replicate", "status", "nope", token=reader)
        assert missing.returncode == 4 and "no server named 'nope'" in missing.stderr
        for token in (None, "gw_wrong"):
            bad = cli("--service", svc.url, "events", token=token)
            assert bad.returncode in (2, 3) and "Traceback" not in bad.stderr and reader not in bad.stderr
        url = svc.url
    gone = cli("--service", url, "events", token=reader)
    assert gone.returncode == 3 and "cannot reach the service" in gone.stderr
