"""The routing decision inside the real transport, against real services on loopback.

Azurite over HTTPS stands for the cache account (``godwittest.blob.core.windows.net`` by name,
its certificate issued for that name) and for a gateway account; dnsmasq answers the privatelink
CNAME chain; tinyproxy logs every CONNECT. The private endpoint lives on 127.0.0.1 here, so the
tests that need it accept loopback as "private" (the real check is tested on public answers).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from godwit.azure.settings import AzureSettings, parse_options
from godwit.config.network import DnsServer, IPNetwork, NetworkConfig, SecretRef, parse_bypass_entry
from godwit.errors import NetworkPolicyError, StoreError
from godwit.network.addresses import answer_problems
from godwit.network.resolve import Resolution
from godwit.network.route import AnswerChange, Router
from godwit.stores.azure import AzureBlobStore
from tests.azurite import Azurite, AzuriteTLS, make_ca
from tests.netservers import Dnsmasq, Tinyproxy, free_port

pytestmark = pytest.mark.azure
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


def cache_settings(az: Azurite, container: str, router: Router, **extra: Any) -> AzureSettings:
    opts = az.options(container, account_url=f"https://{FQDN}:{az.port}", retries=0, **extra)
    return dataclasses.replace(parse_options(opts, "cache", Path(".")), router=router)


def private_network(dns: Dnsmasq, **kw: Any) -> NetworkConfig:
    return NetworkConfig(data_plane="private-endpoint", dns_servers=(DnsServer(ipaddress.ip_address(dns.address),
                                                                              dns.port),), configured=True, **kw)


def roundtrip(settings: AzureSettings) -> None:
    store = AzureBlobStore(settings)
    try:
        store.put("net/probe", b"replication bytes")
        assert store.get("net/probe") == b"replication bytes"
    finally:
        store.close()


@pytest.fixture
def cache_container(cache_azurite: Azurite) -> Iterator[str]:
    name = cache_azurite.new_container("net")
    try:
        yield name
    finally:
        cache_azurite.delete_container(name)


# -- the data plane in private-endpoint mode --------------------------------------------------------

def test_private_endpoint_connects_to_the_checked_address_directly_never_via_the_proxy(
        cache_azurite: Azurite, cache_container: str, dns: Dnsmasq, proxy: Tinyproxy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy is configured and nothing is bypassed: the data plane must still go direct, and the
    # environment's proxy (a dead port) must not matter either.
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")
    router = Router(private_network(dns, proxy=proxy.url), [FQDN], check=loopback_is_private, answer_cache_seconds=0)
    roundtrip(cache_settings(cache_azurite, cache_container, router))
    route = router.last_data_route
    assert route is not None and route.plane == "data" and str(route.pinned) == "127.0.0.1" and route.proxy is None
    assert route.resolution is not None and route.resolution.chain == (FQDN, PRIVATELINK)
    assert proxy.connects() == []


def test_the_connection_follows_the_pin_not_the_systems_resolver(
        cache_azurite: Azurite, cache_container: str, dns: Dnsmasq) -> None:
    # Azurite listens on 127.0.0.1 only: when DNS says 127.0.0.2, the request must go there and fail.
    dns.set_records({PRIVATELINK: ["127.0.0.2"]})
    router = Router(private_network(dns), [FQDN], check=loopback_is_private, answer_cache_seconds=0)
    store = AzureBlobStore(cache_settings(cache_azurite, cache_container, router))
    try:
        with pytest.raises(StoreError, match=r"cannot reach .* \(connection refused"):
            store.put("net/probe", b"x")
    finally:
        store.close()
    assert router.last_data_route is not None and str(router.last_data_route.pinned) == "127.0.0.2"


def test_a_public_answer_is_refused_before_a_byte_with_what_resolved_to_what_and_the_fix(
        cache_azurite: Azurite, cache_container: str, dns: Dnsmasq, proxy: Tinyproxy) -> None:
    dns.set_records({PRIVATELINK: ["20.60.1.2"]})
    router = Router(private_network(dns, proxy=proxy.url), [FQDN], answer_cache_seconds=0)  # the real check
    store = AzureBlobStore(cache_settings(cache_azurite, cache_container, router))
    start = time.monotonic()
    try:
        with pytest.raises(NetworkPolicyError) as err:
            store.put("net/probe", b"x" * 1000)
    finally:
        store.close()
    assert time.monotonic() - start < 5
    text = str(err.value)
    assert f"{FQDN} → {PRIVATELINK} → 20.60.1.2" in text and "public, not private" in text
    assert "VNet link" in (err.value.hint or "") and "conditional forwarder" in (err.value.hint or "")
    assert proxy.connects() == []
    assert router.last_data_route is None


def test_an_answer_outside_private_cidrs_is_refused(cache_azurite: Azurite, cache_container: str,
                                                   dns: Dnsmasq) -> None:
    dns.set_records({PRIVATELINK: ["10.9.0.4"]})
    router = Router(private_network(dns, private_cidrs=(ipaddress.ip_network("10.1.0.0/24"),)), [FQDN])
    with pytest.raises(NetworkPolicyError, match="outside private_cidrs"):
        roundtrip(cache_settings(cache_azurite, cache_container, router))


def test_dns_changing_mid_replication_is_an_event_and_the_next_cycle_refuses(
        cache_azurite: Azurite, cache_container: str, dns: Dnsmasq) -> None:
    seen: list[AnswerChange] = []
    router = Router(private_network(dns), [FQDN], check=loopback_is_private, answer_cache_seconds=0,
                    on_change=seen.append)
    settings = cache_settings(cache_azurite, cache_container, router)
    roundtrip(settings)
    router.refuse_if_changed()  # nothing changed yet
    dns.set_records({PRIVATELINK: ["20.60.1.2"]})
    with pytest.raises(NetworkPolicyError, match=r"20\.60\.1\.2 is public"):
        roundtrip(settings)
    assert len(seen) == 1 and str(seen[0].before[0]) == "127.0.0.1" and seen[0].problems
    with pytest.raises(NetworkPolicyError, match="changed while replicating"):
        router.refuse_if_changed()
    dns.set_records({PRIVATELINK: ["127.0.0.1"]})
    roundtrip(settings)  # the answer is back; the engine still refuses until acknowledged
    with pytest.raises(NetworkPolicyError):
        router.refuse_if_changed()
    router.acknowledge()
    router.refuse_if_changed()
    roundtrip(settings)


# -- direct or proxied: the control plane, and the data plane outside private-endpoint mode ---------

def gateway_settings(az: Azurite, container: str, router: Router, **extra: Any) -> AzureSettings:
    return dataclasses.replace(parse_options(az.options(container, retries=0, **extra), "gateway", Path(".")),
                               router=router)


def test_control_plane_goes_through_the_proxy_in_a_connect_tunnel_unless_bypassed(
        azurite: Azurite, azure_container: str, proxy: Tinyproxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # godwit decides, not NO_PROXY
    target = f"127.0.0.1:{azurite.port}"
    router = Router(NetworkConfig(proxy=proxy.url, configured=True), [FQDN])
    roundtrip(gateway_settings(azurite, azure_container, router))
    assert target in proxy.connects()
    before = len(proxy.connects())
    bypassed = Router(NetworkConfig(proxy=proxy.url, bypass=(parse_bypass_entry("127.0.0.1"),), configured=True))
    roundtrip(gateway_settings(azurite, azure_container, bypassed))
    assert len(proxy.connects()) == before


@pytest.mark.parametrize("mode", ["microsoft-peering", "internet"])
def test_other_data_planes_follow_the_bypass_list(cache_azurite: Azurite, cache_container: str, proxy: Tinyproxy,
                                                  dns: Dnsmasq, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # No pinning here: the name must resolve on its own, so the URL is the path-style 127.0.0.1 one.
    opts = cache_azurite.options(cache_container, retries=0)
    settings = parse_options(opts, "cache", Path("."))
    data_host = "127.0.0.1"
    via = Router(NetworkConfig(data_plane=mode, proxy=proxy.url, configured=True), [data_host])
    roundtrip(dataclasses.replace(settings, router=via))
    assert via.last_data_route is not None and via.last_data_route.proxy == proxy.url
    assert f"127.0.0.1:{cache_azurite.port}" in proxy.connects()
    before = len(proxy.connects())
    direct = Router(NetworkConfig(data_plane=mode, proxy=proxy.url, bypass=(parse_bypass_entry("127.0.0.0/8"),),
                                  configured=True), [data_host])
    roundtrip(dataclasses.replace(settings, router=direct))
    assert direct.last_data_route is not None and direct.last_data_route.rule == "127.0.0.0/8"
    assert len(proxy.connects()) == before


def test_a_proxy_that_is_down_is_a_clear_control_plane_error(azurite: Azurite, azure_container: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    router = Router(NetworkConfig(proxy=dead, configured=True))
    with pytest.raises(NetworkPolicyError, match=f"the proxy {dead} failed the control plane.*connection refused"):
        roundtrip(gateway_settings(azurite, azure_container, router))


def test_a_failed_certificate_check_through_the_proxy_names_the_certificate_and_who_presented_it(
        azurite: Azurite, azure_container: str, proxy: Tinyproxy, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")  # a CA that did not issue Azurite's certificate
    router = Router(NetworkConfig(proxy=proxy.url, configured=True))
    settings = dataclasses.replace(gateway_settings(azurite, azure_container, router), ca_file=other.ca_file)
    with pytest.raises(NetworkPolicyError) as err:
        roundtrip(settings)
    text = str(err.value)
    assert "failed its check" in text and "issued by" in text and "IP:127.0.0.1" in text
    assert f"CONNECT tunnel of proxy {proxy.url}" in text
    assert "ca_file" in (err.value.hint or "")


def test_a_failed_certificate_check_on_the_private_path_names_the_pinned_address(
        cache_azurite: Azurite, cache_container: str, dns: Dnsmasq, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")
    router = Router(private_network(dns), [FQDN], check=loopback_is_private)
    settings = dataclasses.replace(cache_settings(cache_azurite, cache_container, router), ca_file=other.ca_file)
    with pytest.raises(NetworkPolicyError, match=f"DNS:{FQDN}.*by 127.0.0.1:{cache_azurite.port}, the checked"):
        roundtrip(settings)


def test_proxy_credentials_by_reference_work_and_never_show(
        azurite: Azurite, azure_container: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Tinyproxy(tmp_path / "authproxy", basic_auth=("godwit", "s3cret-proxy-pass"))
    proxy.start()
    try:
        monkeypatch.setenv("GODWIT_TEST_PROXY_AUTH", "godwit:s3cret-proxy-pass")
        net = NetworkConfig(proxy=proxy.url, proxy_credential=SecretRef(env="GODWIT_TEST_PROXY_AUTH"), configured=True)
        roundtrip(gateway_settings(azurite, azure_container, Router(net)))
        assert f"127.0.0.1:{azurite.port}" in proxy.connects()
        monkeypatch.setenv("GODWIT_TEST_PROXY_AUTH", "godwit:wrong-password-here")
        with pytest.raises(NetworkPolicyError, match="asked for credentials") as err:
            roundtrip(gateway_settings(azurite, azure_container, Router(net)))
        assert "wrong-password-here" not in str(err.value) + str(err.value.hint)
    finally:
        proxy.close()


def test_a_section_proxy_conflicts_with_the_network_table(azurite: Azurite, azure_container: str) -> None:
    from godwit.errors import ConfigError

    router = Router(NetworkConfig(configured=True))
    with pytest.raises(ConfigError, match="decides every route"):
        roundtrip(gateway_settings(azurite, azure_container, router, proxy="http://127.0.0.1:3128"))


def test_token_and_other_requests_are_control_plane_by_host() -> None:
    router = Router(NetworkConfig(data_plane="private-endpoint", proxy="http://proxy.corp:3128", configured=True),
                    [FQDN])
    route = router.route("https://login.microsoftonline.com/tenant/oauth2/v2.0/token")
    assert route.plane == "control" and route.proxy == "http://proxy.corp:3128" and route.pinned is None



# -- the project wires the router into its cache store -------------------------------------------------

def project_with(root: Path, az: Azurite, container: str, account_url: str, network: str) -> Any:
    from godwit.project.project import init, open_project

    init(root).close()
    (root / "godwit.toml").write_text(f"""
