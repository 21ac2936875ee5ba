"""Acceptance (issue 9), the negative cases: a public answer for the cache account is refused
before a byte leaves; a blanket ``*.blob.core.windows.net`` bypass fails ``network check`` by
naming the gateway account; with the proxy down the control plane fails clearly while replication
data, which never needs the proxy, still flows; DNS that changes mid-replication is an event, and
the next cycle refuses."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.netns import PUBLIC_ADDRESS, Topology
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


def _project(net: Topology, tmp_path: Path, **network: Any) -> NetProject:
    return make_project(net, tmp_path / "proj", network=private_endpoint(net, **network))


def _with_server(p: NetProject, tmp_path: Path) -> Path:
    disk = make_disk(tmp_path / "web01.raw")
    step(p, "server", "add", "web01", "--disk", str(disk), "--disk-format", "raw")
    return disk


def _check(p: NetProject) -> dict[str, Any]:
    """`network check --json`, which must exit non-zero here, and its failed checks."""
    proc = p.godwit("network", "check", "--json")
    assert "Traceback" not in proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode != 0 and report["ok"] is False, proc.stdout
    assert all(set(c) >= {"id", "status", "message", "fix"} for c in report["checks"])
    return report


def _failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["status"] == "fail"]


PUBLIC_ANSWERS = pytest.mark.parametrize("privatelink", [True, False],
                                         ids=["privatelink-zone-holds-public", "no-private-zone"])


@PUBLIC_ANSWERS
def test_public_answer_is_refused_before_a_byte_leaves(net: Topology, tmp_path: Path, privatelink: bool) -> None:
    p = _project(net, tmp_path)
    _with_server(p, tmp_path)
    net.set_cache_answer(PUBLIC_ADDRESS, privatelink=privatelink)
    before = net.link_bytes()
    proc = p.godwit("replicate", "start", "web01")
    moved = net.link_bytes() - before
    said = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in said
    assert net.cache.fqdn in said and PUBLIC_ADDRESS in said, said  # what resolved to what
    assert (moved.private.total, moved.internet.total) == (0, 0), moved


@PUBLIC_ANSWERS
def test_public_answer_fails_network_check(net: Topology, tmp_path: Path, privatelink: bool) -> None:
    p = _project(net, tmp_path)
    net.set_cache_answer(PUBLIC_ADDRESS, privatelink=privatelink)
    failed = _failed(_check(p))
    assert any(PUBLIC_ADDRESS in c["message"] and c["fix"] for c in failed), failed
    if not privatelink:
        assert any("privatelink.blob.core.windows.net" in (c["fix"] or "") + c["message"] for c in failed), failed


@pytest.mark.parametrize("pattern", ["*.blob.core.windows.net", ".*.blob.core.windows.net"])
def test_blanket_blob_bypass_fails_the_check_naming_the_gateway(net: Topology, tmp_path: Path,
                                                                 pattern: str) -> None:
    p = _project(net, tmp_path, bypass=[pattern])
    failed = _failed(_check(p))
    assert any(net.gateway.name in c["message"] for c in failed), failed


def test_proxy_down_fails_the_control_plane_while_data_flows(net: Topology, tmp_path: Path) -> None:
    p = _project(net, tmp_path)
    _with_server(p, tmp_path)
    net.stop_proxy()
    before = net.link_bytes()
    proc = p.godwit("replicate", "start", "web01")
    moved = net.link_bytes() - before
    assert "Traceback" not in proc.stdout + proc.stderr
    assert moved.private.tx >= DATA, moved  # the cycle's packs went on the private link
    [status] = p.json("replicate", "status")
    assert status["last_cycle"] == 1, status  # and the cycle committed
    # The control plane says what failed, and where: the gateway account through this proxy.
    said = proc.stdout + proc.stderr + p.events_text()
    proxy = net.proxy_url.removeprefix("http://")
    assert net.gateway.name in said and proxy in said, said
    # The mover needs no proxy either.
    assert step(p, "mover", "run", "--once").private.rx >= DATA


def test_proxy_down_fails_network_check_naming_the_proxy(net: Topology, tmp_path: Path) -> None:
    p = _project(net, tmp_path)
    net.stop_proxy()
    failed = _failed(_check(p))
    proxy = net.proxy_url.removeprefix("http://")
    assert any(proxy in c["message"] for c in failed), failed


def test_dns_change_mid_replication_is_an_event_and_the_next_cycle_refuses(net: Topology,
                                                                           tmp_path: Path) -> None:
    p = make_project(net, tmp_path / "proj", network=private_endpoint(net), throttle_mbps=40)  # ~3.4 s
    disk = _with_server(p, tmp_path)
    connects_before = len(net.proxy_connects())
    before = net.link_bytes()
    cycle = p.popen("replicate", "start", "web01")
    try:
        while (net.link_bytes() - before).private.tx < 4 * MIB:  # the first pack is up
            assert cycle.poll() is None, "the cycle ended before DNS could change"
            time.sleep(0.05)
        net.set_cache_answer(PUBLIC_ADDRESS)
        assert cycle.poll() is None, "the cycle ended before DNS changed: slow it down"
        _, errors = cycle.communicate(timeout=120)
    finally:
        if cycle.poll() is None:
            cycle.kill()
            cycle.wait()
    assert "Traceback" not in errors
    assert PUBLIC_ADDRESS in p.events_text()  # the change is an event

    disk.write_bytes(disk.read_bytes()[::-1])  # something to send
    before = net.link_bytes()
    nxt = p.godwit("replicate", "cycle", "web01")
    moved = net.link_bytes() - before
    assert nxt.returncode != 0 and PUBLIC_ADDRESS in nxt.stdout + nxt.stderr, nxt.stdout + nxt.stderr
    assert moved.private.total == 0, moved
    assert f"{net.cache.fqdn}:443" not in net.proxy_connects()[connects_before:]  # never around, either
