"""The appliance's side of the wire against the service's models (the two layers cannot import
each other, so this is where they are held together), and its settings and token file."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from godwit.appliance.progress import ProgressSender
from godwit.appliance.settings import SavedToken, load, read_token, save_token
from godwit.appliance.wire import Desired, cycle_report
from godwit.engine import lifecycle
from godwit.engine.inventory import add_server
from godwit.errors import ConfigError, UsageError
from godwit.format.keys import hashes_key
from godwit.project.project import Project, init
from godwit.service.protocol_models import CycleReport, DesiredState, ProgressReport
from tests.helpers import make_raw, scribble
from tests.service.harness import godwit


def test_reports_the_appliance_builds_are_what_the_service_takes(project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", 1 << 20, seed=3)
    add_server(project, "web", [str(disk)])
    lifecycle.start(project, "web")
    scribble(disk, seed=4)
    lifecycle.cycle(project, "web")
    server = project.db.server("web")
    report = cycle_report(project, server, project.db.cycle(server.id, 2))
    taken = CycleReport.model_validate_json(json.dumps(report))  # strict, as the API reads it
    assert (taken.number, taken.parent, taken.kind, len(taken.disks)) == (2, 1, "delta", 1)
    assert taken.bytes_read > 0 and taken.manifest_key.endswith("0000000002.manifest")
    d = project.db.disks(server.id)[0]
    assert project.store.exists(hashes_key(server.uid, d.uid, 2))  # put before the report goes

    with ProgressSender(lambda _body: None, "web", 3, rpo_since=1.0) as sender:
        sender(0, 10, 20)
        ProgressReport.model_validate_json(json.dumps(sender.snapshot(error="boom")))

    desired = DesiredState(appliance="a", store_id="s", interval_seconds=1, max_mbps=None, last_event=0,
                           servers=[], commands=[])
    assert Desired.model_validate_json(desired.model_dump_json()).appliance == "a"


def test_settings_file_and_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "a.toml"
    cfg.write_text('[appliance]\nservice = "https://svc:8443"\nname = "a"\nkey_env = "K"\nservers = ["web"]\n')
    monkeypatch.setenv("K", "gwreg_x")
    s = load(cfg)
    assert (s.service, s.name, s.servers, s.key) == ("https://svc:8443", "a", ("web",), "gwreg_x")
    assert "gwreg_x" not in repr(s)
    cfg.write_text('[appliance]\nservice = "https://svc"\nname = "a"\nproxy = "x"\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load(cfg)
    cfg.write_text('[appliance]\nservice = "ftp://svc"\nname = "a"\n')
    with pytest.raises(UsageError, match="not an http"):
        load(cfg)
    save_token(tmp_path / "t", SavedToken("https://svc", "a", "gw_secret"))
    assert stat.S_IMODE((tmp_path / "t" / "token").stat().st_mode) == 0o600
    assert read_token(tmp_path / "t") == SavedToken("https://svc", "a", "gw_secret")
    assert "gw_secret" not in repr(read_token(tmp_path / "t"))
    (tmp_path / "t" / "token").write_text("{")
    with pytest.raises(ConfigError, match="damaged"):
        read_token(tmp_path / "t")


def test_the_command_refuses_bad_input_without_touching_anything(tmp_path: Path) -> None:
    init(tmp_path / "appl").close()
    cases = {
        (): "give --service URL",
        ("--service", "https://127.0.0.1:9", "--once"): "no token yet",
        ("--service", "https://127.0.0.1:9", "--key", "gwreg_x", "--once"): "did not answer",
        ("--config", str(tmp_path / "missing.toml")): "cannot read",
    }
    for args, message in cases.items():
        proc = godwit(tmp_path / "appl", "appliance", "run", *args, ok=False)
        assert proc.returncode != 0 and message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "appl" / "state" / "appliance" / "token").exists()
