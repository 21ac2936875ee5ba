"""DNS as godwit sees it, against a real dnsmasq on loopback; the hosts file; private addresses."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from godwit.config.network import PRIVATE_RANGES, DnsServer, is_private
from godwit.errors import NetworkPolicyError
from godwit.network.addresses import answer_problems, describe
from godwit.network.resolve import Resolver, hosts_lookup
from tests.netservers import Dnsmasq, free_port

CACHE = "lsacontoso01.blob.core.windows.net"
PL = "lsacontoso01.privatelink.blob.core.windows.net"


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dns", cnames={CACHE: PL})
    server.start({PL: ["10.1.0.5", "fd00::5"], "plain.example": ["192.168.7.7"]})
    try:
        yield server
    finally:
        server.close()


def via(dns: Dnsmasq, **kw: object) -> Resolver:
    return Resolver((DnsServer(ipaddress.ip_address(dns.address), dns.port),), **kw)  # type: ignore[arg-type]


def test_the_cname_chain_and_every_address_are_returned(dns: Dnsmasq) -> None:
    res = via(dns)(CACHE.upper() + ".")
    assert res.name == CACHE and res.chain == (CACHE, PL)
    assert res.addresses == (ipaddress.ip_address("10.1.0.5"), ipaddress.ip_address("fd00::5"))
    assert not res.from_hosts and res.source == "DNS 127.0.0.1"
    assert res.describe() == f"{CACHE} → {PL} → 10.1.0.5, fd00::5 (from DNS 127.0.0.1)"


def test_a_changed_record_is_seen_at_once(dns: Dnsmasq) -> None:
    r = via(dns)
    assert [str(a) for a in r("plain.example").addresses] == ["192.168.7.7"]
    dns.set_records({"plain.example": ["20.60.1.2"]})
    assert [str(a) for a in r("plain.example").addresses] == ["20.60.1.2"]


def test_a_missing_name_is_a_clear_refusal(dns: Dnsmasq) -> None:
    with pytest.raises(NetworkPolicyError, match=r"nothere\.example does not exist in DNS \(NXDOMAIN from DNS 127"):
        via(dns)("nothere.example")


def test_a_dead_resolver_times_out_with_its_address() -> None:
    dead = DnsServer(ipaddress.ip_address("127.0.0.1"), free_port(kind=socket.SOCK_DGRAM))
    start = time.monotonic()
    with pytest.raises(NetworkPolicyError, match=f"127.0.0.1:{dead.port}"):
        Resolver((dead,), timeout=1.0)("x.example")
    assert time.monotonic() - start < 5


def test_the_system_resolver_reads_the_hosts_file_first_and_flags_it(tmp_path: Path, dns: Dnsmasq) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text(f"# testing only\n10.1.0.9  {CACHE.upper()}  alias\n10.1.0.10 other {CACHE}\n")
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {dns.address}\n")
    system = Resolver(hosts_file=hosts, resolv_conf=conf)
    res = system(CACHE)
    assert res.from_hosts and res.source == f"hosts file {hosts}"
    assert [str(a) for a in res.addresses] == ["10.1.0.9", "10.1.0.10"]
    assert hosts_lookup("alias", hosts) == (ipaddress.ip_address("10.1.0.9"),)
    # Configured servers are asked directly: the hosts file does not apply.
    assert not via(dns, hosts_file=hosts)(CACHE).from_hosts


def test_the_system_resolver_uses_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# no servers\n")
    with pytest.raises(NetworkPolicyError, match="no DNS server is configured"):
        Resolver(hosts_file=tmp_path / "none", resolv_conf=conf)("x.example")


def test_an_ip_literal_resolves_to_itself() -> None:
    res = Resolver()("[FD00::5]")
    assert res.addresses == (ipaddress.ip_address("fd00::5"),) and res.source == "an IP address"


# -- private addresses ------------------------------------------------------------------------------

@given(st.sampled_from(PRIVATE_RANGES).flatmap(
    lambda net: st.integers(int(net.network_address), int(net.broadcast_address)).map(
        lambda n: ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n))))
def test_every_address_in_the_private_ranges_is_private(address: ipaddress.IPv4Address) -> None:
    assert is_private(address) and answer_problems([address], []) == []


@pytest.mark.parametrize("address, words", [
    ("20.60.1.2", "public"), ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("172.32.0.1", "public"),
    ("100.128.0.1", "public"), ("172.31.255.255", "private (RFC 1918)"), ("100.64.0.1", "shared address space"),
    ("fd12::1", "unique local"), ("::ffff:10.0.0.1", "private (RFC 1918)"), ("2603:1000::1", "public"),
])
def test_addresses_are_described(address: str, words: str) -> None:
    a = ipaddress.ip_address(address)
    assert describe(a).startswith(words)
    assert is_private(a) == (words.startswith(("private", "shared", "unique")))


def test_answer_problems_name_each_bad_address() -> None:
    addrs = [ipaddress.ip_address(a) for a in ("10.1.0.5", "10.2.0.5", "20.60.1.2")]
    assert answer_problems(addrs, [ipaddress.ip_network("10.1.0.0/24")]) == [
        "10.2.0.5 is outside private_cidrs (10.1.0.0/24)", "20.60.1.2 is public, not private"]
    assert answer_problems([], []) == ["no address"]
