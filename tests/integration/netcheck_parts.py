"""Shared parts of the network-plane tests of network check, bench and the gateway state: Azurite
over HTTPS as the cache account (its certificate for the account's FQDN), dnsmasq answering the
privatelink CNAME chain, tinyproxy, and a project that uses them.

The private endpoint lives on 127.0.0.1 here, so tests that need it to pass use a Router that
accepts loopback as private (:func:`loopback_router`); every other judgement is the real one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from godwit.config.network import IPNetwork
from godwit.network.addresses import answer_problems
from godwit.network.resolve import Resolution
from godwit.network.route import Router
from godwit.project.project import Project, init, open_project
from tests.azurite import Azurite, AzuriteTLS
from tests.netservers import Dnsmasq, Tinyproxy

ACCOUNT = "godwittest"
FQDN = f"{ACCOUNT}.blob.core.windows.net"
PRIVATELINK = f"{ACCOUNT}.privatelink.blob.core.windows.net"
LOOP = ipaddress.ip_network("127.0.0.0/8")


def loopback_is_private(resolution: Resolution, cidrs: Sequence[IPNetwork]) -> list[str]:
    """The real check, except that loopback stands in for the private endpoint's subnet."""
    return answer_problems([a for a in resolution.addresses if a not in LOOP], cidrs) \
        if any(a not in LOOP for a in resolution.addresses) else []


@pytest.fixture(scope="module")
def fqdn_tls(tmp_path_factory: pytest.TempPathFactory) -> AzuriteTLS:
    import trustme

    folder = tmp_path_factory.mktemp("fqdn-ca")
    ca = trustme.CA()
    cert = ca.issue_cert(FQDN, "127.0.0.1", "localhost")
    tls = AzuriteTLS(folder / "ca.pem", folder / "cert.pem", folder / "key.pem", ca)
    ca.cert_pem.write_to_path(str(tls.ca_file))
    cert.cert_chain_pems[0].write_to_path(str(tls.cert_file))
    cert.private_key_pem.write_to_path(str(tls.key_file))
    return tls


@pytest.fixture(scope="module")
def cache_azurite(tmp_path_factory: pytest.TempPathFactory, fqdn_tls: AzuriteTLS) -> Iterator[Azurite]:
    az = Azurite(tmp_path_factory.mktemp("cache-azurite"), fqdn_tls, account=ACCOUNT)
    try:
        az.start()
        yield az
    finally:
        az.close()


@pytest.fixture
def dns(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path / "dns", cnames={FQDN: PRIVATELINK})
    server.start({PRIVATELINK: ["127.0.0.1"]})
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Tinyproxy]:
    p = Tinyproxy(tmp_path / "proxy")
    p.start()
    try:
        yield p
    finally:
        p.close()


def make_project(root: Path, cache: Azurite, network: str, *, gateway: Azurite | None = None,
                 gateway_url: str | None = None, container: str = "netcheck",
                 gateway_container: str = "state", cache_url: str | None = None) -> Project:
    init(root).close()
    text = f"""
[cache]
kind = "azure"
account_url = "{cache_url or f'https://{FQDN}:{cache.port}'}"
container = "{container}"
credential = {{ kind = "account_key", env = "{cache.key_env}" }}
ca_file = "{cache.ca_file}"
retries = 0

[network]
{network}
"""
    if gateway is not None:
        text += f"""
[gateway]
account_url = "{gateway_url or gateway.blob_url}"
container = "{gateway_container}"
credential = {{ kind = "account_key", env = "{gateway.key_env}" }}
ca_file = "{gateway.ca_file}"
retries = 0
"""
    (root / "godwit.toml").write_text(text)
    return open_project(root)


def private(dns: Dnsmasq, extra: str = "") -> str:
    return f'data_plane = "private-endpoint"\ndns_servers = ["{dns.address}:{dns.port}"]\n{extra}'


def loopback_router(project: Project) -> Router:
    return Router(project.config.network, [FQDN], check=loopback_is_private)