[cache]
kind = "azure"
account_url = "{account_url}"
container = "{container}"
credential = {{ kind = "account_key", env = "{az.key_env}" }}
ca_file = "{az.ca_file}"
retries = 0

[network]
{network}
""")
    return open_project(root)


def test_a_project_sends_its_cache_traffic_on_the_network_tables_route(
        cache_azurite: Azurite, cache_container: str, proxy: Tinyproxy, tmp_path: Path) -> None:
    project = project_with(tmp_path / "p1", cache_azurite, cache_container,
                           f"https://127.0.0.1:{cache_azurite.port}/{ACCOUNT}", f'proxy = "{proxy.url}"')
    try:
        project.store.put("net/probe", b"x")
        assert project.router is not None and project.router.last_data_route is not None
        assert project.router.last_data_route.proxy == proxy.url
        assert f"127.0.0.1:{cache_azurite.port}" in proxy.connects()
    finally:
        project.close()


def test_a_project_refuses_a_public_answer_for_its_cache_account(
        cache_azurite: Azurite, cache_container: str, dns: Dnsmasq, tmp_path: Path) -> None:
    dns.set_records({PRIVATELINK: ["20.60.1.2"]})
    project = project_with(tmp_path / "p2", cache_azurite, cache_container, f"https://{FQDN}:{cache_azurite.port}",
                           f'data_plane = "private-endpoint"\ndns_servers = ["127.0.0.1:{dns.port}"]')
    try:
        with pytest.raises(NetworkPolicyError, match="public, not private"):
            project.store.put("net/probe", b"x")
    finally:
        project.close()


def test_page_blob_replicas_take_the_router_too(azurite: Azurite, azure_container: str, proxy: Tinyproxy,
                                                tmp_path: Path) -> None:
    from godwit.replicas.pageblob import open_pageblob_replica

    router = Router(NetworkConfig(proxy=proxy.url, configured=True))
    replica = open_pageblob_replica(azurite.options(azure_container, retries=0), tmp_path, "srv-disk0", router)
    try:
        replica.points()
    finally:
        replica.close()
    assert f"127.0.0.1:{azurite.port}" in proxy.connects()


def test_store_check_runs_on_the_planned_route(cache_azurite: Azurite, cache_container: str, proxy: Tinyproxy,
                                               tmp_path: Path) -> None:
    from godwit.checks.storecheck import check_stores

    project = project_with(tmp_path / "p3", cache_azurite, cache_container,
                           f"https://127.0.0.1:{cache_azurite.port}/{ACCOUNT}", f'proxy = "{proxy.url}"')
    try:
        results = check_stores(project)
    finally:
        project.close()
    assert results and all(r.ok for r in results), [r for r in results if not r.ok]
    assert f"127.0.0.1:{cache_azurite.port}" in proxy.connects()
