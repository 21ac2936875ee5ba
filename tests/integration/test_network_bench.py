"""`godwit network bench` against Azurite over HTTPS: on the path replication takes (the private
endpoint pinned, or through the proxy), with its scratch objects removed afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from godwit.checks.network_bench import PREFIX, bench
from godwit.cli.main import app
from godwit.project.project import init
from tests.azurite import Azurite
from tests.integration import netcheck_parts as parts
from tests.integration.netcheck_parts import FQDN, loopback_router, make_project, private
from tests.netservers import Dnsmasq, Tinyproxy

pytestmark = pytest.mark.azure
fqdn_tls, cache_azurite, dns, proxy = parts.fqdn_tls, parts.cache_azurite, parts.dns, parts.proxy


def leftovers(az: Azurite, container: str) -> list[str]:
    with az.service() as svc:
        return list(svc.get_container_client(container).list_blob_names(name_starts_with=PREFIX))


def test_bench_on_the_private_endpoint_measures_and_cleans_up(
        cache_azurite: Azurite, dns: Dnsmasq, proxy: Tinyproxy, tmp_path: Path) -> None:
    container = cache_azurite.new_container("bench")
    p = make_project(tmp_path / "p", cache_azurite, private(dns, f'proxy = "{proxy.url}"'), container=container)
    p._router = loopback_router(p)
    try:
        res = bench(p, size_mib=0.25, count=4, concurrency=2)
    finally:
        p.close()
    assert res.path.startswith("data plane request to ") and "private-endpoint 127.0.0.1, direct" in res.path
    d = res.as_dict()
    assert d["upload"]["requests"] == d["download"]["requests"] == d["small"]["requests"] == 4
    assert d["upload"]["bytes"] == d["download"]["bytes"] == 4 * (256 << 10)
    assert d["upload"]["mb_per_s"] > 0 and d["download"]["mb_per_s"] > 0
    assert 0 < d["small"]["latency_ms"]["p50"] <= d["small"]["latency_ms"]["max"]
    assert res.removed == 4 and leftovers(cache_azurite, container) == []
    assert not any(FQDN in c for c in proxy.connects())  # the private path never uses the proxy


def test_bench_through_the_proxy_says_so_on_the_command_line(
        cache_azurite: Azurite, proxy: Tinyproxy, tmp_path: Path) -> None:
    container = cache_azurite.new_container("bench")
    root = tmp_path / "p"
    make_project(root, cache_azurite, f'data_plane = "internet"\nproxy = "{proxy.url}"', container=container,
                 cache_url=cache_azurite.blob_url).close()
    result = CliRunner().invoke(app, ["network", "bench", "--json", "-p", str(root), "--size-mib", "0.1",
                                      "--count", "3", "--concurrency", "1"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert f"via proxy {proxy.url}" in doc["path"] and doc["count"] == 3 and doc["removed"] == 3
    assert f"127.0.0.1:{cache_azurite.port}" in proxy.connects()
    assert leftovers(cache_azurite, container) == []
    text = CliRunner().invoke(app, ["network", "bench", "-p", str(root), "--size-mib", "0.1", "--count", "1"])
    assert text.exit_code == 0 and f"path: data plane request to 127.0.0.1:{cache_azurite.port}" in text.stdout
    assert "removed 1 scratch object(s)" in text.stdout


@pytest.mark.parametrize("args", [["--size-mib", "257"], ["--count", "0"], ["--count", "101"],
                                  ["--concurrency", "17"], ["--size-mib", "100", "--count", "50"]])
def test_sizes_and_counts_are_bounded(args: list[str], tmp_path: Path) -> None:
    init(tmp_path / "p").close()
    result = CliRunner().invoke(app, ["network", "bench", "-p", str(tmp_path / "p"), *args])
    assert (result.exit_code == 2 and "at most" in result.output) or "from 1 to" in result.output, result.output


def test_bench_of_a_local_cache_says_there_is_no_network(tmp_path: Path) -> None:
    p = init(tmp_path / "p")
    try:
        res = bench(p, size_mib=0.05, count=2, concurrency=1)
    finally:
        p.close()
    assert res.path.startswith("local folder") and res.removed == 2
    assert [f for f in (tmp_path / "p" / "cache" / PREFIX).rglob("*") if f.is_file()] == []


def test_bench_is_refused_like_replication_when_the_answer_is_public(
        cache_azurite: Azurite, dns: Dnsmasq, tmp_path: Path) -> None:
    dns.set_records({parts.PRIVATELINK: ["20.60.1.2"]})
    container = cache_azurite.new_container("bench")
    root = tmp_path / "p"
    make_project(root, cache_azurite, private(dns), container=container).close()
    result = CliRunner().invoke(app, ["network", "bench", "-p", str(root), "--size-mib", "0.1", "--count", "2"])
    assert result.exit_code == 60, result.output
    assert "refused to send replication data" in result.output and "Traceback" not in result.output
    assert leftovers(cache_azurite, container) == []
