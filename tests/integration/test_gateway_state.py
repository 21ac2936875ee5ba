"""After every cycle the server's state goes to the gateway account on the control plane (through
the proxy, never the private path), and the cycle's data-plane path is recorded for
``replicate status``. Azurite over HTTPS is the cache account (on its private endpoint, 127.0.0.1,
reached by its FQDN through dnsmasq's privatelink chain) and, path-style, the gateway account
behind tinyproxy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from godwit.cli.main import app
from godwit.engine import lifecycle as replication
from godwit.engine.gateway_state import state_key
from godwit.engine.inventory import add_server
from godwit.project.project import Project
from tests.azurite import Azurite
from tests.helpers import make_raw, write_at
from tests.integration import netcheck_parts as parts
from tests.integration.netcheck_parts import FQDN, loopback_router, make_project, private
from tests.netservers import Dnsmasq, Tinyproxy, free_port

pytestmark = pytest.mark.azure
fqdn_tls, cache_azurite, dns, proxy = parts.fqdn_tls, parts.cache_azurite, parts.dns, parts.proxy


def containers(cache: Azurite, gateway: Azurite) -> tuple[str, str]:
    return cache.new_container("cache"), gateway.new_container("state")


def project_for(tmp_path: Path, cache: Azurite, gateway: Azurite, network: str, **kw: Any) -> Project:
    cache_c, state_c = containers(cache, gateway)
    p = make_project(tmp_path / "p", cache, network, gateway=gateway, container=cache_c, gateway_container=state_c,
                     **kw)
    p._router = loopback_router(p)  # loopback stands in for the private endpoint's subnet
    return p


def gateway_doc(gateway: Azurite, container: str, name: str) -> dict[str, Any]:
    with gateway.service() as svc:
        doc: dict[str, Any] = json.loads(svc.get_blob_client(container, state_key(name)).download_blob().readall())
    return doc


def test_every_cycle_writes_the_status_to_the_gateway_through_the_proxy_and_records_its_path(
        cache_azurite: Azurite, azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    p = project_for(tmp_path, cache_azurite, azurite, private(dns, f'proxy = "{proxy.url}"'))
    state_c = p.config.gateway["container"]
    try:
        disk = make_raw(tmp_path / "web01.raw", 4 << 20, seed=3)
        add_server(p, "web01", [str(disk)])
        first = replication.start(p, "web01")
        assert first is not None
        doc = gateway_doc(azurite, state_c, "web01")
        assert doc["format"] == 1 and doc["server"] == "web01"
        assert doc["status"]["server"] == "web01" and doc["status"]["last_cycle"] == 1
        write_at(disk, 1 << 20, b"changed" * 1000)
        second = replication.cycle(p, "web01")
        assert gateway_doc(azurite, state_c, "web01")["status"]["last_cycle"] == second.number == 2
        net = replication.status(p, "web01")[0].network
        assert net.path == "private endpoint, direct to 127.0.0.1" and net.proxied is False
        assert net.data_plane == "private-endpoint" and net.cycle == 2 and net.bytes_sent == second.bytes_sent
        assert net.last_check is None
    finally:
        p.close()
    # The state went through the proxy; the replication data did not.
    connects = proxy.connects()
    assert f"127.0.0.1:{azurite.port}" in connects and not any(FQDN in c for c in connects)
    # `replicate status` shows the path; after a `network check` also when it ran.
    root = str(tmp_path / "p")
    shown = CliRunner().invoke(app, ["replicate", "status", "-p", root])
    assert shown.exit_code == 0, shown.output
    assert "web01 network: private endpoint, direct to 127.0.0.1" in shown.stdout and "last network check: never" in \
        shown.stdout
    CliRunner().invoke(app, ["network", "check", "-p", root, "--control-endpoint", f"127.0.0.1:{free_port()}",
                             "--timeout", "1"])
    doc = json.loads(CliRunner().invoke(app, ["replicate", "status", "--json", "-p", root]).stdout)
    assert doc[0]["network"]["last_check"] is not None and doc[0]["network"]["last_check_ok"] is False


def test_the_proxy_down_stops_the_state_not_the_replication(
        cache_azurite: Azurite, azurite: Azurite, dns: Dnsmasq, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    p = project_for(tmp_path, cache_azurite, azurite, private(dns, f'proxy = "{dead}"'))
    try:
        add_server(p, "db01", [str(make_raw(tmp_path / "db01.raw", 2 << 20, seed=4))])
        res = replication.start(p, "db01")
        assert res is not None and res.bytes_sent > 0  # the data plane needs no proxy
        assert p.db.cycle(p.db.server("db01").id, 1).state == "committed"
        errors = [e.message for e in p.db.events("db01") if e.level == "error"]
        assert any("not written to the gateway account" in m and dead in m for m in errors), errors
    finally:
        p.close()
    with azurite.service() as svc:
        assert not svc.get_blob_client(p.config.gateway["container"], state_key("db01")).exists()


def test_a_gateway_that_names_the_cache_account_is_refused(
        cache_azurite: Azurite, dns: Dnsmasq, tmp_path: Path) -> None:
    p = project_for(tmp_path, cache_azurite, cache_azurite, private(dns),
                    gateway_url=f"https://{FQDN}:{cache_azurite.port}")
    try:
        add_server(p, "app01", [str(make_raw(tmp_path / "app01.raw", 1 << 20, seed=5))])
        replication.start(p, "app01")
        errors = [e.message for e in p.db.events("app01")]
        assert any("names the cache account's host" in m for m in errors), errors
    finally:
        p.close()
    with cache_azurite.service() as svc:
        assert not svc.get_blob_client(p.config.gateway["container"], state_key("app01")).exists()


def test_without_a_gateway_nothing_is_written_and_the_path_is_still_recorded(
        cache_azurite: Azurite, dns: Dnsmasq, tmp_path: Path) -> None:
    cache_c = cache_azurite.new_container("cache")
    p = make_project(tmp_path / "p", cache_azurite, private(dns), container=cache_c)
    p._router = loopback_router(p)
    try:
        add_server(p, "web02", [str(make_raw(tmp_path / "web02.raw", 1 << 20, seed=6))])
        replication.start(p, "web02")
        assert replication.status(p, "web02")[0].network.path == "private endpoint, direct to 127.0.0.1"
        assert not [e for e in p.db.events("web02") if e.level in ("error", "warning")]
    finally:
        p.close()
