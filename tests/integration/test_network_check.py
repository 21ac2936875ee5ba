"""`godwit network check` against real parts: dnsmasq answering the privatelink CNAME chain,
Azurite over HTTPS as the cache account (its certificate for the account's FQDN) and as the
gateway account, tinyproxy on loopback, and the kernel's routing table in a network namespace
the test creates (``ip -n NS route get``: nothing is sent).

The private endpoint lives on 127.0.0.1 here, so the tests that need it to pass give the check a
Router that accepts loopback as private; every other judgement is the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godwit.checks.netcheck_model import NetworkReport
from godwit.checks.network_check import record, run_network_check
from godwit.cli.main import app
from godwit.network.resolve import Resolver
from godwit.network.route import Router
from godwit.project.project import open_project
from godwit.state.network import NetworkRecords
from tests.azurite import Azurite
from tests.integration import netcheck_parts as parts
from tests.integration.netcheck_parts import (
    FQDN,
    PRIVATELINK,
    loopback_is_private,
    loopback_router,
    make_project,
    private,
)
from tests.netservers import Dnsmasq, Tinyproxy, free_port

pytestmark = pytest.mark.azure
# The shared fixtures, by name (pytest finds fixtures among a module's attributes).
fqdn_tls, cache_azurite, dns, proxy = parts.fqdn_tls, parts.cache_azurite, parts.dns, parts.proxy


def status(report: NetworkReport) -> dict[str, str]:
    return {c.id: c.status for c in report.checks}


# -- private endpoint --------------------------------------------------------------------------------

def test_a_correct_private_endpoint_setup_passes_every_check_on_its_route(
        cache_azurite: Azurite, azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", cache_azurite, private(dns, f'proxy = "{proxy.url}"\nbypass = ["{FQDN}"]'),
                     gateway=azurite)
    try:
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(), timeout=3)
    finally:
        p.close()
    seen = status(report)
    assert report.ok, [c for c in report.checks if c.status != "pass"]
    for id_ in ("network.config", "proxy.reach", "dns.cache", "dns.privatelink", "dns.private", "dns.hosts-file",
                "bypass.cache", "bypass.gateway", "bypass.privatelink", "cache.tcp", "cache.tls", "gateway.route",
                "gateway.tcp", "gateway.tls", "bypass.internet-endpoints"):
        assert seen[id_] == "pass", id_
    assert f"{FQDN} → {PRIVATELINK} → 127.0.0.1" in report.get("dns.cache").message  # type: ignore[union-attr]
    assert "private-endpoint 127.0.0.1, direct" in report.get("cache.tcp").message  # type: ignore[union-attr]
    # The gateway went through the proxy; the cache account never did.
    connects = proxy.connects()
    assert f"127.0.0.1:{azurite.port}" in connects and not any(FQDN in c for c in connects)


def test_a_public_answer_fails_with_what_resolved_to_what_and_the_fix_and_the_cli_exits_non_zero(
        cache_azurite: Azurite, dns: Dnsmasq, tmp_path: Path) -> None:
    dns.set_records({PRIVATELINK: ["20.60.1.2"]})
    root = tmp_path / "p"
    make_project(root, cache_azurite, private(dns)).close()
    result = CliRunner().invoke(app, ["network", "check", "--json", "-p", str(root), "--control-endpoint",
                                      f"127.0.0.1:{free_port()}", "--timeout", "2"])
    assert result.exit_code == 60, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"ok", "data_plane", "checks"} and doc["ok"] is False and doc["data_plane"] == "private-endpoint"
    assert all(set(c) == {"id", "status", "message", "fix"} and c["status"] in ("pass", "warn", "fail")
               for c in doc["checks"])
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["dns.private"]["status"] == "fail"
    assert "20.60.1.2 is public, not private" in by_id["dns.private"]["message"]
    assert "VNet link" in by_id["dns.private"]["fix"]
    assert by_id["dns.privatelink"]["status"] == "pass"  # the chain is right; the A record is not
    assert by_id["cache.tcp"]["status"] == "fail" and "not tried" in by_id["cache.tcp"]["message"]
    # The run is recorded for `replicate status`.
    with closing(open_project(root)) as p, p.db.unit() as u:
        last = NetworkRecords(u.connection).last_check()
    assert last is not None and last["ok"] is False and "dns.private" in last["failed"]


def test_a_blanket_blob_bypass_fails_naming_the_gateway_account_in_private_endpoint_mode(
        cache_azurite: Azurite, azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    gateway = "gwsa1234.blob.core.windows.net"
    p = make_project(tmp_path / "p", cache_azurite,
                     private(dns, f'proxy = "{proxy.url}"\nbypass = [".*.blob.core.windows.net"]'),
                     gateway=azurite, gateway_url=f"https://{gateway}")
    try:
        # The gateway's name is not resolvable here: its connection checks are skipped (not run).
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(), timeout=2,
                                   skip=("gateway.tcp", "gateway.tls"))
    finally:
        p.close()
    check = report.get("bypass.gateway")
    assert check is not None and check.status == "fail" and not report.ok
    assert gateway in check.message and "blanket" in check.message and ".*.blob.core.windows.net" in check.message
    assert check.fix is not None and FQDN in check.fix
    assert report.get("gateway.tcp").message == "skipped (--skip)"  # type: ignore[union-attr]
    assert not any("gwsa1234" in c for c in proxy.connects())


def test_without_a_gateway_section_the_blanket_rule_still_fails_for_any_other_account(
        cache_azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", cache_azurite,
                     private(dns, f'proxy = "{proxy.url}"\nbypass = ["*.blob.core.windows.net"]'))
    try:
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(), timeout=2)
    finally:
        p.close()
    check = report.get("bypass.gateway")
    assert check is not None and check.status == "fail" and "gateway account (gwsa" in check.message


def test_a_bypass_entry_naming_the_privatelink_fqdn_is_flagged(
        cache_azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", cache_azurite, private(dns, f'proxy = "{proxy.url}"\nbypass = ["{PRIVATELINK}"]'))
    try:
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(), timeout=2)
    finally:
        p.close()
    flagged = report.get("bypass.privatelink")
    assert flagged is not None and flagged.status == "warn" and PRIVATELINK in flagged.message
    assert flagged.fix is not None and FQDN in flagged.fix
    assert report.get("bypass.cache").status == "warn"  # type: ignore[union-attr]  # nothing covers the account


def test_an_answer_from_the_hosts_file_is_for_testing_only(cache_azurite: Azurite, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 {FQDN}\n")
    p = make_project(tmp_path / "p", cache_azurite, 'data_plane = "private-endpoint"')
    try:
        router = Router(p.config.network, [FQDN], resolver=Resolver(hosts_file=hosts), check=loopback_is_private)
        report = run_network_check(p, router=router, control_endpoints=(), timeout=2)
    finally:
        p.close()
    flagged = report.get("dns.hosts-file")
    assert flagged is not None and flagged.status == "warn" and str(hosts) in flagged.message
    assert "testing only" in (flagged.fix or "")
    assert report.get("dns.private").status == "pass" and report.get("cache.tls").status == "pass"  # type: ignore[union-attr]


def test_the_proxy_down_fails_the_control_plane_checks(cache_azurite: Azurite, azurite: Azurite, dns: Dnsmasq,
                                                       tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    p = make_project(tmp_path / "p", cache_azurite, private(dns, f'proxy = "{dead}"'), gateway=azurite)
    try:
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(), timeout=2)
    finally:
        p.close()
    seen = status(report)
    assert seen["proxy.reach"] == "fail" and seen["gateway.tcp"] == "fail" and "gateway.tls" not in seen
    assert dead in report.get("gateway.tcp").fix  # type: ignore[union-attr, operator]
    assert seen["cache.tcp"] == "pass" and seen["cache.tls"] == "pass"  # the data plane needs no proxy


def test_a_control_endpoint_whose_certificate_fails_names_what_the_tunnel_presented(
        cache_azurite: Azurite, azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    # Azurite's certificate comes from a throwaway CA that the system does not trust: as a
    # TLS-inspecting proxy's would.
    p = make_project(tmp_path / "p", cache_azurite, private(dns, f'proxy = "{proxy.url}"'))
    try:
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(f"127.0.0.1:{azurite.port}",),
                                   timeout=3)
    finally:
        p.close()
    tcp, tls = report.get("control.127.0.0.1.tcp"), report.get("control.127.0.0.1.tls")
    assert tcp is not None and tcp.status == "pass" and f"via proxy {proxy.url}" in tcp.message
    assert tls is not None and tls.status == "fail"
    assert "issued by" in tls.message and f"CONNECT tunnel of proxy {proxy.url}" in tls.message


# -- Microsoft peering: the kernel's route and the route filter ------------------------------------------

@pytest.fixture
def edge_ns() -> Iterator[str]:
    """A namespace with an ExpressRoute edge (er0, 20.60.0.0/16 via 192.0.2.2) and an internet
    default route (inet0 via 198.51.100.254), each a veth pair whose both ends stay inside it."""
    ns = f"gwnc{os.getpid() % 100000}"
    ip = ["ip", "-n", ns]
    steps = [["ip", "netns", "add", ns]]
    for dev, addr in (("er0", "192.0.2.1/30"), ("inet0", "198.51.100.1/24")):
        steps += [[*ip, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p"],
                  [*ip, "addr", "add", addr, "dev", dev], [*ip, "link", "set", dev, "up"],
                  [*ip, "link", "set", f"{dev}p", "up"]]
    steps += [["ip", "-n", ns, "route", "add", "default", "via", "198.51.100.254", "dev", "inet0"],
              ["ip", "-n", ns, "route", "add", "20.60.0.0/16", "via", "192.0.2.2", "dev", "er0"]]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def peering(dns: Dnsmasq, communities: Sequence[str]) -> str:
    listed = ", ".join(f'"{c}"' for c in communities)
    return (f'data_plane = "microsoft-peering"\ndns_servers = ["{dns.address}:{dns.port}"]\n'
            f'bypass = [".*.blob.core.windows.net"]\nexpressroute_interface = "er0"\n'
            f'expressroute_next_hop = "192.0.2.2"\nsource_region = "westeurope"\ntarget_region = "northeurope"\n'
            f"route_filter_communities = [{listed}]")


def peering_report(cache: Azurite, dns: Dnsmasq, ns: str, root: Path, communities: Sequence[str]) -> NetworkReport:
    p = make_project(root, cache, peering(dns, communities), gateway=None)
    try:
        # Public addresses: no connection is tried (skipped), only the kernel is asked.
        return run_network_check(p, control_endpoints=(), ip_argv=("ip", "-n", ns),
                                 skip=("cache.tcp", "cache.tls"), timeout=2)
    finally:
        p.close()


def test_microsoft_peering_passes_when_the_kernel_routes_the_account_by_the_circuit(
        cache_azurite: Azurite, tmp_path: Path, edge_ns: str) -> None:
    from godwit.checks.plan import regions

    dns = Dnsmasq(tmp_path / "dns")
    dns.start({FQDN: ["20.60.1.2"]})
    try:
        need = [regions.lookup("s", "westeurope").community, regions.lookup("t", "northeurope").community,
                "12076:5060"]
        report = peering_report(cache_azurite, dns, edge_ns, tmp_path / "p", need)
    finally:
        dns.close()
    seen = status(report)
    assert report.ok, [c for c in report.checks if c.status == "fail"]
    assert seen["route.expressroute"] == "pass" and "20.60.1.2 via 192.0.2.2 dev er0" in \
        report.get("route.expressroute").message  # type: ignore[union-attr]
    assert seen["route.communities"] == "pass" and seen["dns.public"] == "pass"
    assert seen["bypass.cache"] == "pass" and seen["bypass.gateway"] == "pass"  # the documented blanket rule


def test_microsoft_peering_fails_on_the_default_route_and_a_missing_community(
        cache_azurite: Azurite, tmp_path: Path, edge_ns: str) -> None:
    from godwit.checks.plan import regions

    dns = Dnsmasq(tmp_path / "dns")
    dns.start({FQDN: ["13.1.2.3"]})  # outside what the circuit carries
    try:
        report = peering_report(cache_azurite, dns, edge_ns, tmp_path / "p",
                                [regions.lookup("s", "westeurope").community])
    finally:
        dns.close()
    route, comm = report.get("route.expressroute"), report.get("route.communities")
    assert route is not None and route.status == "fail" and "13.1.2.3 via 198.51.100.254 dev inet0" in route.message
    assert "internet default route" in route.message
    assert comm is not None and comm.status == "fail" and "12076:5060" in comm.message
    assert regions.lookup("t", "northeurope").community in comm.message and "learn.microsoft.com" in (comm.fix or "")


def test_record_keeps_the_last_run(cache_azurite: Azurite, dns: Dnsmasq, tmp_path: Path) -> None:
    p = make_project(tmp_path / "p", cache_azurite, private(dns))
    try:
        report = run_network_check(p, router=loopback_router(p), control_endpoints=(), timeout=2)
        record(p, report)
        with p.db.unit() as u:
            last = NetworkRecords(u.connection).last_check()
        assert last is not None and last["ok"] is report.ok and last["data_plane"] == "private-endpoint"
        assert any("network check" in e.message for e in p.db.events())
    finally:
        p.close()


# -- the bypass judgements alone (the Router's own matcher, no traffic) ---------------------------------

def _router(data_plane: str, proxy: str, bypass: Sequence[str]) -> Router:
    from godwit.config.network import NetworkConfig, parse_bypass_entry

    entries = tuple(parse_bypass_entry(e) for e in bypass)
    return Router(NetworkConfig(data_plane=data_plane, proxy=proxy, bypass=entries, configured=True), [FQDN])


def test_microsoft_peering_without_a_bypass_for_the_cache_fails_and_a_bypassed_sign_in_warns() -> None:
    from godwit.checks import netcheck_bypass as b

    router = _router(data_plane="microsoft-peering", proxy="http://proxy.corp:3128",
                     bypass=["login.microsoftonline.com", "*.microsoft.com"])
    cache = b.cache_bypass(router, FQDN, 443)
    assert cache.status == "fail" and "over the internet, not over the circuit" in cache.message
    assert cache.fix is not None and FQDN in cache.fix
    endpoints = b.internet_only(router)
    assert endpoints.status == "warn" and "login.microsoftonline.com" in endpoints.message
    assert "graph.microsoft.com (*.microsoft.com) by '*.microsoft.com'" in endpoints.message
    fixed = _router(data_plane="microsoft-peering", proxy="http://proxy.corp:3128", bypass=[".*.blob.core.windows.net"])
    assert b.cache_bypass(fixed, FQDN, 443).status == "pass" and b.internet_only(fixed).status == "pass"


def test_a_regex_bypass_that_covers_the_gateway_fails_in_private_endpoint_mode_but_not_an_exact_one() -> None:
    from godwit.checks import netcheck_bypass as b

    gateway = "gwsa77.blob.core.windows.net"
    regex = _router(data_plane="private-endpoint", proxy="http://proxy.corp:3128",
                    bypass=[r"(lsa|gwsa)[0-9]+\.blob\.core\.windows\.net"])
    check = b.gateway_bypass(regex, "lsa1.blob.core.windows.net", gateway)
    assert check.status == "fail" and gateway in check.message
    exact = _router(data_plane="private-endpoint", proxy="http://proxy.corp:3128", bypass=[FQDN])
    assert b.gateway_bypass(exact, FQDN, gateway).status == "pass"
    assert b.gateway_bypass(exact, FQDN, None).status == "pass"
