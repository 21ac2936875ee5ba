"""The Router's decision per URL, the private-path refusals and their fixes, and the watch on the
cache account's answer, with a resolver the test controls (the real DNS is in test_network_resolve)."""

from __future__ import annotations

import ipaddress
import time

import pytest

from godwit.config.network import NetworkConfig, parse_bypass_entry
from godwit.errors import NetworkPolicyError
from godwit.network.resolve import Resolution
from godwit.network.route import AnswerChange, Router, data_host_of

CACHE = "lsacontoso01.blob.core.windows.net"
GATEWAY = "gwsacontoso01.blob.core.windows.net"
PL = "lsacontoso01.privatelink.blob.core.windows.net"
PROXY = "http://proxy.corp.example:3128"


class FakeDNS:
    def __init__(self, *addresses: str, chain: tuple[str, ...] = (CACHE, PL), from_hosts: bool = False) -> None:
        self.set(*addresses, chain=chain, from_hosts=from_hosts)
        self.calls = 0

    def set(self, *addresses: str, chain: tuple[str, ...] = (CACHE, PL), from_hosts: bool = False) -> None:
        self.addresses = tuple(ipaddress.ip_address(a) for a in addresses)
        self.chain = chain
        self.from_hosts = from_hosts

    def __call__(self, host: str) -> Resolution:
        self.calls += 1
        source = "hosts file /etc/hosts" if self.from_hosts else "DNS 10.1.0.4"
        return Resolution(host, self.chain, self.addresses, self.from_hosts, source, ttl=30, at=time.monotonic())


def router(dns: FakeDNS, **kw: object) -> Router:
    net = NetworkConfig(**{"data_plane": "private-endpoint", "proxy": PROXY, "configured": True, **kw})  # type: ignore[arg-type]
    return Router(net, [CACHE], resolver=dns, answer_cache_seconds=0)


def test_the_plane_is_decided_by_host() -> None:
    r = router(FakeDNS("10.1.0.5"))
    assert r.route(f"https://{CACHE}/c/pack?sig=x").plane == "data"
    assert r.route(f"https://{CACHE.upper()}./c").plane == "data"
    for url in (f"https://{GATEWAY}/state", "https://login.microsoftonline.com/t/oauth2/v2.0/token",
                "https://management.azure.com/subscriptions"):
        assert r.route(url).plane == "control"


def test_private_endpoint_pins_the_checked_address_directly() -> None:
    r = router(FakeDNS("10.1.0.6", "10.1.0.5"))
    route = r.route(f"https://{CACHE}/c/x")
    assert str(route.pinned) == "10.1.0.5" and route.proxy is None and route.port == 443
    assert route.path == "private-endpoint 10.1.0.5, direct"
    assert r.last_data_route == route


def test_control_plane_uses_the_proxy_unless_bypassed() -> None:
    r = router(FakeDNS("10.1.0.5"), bypass=(parse_bypass_entry("*.corp.example"),))
    assert r.route(f"https://{GATEWAY}/x").proxy == PROXY
    direct = r.route("https://git.corp.example/x")
    assert direct.proxy is None and direct.rule == "*.corp.example"


def test_a_blanket_bypass_does_not_take_the_cache_off_the_private_path() -> None:
    r = router(FakeDNS("10.1.0.5"), bypass=(parse_bypass_entry("*.blob.core.windows.net"),))
    assert r.route(f"https://{CACHE}/x").pinned is not None
    assert r.route(f"https://{GATEWAY}/x").proxy is None  # what `network check` fails on


@pytest.mark.parametrize("mode", ["internet", "microsoft-peering"])
def test_other_modes_route_the_data_plane_by_the_bypass_list(mode: str) -> None:
    dns = FakeDNS("20.60.1.2")
    r = router(dns, data_plane=mode, bypass=(parse_bypass_entry(".*.blob.core.windows.net"),))
    route = r.route(f"https://{CACHE}/x")
    assert route.plane == "data" and route.pinned is None and route.proxy is None
    assert route.path == f"{mode}, direct" and dns.calls == 0
    assert router(dns, data_plane=mode).route(f"https://{CACHE}/x").proxy == PROXY


