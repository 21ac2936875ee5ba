"""Acceptance (issue 9): a full replicate → mover → test migration with the cache account behind a
private endpoint. Replication bytes cross the ExpressRoute link only; the gateway account's state
and every other control-plane request cross the internet link only, through the proxy."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.helpers import scribble
from tests.netns import CONTROL_ENDPOINTS, Counters, LinkBytes, Topology
from tests.network.project import (
    DATA,
    MIB,
    NetProject,
    make_disk,
    make_project,
    private_endpoint,
    step,
)

pytestmark = [pytest.mark.network, pytest.mark.azure]

ZERO = Counters(LinkBytes(0, 0), LinkBytes(0, 0))


def run_flow(p: NetProject, tmp_path: Path) -> dict[str, Counters]:
    """server add → initial cycle → mover → a change, delta cycle, mover → test migration to a VHD,
    which must equal the source disk. The bytes each step moved."""
    disk = make_disk(tmp_path / "web01.raw")
    moved = {"add": step(p, "server", "add", "web01", "--disk", str(disk), "--disk-format", "raw"),
             "start": step(p, "replicate", "start", "web01"),
             "mover": step(p, "mover", "run", "--once")}
    scribble(disk, seed=6, writes=8)
    moved["delta"] = step(p, "replicate", "cycle", "web01")
    moved["mover2"] = step(p, "mover", "run", "--once")
    out = tmp_path / "export"
    moved["migrate"] = step(p, "migrate", "web01", "--test", "--format", "vhd", "--out", str(out))
    vhd = out / "web01-disk0.vhd"
    assert subprocess.run(["qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", str(vhd), str(disk)],
                          capture_output=True).returncode == 0, "the test migration differs from the source"
    return moved


def assert_replication_on_private_link(moved: dict[str, Counters]) -> None:
    assert moved["start"].private.tx >= DATA, moved["start"]  # packs up
    assert moved["mover"].private.rx >= DATA, moved["mover"]  # packs down again ...
    assert moved["mover"].private.tx >= DATA, moved["mover"]  # ... into the page-blob replica
    assert moved["migrate"].private.rx >= DATA, moved["migrate"]  # the replica read for the export


def test_baseline_godwit_reaches_the_cache_by_name_without_a_network_section(net: Topology,
                                                                             tmp_path: Path) -> None:
    """The harness serves godwit as it is: DNS gives the private address, every byte goes there."""
    p = make_project(net, tmp_path / "proj", network=None, gateway=False)
    connects_before = len(net.proxy_connects())
    moved = run_flow(p, tmp_path)
    assert_replication_on_private_link(moved)
    assert sum(moved.values(), ZERO).internet.total == 0
    assert net.proxy_connects()[connects_before:] == []


def test_network_check_passes_on_the_planned_topology(net: Topology, tmp_path: Path) -> None:
    p = make_project(net, tmp_path / "proj", network=private_endpoint(net))
    check = p.godwit("network", "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] is True and report["data_plane"] == "private-endpoint"
    assert {c["status"] for c in report["checks"]} <= {"pass", "warn"}, report
    ids = [c["id"] for c in report["checks"]]
    assert len(ids) == len(set(ids)), "check ids must be unique"
    assert all(set(c) >= {"id", "status", "message", "fix"} for c in report["checks"])


def test_replication_over_the_private_link_and_control_through_the_proxy(net: Topology, tmp_path: Path) -> None:
    p = make_project(net, tmp_path / "proj", network=private_endpoint(net))
    connects_before = len(net.proxy_connects())
    moved = run_flow(p, tmp_path)
    assert_replication_on_private_link(moved)
    total = sum(moved.values(), ZERO)
    # Not one pack through the proxy: the internet link carried a few control requests only ...
    assert total.internet.total < 2 * MIB, total
    # ... among them the gateway account's state after every cycle, through the proxy.
    assert moved["start"].internet.tx > 0 and moved["delta"].internet.tx > 0
    connects = net.proxy_connects()[connects_before:]
    allowed = {f"{net.gateway.fqdn}:443", *(f"{host}:443" for host in CONTROL_ENDPOINTS)}
    assert f"{net.gateway.fqdn}:443" in connects and set(connects) <= allowed, connects
    states = p.gateway_blobs()
    assert any(b"web01" in body for body in states.values()), sorted(states)
    # Every cycle recorded the path it used.
    status = p.godwit("replicate", "status", "--json")
    assert status.returncode == 0 and re.search(r"private[-_ ]endpoint", status.stdout), status.stdout
