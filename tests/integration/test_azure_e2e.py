"""End to end on Azure Storage (Azurite over HTTPS): a qcow2 disk replicated into a blob cache,
the mover writing a page-blob replica, a test migration to a fixed VHD file and to a page-blob
copy. The VHD equals the source view, and the page blob downloaded equals the VHD file."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.migrate import migration
from godwit.project.project import init, open_project
from godwit.replicas.open import replica_name
from tests.azurite import Azurite
from tests.helpers import convert, make_raw, read_view, scribble

pytestmark = [pytest.mark.slow, pytest.mark.azure]


def _toml(table: str, values: dict[str, Any]) -> str:
    lines = [f"[{table}]"]
    subtables = []
    for k, v in values.items():
        if isinstance(v, dict):
            subtables.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    for k, v in subtables:
        inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
        lines.append(f"{k} = {{ {inner} }}")
    return "\n".join(lines) + "\n"


def test_qcow2_into_azure_page_blob_and_vhd(azurite: Azurite, tmp_path: Path) -> None:
    cache, replicas, exports = (azurite.new_container(p) for p in ("cache", "replicas", "exports"))
    root = tmp_path / "proj"
    init(root).close()
    cfg = (root / "godwit.toml").read_text()
    cfg = cfg.replace('[cache]\nkind = "local"          # "local" (a folder) or "azure" (a blob container)\n'
                      'path = "cache"          # relative to the project folder\n', "[cache]\n")
    cfg = cfg.replace('[replicas]\nkind = "local"\npath = "replicas"\n', "[replicas]\n")
    cfg = cfg.replace("[cache]\n", _toml("cache", {"kind": "azure", **azurite.options(cache)}), 1)
    cfg = cfg.replace("[replicas]\n", _toml("replicas", {"kind": "azure", **azurite.options(replicas)}), 1)
    (root / "godwit.toml").write_text(cfg)
    p = open_project(root)
    assert p.config.cache.kind == "azure" and p.config.replicas.kind == "azure"

    raw = make_raw(tmp_path / "src.raw", (24 << 20) + 4096, seed=11, writes=30)
    disk = convert(raw, tmp_path / "src.qcow2", "qcow2")
    add_server(p, "web01", [str(disk)])
    replication.start(p, "web01")
    apply_server(p, "web01")
    scribble(disk, seed=12, fmt="qcow2")
    replication.cycle(p, "web01")
    view = tmp_path / "view.raw"
    view.write_bytes(read_view(disk, "qcow2"))
    apply_server(p, "web01")
    assert [rp["number"] for rp in migration.recovery_points(p, "web01")] == [1, 2]
    uid = p.db.server("web01").uid
    assert list(p.store.list(f"servers/{uid}/")) == []  # released from the blob cache

    out = migration.test_migration(p, "web01", fmt="vhd", out_dir=tmp_path / "vhd")
    vhd_file = Path(out.files[0])
    assert subprocess.run(["qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", str(vhd_file), str(view)],
                          capture_output=True).returncode == 0
    info = json.loads(subprocess.run(["qemu-img", "info", "-f", "vpc", "--output=json", str(vhd_file)],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["virtual-size"] == 25 << 20  # rounded up to a whole MiB
    server = p.db.server("web01")
    blob_name = replica_name(server, p.db.disks(server.id)[0]) + ".vhd"
    assert blob_name.startswith("web01-") and server.uid[:12] in blob_name  # keyed by uid (issue 8.1)
    with azurite.service() as svc:
        blob = svc.get_blob_client(replicas, blob_name).download_blob().readall()
    assert blob == vhd_file.read_bytes()

    copy = migration.test_migration(p, "web01", fmt="pageblob", recovery_point="1", out_dir=Path(exports))
    assert copy.files == [f"blob:{exports}/web01-disk0-rp1.vhd"]
    first = migration.test_migration(p, "web01", fmt="vhd", recovery_point="1", out_dir=tmp_path / "vhd1")
    with azurite.service() as svc:
        copied = svc.get_blob_client(exports, "web01-disk0-rp1.vhd").download_blob().readall()
    assert copied == Path(first.files[0]).read_bytes()
    assert migration.verify(p, "web01", "1").ok and migration.verify(p, "web01", "2").ok
    removed = migration.cleanup(p, "web01")
    assert f"blob:{exports}/web01-disk0-rp1.vhd" in removed
    with azurite.service() as svc:
        assert not svc.get_blob_client(exports, "web01-disk0-rp1.vhd").exists()
    p.close()
