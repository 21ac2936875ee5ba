"""The harness itself, before any godwit network code: from onprem the cache account answers by
name over the private link only, the gateway account only through the proxy, and nothing else
answers at all. The helpers that the godwit tests lean on (DNS flip, proxy stop, byte counters,
teardown) do what they say."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns import CONTROL_ENDPOINTS, DNS_SERVER, PUBLIC_ADDRESS, PUBLIC_CNAME, Topology, host_lock

pytestmark = pytest.mark.network

MIB = 1 << 20


def _curl(net: Topology, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return net.run(net.onprem, "curl", "-sS", "--max-time", "5", "--cacert", str(net.ca_file), "-o", "/dev/null",
                   "-w", "%{http_code} %{remote_ip}", *extra, url)


def test_namespaces_have_only_our_addresses_no_default_route_no_ipv6(net: Topology) -> None:
    for ns, expected in ((net.onprem, {"127.0.0.1", "10.1.0.2", "172.31.0.2"}),
                         (net.private, {"127.0.0.1", "10.1.0.5"}),
                         (net.internet, {"127.0.0.1", "172.31.0.1", "203.0.113.10", PUBLIC_ADDRESS})):
        addrs = json.loads(net.run(ns, "ip", "-j", "addr", "show").stdout)
        assert {a["local"] for i in addrs for a in i["addr_info"]} == expected, ns
        assert all(a["family"] == "inet" for i in addrs for a in i["addr_info"]), f"IPv6 address in {ns}"
        routes = json.loads(net.run(ns, "ip", "-j", "route", "show", "table", "all").stdout)
        assert not [r for r in routes if r["dst"] == "default"], f"default route in {ns}: {routes}"
        assert net.run(ns, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6").stdout.strip() == "1"


def test_cache_by_name_resolves_through_privatelink(net: Topology) -> None:
    out = net.run(net.onprem, "getent", "ahostsv4", net.cache.fqdn).stdout
    # glibc reports the end of the CNAME chain as the canonical name, as nslookup shows in the article.
    assert net.cache.privatelink_fqdn in out and net.cache.address in out
    assert net.resolve(net.gateway.fqdn) == [net.gateway.address]
    assert net.resolve("example.com") == []  # no-resolv: nothing but our records
    assert (Path(f"/etc/netns/{net.onprem}/resolv.conf").read_text().split()[:2] == ["nameserver", DNS_SERVER])


def test_curl_reaches_cache_over_the_private_link_only(net: Topology) -> None:
    before = net.link_bytes()
    proc = _curl(net, f"{net.cache.url}/?comp=list")
    moved = net.link_bytes() - before
    assert proc.stdout == f"403 {net.cache.address}", proc.stderr  # Azurite answered: no credential given
    assert moved.private.tx > 0 and moved.private.rx > 0
    assert moved.internet.total == 0


def test_python_sdk_writes_to_cache_by_name_over_the_private_link(net: Topology) -> None:
    """The production-style URL, TLS against the test CA, the account key: 4 MiB up and back."""
    container = net.new_container(net.cache)
    code = f"""
import os
from azure.core.credentials import AzureNamedKeyCredential
from azure.storage.blob import BlobServiceClient
svc = BlobServiceClient({net.cache.url!r}, connection_verify={str(net.ca_file)!r}, retry_total=0,
                        credential=AzureNamedKeyCredential({net.cache.name!r}, os.environ[{net.cache.key_env!r}]))