@pytest.mark.parametrize("addresses, chain, from_hosts, problem, fix", [
    (("20.60.1.2",), (CACHE, "blob.ams07prdstr02a.store.core.windows.net"), False, "20.60.1.2 is public",
     "private DNS zone privatelink.blob.core.windows.net with its VNet link"),
    (("20.60.1.2",), (CACHE, PL, "blob.ams07.store.core.windows.net"), False, "20.60.1.2 is public",
     "conditional forwarder"),
    (("10.1.0.5", "20.60.1.2"), (CACHE, PL), False, "20.60.1.2 is public", "VNet link"),
    (("10.9.0.5",), (CACHE, PL), False, "outside private_cidrs", "fix the A record"),
    (("8.8.8.8",), (CACHE,), True, "8.8.8.8 is public", "the hosts file"),
    ((), (CACHE, PL), False, "no address", "VNet link"),
])
def test_a_non_private_answer_is_refused_with_what_resolved_and_the_fix(
        addresses: tuple[str, ...], chain: tuple[str, ...], from_hosts: bool, problem: str, fix: str) -> None:
    r = router(FakeDNS(*addresses, chain=chain, from_hosts=from_hosts),
               private_cidrs=(ipaddress.ip_network("10.1.0.0/24"),))
    with pytest.raises(NetworkPolicyError) as err:
        r.route(f"https://{CACHE}/c/pack")
    assert problem in str(err.value) and " → ".join(chain) in str(err.value)
    assert fix in (err.value.hint or "")
    assert r.last_data_route is None


def test_every_address_must_be_private_ipv6_included() -> None:
    with pytest.raises(NetworkPolicyError, match="2603:1000::1 is public"):
        router(FakeDNS("10.1.0.5", "2603:1000::1")).route(f"https://{CACHE}/x")
    assert router(FakeDNS("fd00::5")).route(f"https://{CACHE}/x").pinned == ipaddress.ip_address("fd00::5")


def test_an_ip_literal_cache_url_is_checked_like_an_answer() -> None:
    net = NetworkConfig(data_plane="private-endpoint", configured=True)
    assert Router(net, ["10.1.0.5"]).route("https://10.1.0.5:443/acct/c").pinned == ipaddress.ip_address("10.1.0.5")
    with pytest.raises(NetworkPolicyError, match="public"):
        Router(net, ["20.60.1.2"]).route("https://20.60.1.2/acct/c")
    assert data_host_of("https://LSA1.blob.core.windows.net:10000") == "lsa1.blob.core.windows.net"


def test_a_changed_answer_is_recorded_once_and_the_next_cycle_refuses_until_acknowledged() -> None:
    dns = FakeDNS("10.1.0.5")
    seen: list[AnswerChange] = []
    r = router(dns)
    r.on_change = seen.append
    r.route(f"https://{CACHE}/x")
    dns.set("10.1.0.7")
    for _ in range(3):
        assert str(r.route(f"https://{CACHE}/x").pinned) == "10.1.0.7"  # still private: this cycle goes on
    assert len(seen) == 1 and r.changes() == tuple(seen) and not seen[0].problems
    assert "changed from 10.1.0.5 to" in seen[0].describe() and "still private" in seen[0].describe()
    with pytest.raises(NetworkPolicyError, match="changed while replicating"):
        r.refuse_if_changed()
    r.acknowledge()
    r.refuse_if_changed()
    dns.set("10.1.0.5")  # a change against the new baseline is a change again
    r.route(f"https://{CACHE}/x")
    assert len(seen) == 2


def test_answers_are_cached_within_their_ttl() -> None:
    dns = FakeDNS("10.1.0.5")
    r = Router(NetworkConfig(data_plane="private-endpoint", configured=True), [CACHE], resolver=dns,
               answer_cache_seconds=60)
    for _ in range(5):
        r.route(f"https://{CACHE}/x")
    assert dns.calls == 1
