"""The [network] table: every key, its default, and a clear error for each way to get it wrong."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from godwit.config import model
from godwit.config.network import DnsServer, NetworkConfig, SecretRef, parse_network
from godwit.errors import ConfigError

FULL = """
[network]
data_plane = "private-endpoint"
proxy = "http://proxy.corp.example:3128"
proxy_credential = { env = "GODWIT_PROXY_AUTH" }
bypass = ["lsacontoso01.blob.core.windows.net", "*.corp.example", ".*.servicebus.windows.net", "10.0.0.0/8"]
private_cidrs = ["10.1.0.0/24", "100.64.8.0/22"]
dns_servers = ["10.1.0.4", "[fd00::53]:5353"]
source_region = "westeurope"
target_region = "northeurope"
route_filter_communities = ["12076:51004", "12076:5060"]
expressroute_interface = "er0"
expressroute_next_hop = "192.168.100.1"
"""


def load(tmp_path: Path, text: str) -> NetworkConfig:
    path = tmp_path / "godwit.toml"
    path.write_text(text)
    return model.load(path).network


def test_absent_table_means_defaults_and_not_configured(tmp_path: Path) -> None:
    net = load(tmp_path, "[project]\nname = 'x'\n")
    assert net == NetworkConfig() and not net.configured
    assert net.data_plane == "internet" and net.proxy is None and net.bypass == ()


def test_every_key_parses(tmp_path: Path) -> None:
    net = load(tmp_path, FULL)
    assert net.configured and net.data_plane == "private-endpoint"
    assert net.proxy == "http://proxy.corp.example:3128"
    assert net.proxy_credential == SecretRef(env="GODWIT_PROXY_AUTH")
    assert [e.kind for e in net.bypass] == ["exact", "wildcard", "wildcard", "cidr"]
    assert net.private_cidrs == (ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("100.64.8.0/22"))
    assert net.dns_servers == (DnsServer(ipaddress.ip_address("10.1.0.4")),
                               DnsServer(ipaddress.ip_address("fd00::53"), 5353))
    assert [str(s) for s in net.dns_servers] == ["10.1.0.4", "[fd00::53]:5353"]
    assert (net.source_region, net.target_region) == ("westeurope", "northeurope")
    assert net.route_filter_communities == ("12076:51004", "12076:5060")
    assert net.expressroute_interface == "er0" and str(net.expressroute_next_hop) == "192.168.100.1"


def test_a_credential_file_is_relative_to_the_project(tmp_path: Path) -> None:
    net = load(tmp_path, '[network]\nproxy = "http://p:8080"\nproxy_credential = { file = "secrets/proxy" }\n')
    assert net.proxy_credential == SecretRef(file=(tmp_path / "secrets/proxy").resolve())


@pytest.mark.parametrize("text, match", [
    ("data_plane = 'expressroute'", "data_plane must be one of"),
    ("proxi = 'http://p:1'", "unknown key"),
    ("proxy = 'http://user:pw@proxy:3128'", "user name or password"),
    ("proxy = 'socks5://proxy:1080'", "not an http"),
    ("proxy = 'http://proxy'", "needs a port"),
    ("proxy = 'http://proxy:3128/path'", "only scheme, host and port"),
    ("proxy = 'http://proxy:99999'", "invalid port"),
    ("proxy = 3128", "non-empty string"),
    ("proxy_credential = { env = 'X' }", "there is no proxy"),
    ("proxy = 'http://p:1'\nproxy_credential = 'user:pw'", "must be a table"),
    ("proxy = 'http://p:1'\nproxy_credential = { env = 'X', file = 'y' }", "exactly one"),
    ("proxy = 'http://p:1'\nproxy_credential = { env = 'user:pw' }", "environment variable name"),
    ("proxy = 'http://p:1'\nproxy_credential = { password = 'pw' }", "unknown key"),
    ("bypass = 'x.example'", "must be a list"),
    ("bypass = ['(unclosed']", "not a supported regular expression"),
    ("bypass = [42]", "non-empty string"),
    ("private_cidrs = ['10.1.0.5/24']", "not a CIDR range"),
    ("private_cidrs = ['20.60.0.0/16']", "not inside a private range"),
    ("private_cidrs = ['subnet-a']", "not a CIDR range"),
    ("dns_servers = ['dns.corp.example']", "not an IP address"),
    ("dns_servers = ['10.0.0.4:0']", "not an IP address"),
    ("source_region = 'West Europe'", "not an Azure region name"),
    ("route_filter_communities = ['12076-5060']", "not a BGP community"),
    ("route_filter_communities = ['12076:99999']", "not a BGP community"),
    ("expressroute_interface = 'a very long interface name'", "not a network interface name"),
    ("expressroute_next_hop = 'router'", "not an IP address"),
])
def test_bad_values_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        load(tmp_path, "[network]\n" + text + "\n")
    assert err.value.hint


def test_network_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="must be a table"):
        parse_network("private-endpoint", Path("."))


def test_the_secret_itself_is_never_in_the_config(tmp_path: Path) -> None:
    net = load(tmp_path, '[network]\nproxy = "http://p:8080"\nproxy_credential = { env = "GODWIT_PROXY_AUTH" }\n')
    assert "GODWIT_PROXY_AUTH" in repr(net) and net.proxy_credential is not None
    assert net.proxy_credential.source == "environment variable GODWIT_PROXY_AUTH"