blob = svc.get_blob_client({container!r}, "probe")
data = os.urandom(4 << 20)
blob.upload_blob(data)
assert blob.download_blob().readall() == data
print("ok")
"""
    before = net.link_bytes()
    proc = net.python(code)
    moved = net.link_bytes() - before
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert moved.private.tx > 4 * MIB and moved.private.rx > 4 * MIB
    assert moved.internet.total == 0
    names = net.on_account(net.cache, lambda svc: [b.name for b in svc.get_container_client(container).list_blobs()])
    assert names == ["probe"]


def test_gateway_is_unreachable_directly_and_reachable_through_the_proxy(net: Topology) -> None:
    before = net.link_bytes()
    direct = _curl(net, f"{net.gateway.url}/?comp=list")
    assert direct.returncode == 7  # resolves, but onprem has no route to it
    assert net.tcp_connect(net.onprem, net.gateway.address, 443) == errno.ENETUNREACH
    assert (net.link_bytes() - before).private.total == 0
    assert (net.link_bytes() - before).internet.total == 0

    before = net.link_bytes()
    proxied = _curl(net, f"{net.gateway.url}/?comp=list", "--proxy", net.proxy_url)
    moved = net.link_bytes() - before
    assert proxied.stdout == f"403 {net.proxy_address}", proxied.stderr
    assert moved.internet.tx > 0 and moved.private.total == 0
    assert net.proxy_connects()[-1] == f"{net.gateway.fqdn}:443"
    # The control-plane names answer through the proxy (TLS checked against their own names) only.
    for host in CONTROL_ENDPOINTS:
        assert net.resolve(host) == []
        proc = _curl(net, f"https://{host}/", "--proxy", net.proxy_url)
        assert proc.returncode == 0 and proc.stdout.endswith(net.proxy_address), proc.stderr


def test_nothing_else_is_reachable(net: Topology) -> None:
    # Any other address: no route, and nothing sent.
    before = net.link_bytes()
    for ns in net.namespaces:
        assert net.tcp_connect(ns, "198.51.100.8", 443) == errno.ENETUNREACH, ns
        assert net.run(ns, "curl", "-sS", "--max-time", "3", "http://198.51.100.8/").returncode == 7
    assert (net.link_bytes() - before).private.total == (net.link_bytes() - before).internet.total == 0
    # The cache account from the proxy's side, and the gateway from the private side: no path.
    for ns, address in ((net.internet, net.cache.address), (net.private, net.gateway.address)):
        assert net.run(ns, "curl", "-sS", "--max-time", "3", "-k", f"https://{address}/").returncode == 7
    # The proxy reaches only the gateway: the cache account's name means nothing on the internet side.
    proc = _curl(net, f"{net.cache.url}/?comp=list", "--proxy", net.proxy_url)
    assert proc.returncode != 0 and not proc.stdout.startswith("2")
    # Only port 443 may be tunnelled.
    proc = net.run(net.onprem, "curl", "-sS", "--max-time", "3", "--proxy", net.proxy_url, "-p",
                   f"http://{net.gateway.fqdn}:10000/")
    assert proc.returncode != 0


def test_links_are_silent_when_nothing_talks(net: Topology) -> None:
    before = net.link_bytes()
    time.sleep(1.5)
    moved = net.link_bytes() - before
    assert (moved.private.total, moved.internet.total) == (0, 0)


def test_flip_cache_answer_to_public_and_back(net: Topology) -> None:
    net.set_cache_answer(PUBLIC_ADDRESS)  # the privatelink zone now holds a public address
    assert net.resolve(net.cache.fqdn) == [PUBLIC_ADDRESS]
    # A client that does not check follows it out of the internet link, and is refused there.
    before = net.link_bytes()
    proc = _curl(net, f"{net.cache.url}/")
    moved = net.link_bytes() - before
    assert proc.returncode == 7, proc.stderr
    assert moved.private.total == 0 and moved.internet.tx > 0
    assert net.tcp_connect(net.onprem, PUBLIC_ADDRESS, 443) == errno.ECONNREFUSED

    net.set_cache_answer(PUBLIC_ADDRESS, privatelink=False)  # no private zone at all
    out = net.run(net.onprem, "getent", "ahostsv4", net.cache.fqdn).stdout
    assert PUBLIC_CNAME in out and "privatelink" not in out

    net.set_cache_answer(net.cache.address)
    assert _curl(net, f"{net.cache.url}/?comp=list").stdout == f"403 {net.cache.address}"


def test_sighup_flip_keeps_answering(net: Topology) -> None:
    """The DNS server never stops answering during a flip of the address (replication resolves
    while it runs)."""
    pid = net.procs["dnsmasq"].pid
    net.set_cache_answer(PUBLIC_ADDRESS)
    net.set_cache_answer(net.cache.address)
    assert net.procs["dnsmasq"].pid == pid  # reloaded, not restarted


def test_onprem_hosts_file_answer(net: Topology) -> None:
    net.set_onprem_hosts(f"10.1.0.99 {net.cache.fqdn}\n")
    assert net.resolve(net.cache.fqdn) == ["10.1.0.99"]
    net.set_onprem_hosts()
    assert net.resolve(net.cache.fqdn) == [net.cache.address]


def test_stop_proxy_refuses_then_start_again(net: Topology) -> None:
    net.stop_proxy()
    proc = _curl(net, f"{net.gateway.url}/?comp=list", "--proxy", net.proxy_url)
    assert proc.returncode == 7, proc.stderr
    assert net.tcp_connect(net.onprem, net.proxy_address, 8888) == errno.ECONNREFUSED
    net.start_proxy()
    assert _curl(net, f"{net.gateway.url}/?comp=list", "--proxy", net.proxy_url).stdout.startswith("403")


def test_teardown_removes_everything_even_after_a_failure(netns_topology: Topology, tmp_path: Path) -> None:
    """A second topology under other names: built, broken by an exception, and gone afterwards.
    (``netns_topology``: under the session's host lock, so no other session builds one alongside.)"""
    topo = Topology(tmp_path / "t", suffix="-td")
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="test failure"):
        try:
            topo.up()
            pids = [p.pid for p in topo.procs.values()]
            assert len(pids) == 4  # two Azurites, dnsmasq, tinyproxy
            raise RuntimeError("test failure")
        finally:
            topo.down()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [ns for ns in topo.namespaces if ns in listed.split()]
    assert not [ns for ns in topo.namespaces if Path(f"/etc/netns/{ns}").exists()]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_host_lock_is_exclusive(netns_topology: Topology) -> None:
    """The session holds the lock; a second taker times out instead of sharing the namespaces."""
    with pytest.raises(pytest.fail.Exception, match="holds"), host_lock(timeout=0.6, suffix=netns_topology.suffix):
        pass


