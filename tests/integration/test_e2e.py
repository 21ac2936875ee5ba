"""End to end through the CLI: two disks (raw ext4 + qcow2), five cycles with file changes, the
mover, test migrations at recovery point 3 and latest, a planned migration; every output equal to
the source's point-in-time view (qemu-img compare) and the filesystem clean (e2fsck -fn)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.demo.walkthrough import _change_files, _compare, _fsck, _make_sample, _view

pytestmark = [pytest.mark.slow, pytest.mark.both_databases, pytest.mark.usefixtures("database_env")]


def godwit(root: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(root / "proj")],
                          capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, f"godwit {' '.join(args)}: {proc.stderr}"
    return proc


def test_two_disks_five_cycles_migrations(tmp_path: Path) -> None:
    rng = random.Random(7)
    system, data = _make_sample(tmp_path, rng)
    subprocess.run([sys.executable, "-m", "godwit", "init", str(tmp_path / "proj")], check=True,
                   capture_output=True)
    cfg = tmp_path / "proj" / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("keep_recovery_points = 3", "keep_recovery_points = 4"))
    godwit(tmp_path, "server", "add", "web01", "--disk", str(system), "--disk", str(data))
    listed = json.loads(godwit(tmp_path, "server", "list", "--json").stdout)
    assert [d["format"] for d in listed[0]["disks"]] == ["raw", "qcow2"]

    views = tmp_path / "views"
    views.mkdir()
    godwit(tmp_path, "replicate", "start", "web01", "--json")
    for n in range(1, 6):
        if n > 1:
            _change_files(tmp_path, system, data, rng, n)
            res = json.loads(godwit(tmp_path, "replicate", "cycle", "web01", "--json").stdout)
            assert res["number"] == n and res["bytes_sent"] > 0
        _view(system, "raw", views / f"c{n}-d0.raw")
        _view(data, "qcow2", views / f"c{n}-d1.raw")
        godwit(tmp_path, "mover", "run", "--once", "--json")

    status = json.loads(godwit(tmp_path, "replicate", "status", "web01", "--json").stdout)[0]
    assert status["last_cycle"] == 5 and status["latest_recovery_point"] == 5
    assert [d["bytes_stored"] for d in status["disks"]] == [0, 0]  # everything applied and released
    assert all(d["bytes_read"] > 0 and d["throughput_bps"] for d in status["disks"])
    assert status["rpo_seconds"] is not None and status["cycles"][-1]["bottleneck"] in (
        "source", "cpu", "store", "throttle", "none")
    points = [p["number"] for p in json.loads(godwit(tmp_path, "recovery-points", "web01", "--json").stdout)]
    assert points == [2, 3, 4, 5]

    for rp, fmt in (("3", "vhd"), ("latest", "qcow2")):
        out = tmp_path / f"test-{rp}"
        res = json.loads(godwit(tmp_path, "migrate", "web01", "--test", "--recovery-point", rp, "--format", fmt,
                                "--out", str(out), "--json").stdout)
        n = 5 if rp == "latest" else int(rp)
        assert res["files"] == [str(out / f"web01-disk{i}.{fmt}") for i in range(2)]
        for i, f in enumerate(res["files"]):
            assert _compare(Path(f), fmt, views / f"c{n}-d{i}.raw"), f"rp {rp} disk {i}"
        assert _fsck(Path(res["files"][0]), fmt)
        godwit(tmp_path, "verify", "web01", "--recovery-point", str(n))
        if fmt == "vhd":
            info = json.loads(subprocess.run(["qemu-img", "info", "-f", "vpc", "--output=json", res["files"][1]],
                                             capture_output=True, text=True, check=True).stdout)
            assert info["virtual-size"] % (1 << 20) == 0 and info["virtual-size"] >= 96 << 20
    godwit(tmp_path, "migrate", "cleanup", "web01")
    assert not (tmp_path / "test-3" / "web01-disk0.vhd").exists()

    _change_files(tmp_path, system, data, rng, 6)
    res = json.loads(godwit(tmp_path, "migrate", "web01", "--format", "raw", "--out", str(tmp_path / "final"),
                            "--shutdown-command", "true", "--json").stdout)
    assert res["kind"] == "planned" and res["recovery_point"] == 6
    _view(system, "raw", views / "final-d0.raw")
    _view(data, "qcow2", views / "final-d1.raw")
    for i, f in enumerate(res["files"]):
        assert _compare(Path(f), "raw", views / f"final-d{i}.raw")
    assert _fsck(Path(res["files"][0]), "raw")
    listed = json.loads(godwit(tmp_path, "server", "list", "--json").stdout)
    assert listed[0]["state"] == "migrated"
    again = godwit(tmp_path, "replicate", "cycle", "web01", ok=False)
    assert again.returncode != 0 and "migrated" in again.stderr