def test_daemons_die_with_a_killed_session(netns_topology: Topology, tmp_path: Path) -> None:
    """pytest killed by SIGKILL runs no teardown: every daemon still dies with it (parent-death
    signal), and the next session's ``up`` removes the namespaces left behind."""
    code = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from pathlib import Path
from tests.netns import Topology
topo = Topology(Path({str(tmp_path / 'k')!r}), suffix="-k")
topo.up()
print(" ".join(str(p.pid) for p in topo.procs.values()), flush=True)
time.sleep(120)
"""
    session = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert session.stdout is not None
        pids = [int(pid) for pid in session.stdout.readline().split()]
        assert len(pids) == 4
    finally:
        session.kill()
        session.wait()
    leftover = Topology(tmp_path / "k2", suffix="-k")
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids + _netns_pids(leftover) if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive == []
    leftover.remove_leftovers()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split()
    assert not set(leftover.namespaces) & set(listed)


def _netns_pids(topo: Topology) -> list[int]:
    pids: list[int] = []
    for ns in topo.namespaces:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    return pids


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_every_server_listens_on_its_assigned_address_only(net: Topology) -> None:
    for ns, expected in ((net.onprem, {f"{DNS_SERVER}:53"}),
                         (net.private, {f"{net.cache.address}:443"}),
                         (net.internet, {f"{net.gateway.address}:443", f"{net.proxy_address}:8888"})):
        out = net.run(ns, "ss", "-H", "-l", "-t", "-n").stdout
        assert {line.split()[3] for line in out.splitlines()} == expected, (ns, out)
