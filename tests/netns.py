"""A pytest plugin: the reference article's network, in three Linux network namespaces.

::

    gw-azure-private                     gw-onprem (godwit)                      gw-internet
    Azurite, cache account   er-azure ═══ er-onprem   in-onprem ═══ in-proxy   tinyproxy :8888
    https://lsanetcache...   10.1.0.5     10.1.0.2    172.31.0.2    172.31.0.1 Azurite, gateway account
                               "the ExpressRoute link"  "the internet link"    203.0.113.10 (on lo)
                                          dnsmasq 127.0.0.53 (lo)              198.51.100.7 (on lo,
                                          route 198.51.100.7 via 172.31.0.1    nothing listens)

dnsmasq answers like Azure private DNS: ``lsanetcache.blob.core.windows.net`` is a CNAME of
``lsanetcache.privatelink.blob.core.windows.net``, which is 10.1.0.5; the gateway name is
203.0.113.10, an address that only the proxy's namespace can reach. There is no default route and
no IPv6 anywhere, so the onprem side's veth byte counters count exactly what godwit sent on each
path (:meth:`Topology.link_bytes`).

Fixture: ``netns_topology`` (session). It takes a host-wide lock first, so two pytest sessions
never share the namespace names, and removes what a killed session left behind.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.azurite import FAST, find_azurite
from tests.network.links import Account, Counters, LinkBytes, admin_call, enter_netns

__all__ = ["Account", "Counters", "LinkBytes", "Topology", "netns_topology"]

T = TypeVar("T")
VENV_BIN = Path(sys.executable).parent
LOCK_FILE = Path("/run/lock/godwit-netns.lock")
#: A public address (TEST-NET-2) on the internet side, routed from onprem out of the internet link,
#: where nothing listens: a client that follows a public answer for the cache account leaks onto
#: that link (and is refused), so "zero bytes on either link" has teeth.
PUBLIC_ADDRESS = "198.51.100.7"
PUBLIC_CNAME = "blob.ams07prdstr02a.store.core.windows.net"  # what public DNS would chain to
DNS_SERVER = "127.0.0.53"
PROXY_PORT = 8888
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
#: Control-plane names that the internet side answers (through the proxy only; onprem cannot
#: resolve them): the gateway's Azurite stands in for them, with a certificate for each.
CONTROL_ENDPOINTS = ("login.microsoftonline.com", "management.azure.com")


def _run(args: Sequence[str], *, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _new_key() -> str:
    return base64.b64encode(secrets.token_bytes(64)).decode()


# Runs a daemon that drops privileges (which clears the parent-death signal) under a shell that
# keeps it: the shell forwards TERM and HUP, so the daemon dies with pytest all the same.
_SUPERVISE = ('"$@" & child=$!; trap \'kill -TERM $child\' TERM INT; trap \'kill -HUP $child\' HUP; '
              'while kill -0 $child 2>/dev/null; do wait $child; done')


def _die_with_parent() -> None:
    """In the child: SIGTERM when pytest dies, even by SIGKILL (survives ``ip netns exec``'s exec)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


@contextlib.contextmanager
def host_lock(timeout: float = 300.0, suffix: str = "") -> Iterator[None]:
    """One topology of each name per host: a second session with the same names waits for the first."""
    lock_file = LOCK_FILE.with_name(f"{LOCK_FILE.stem}{suffix}{LOCK_FILE.suffix}")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another test session holds {lock_file} for over {timeout:.0f} s", pytrace=False)
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def require_tools() -> None:
    if os.geteuid() != 0:
        pytest.fail("the network tests need root (network namespaces)", pytrace=False)
    missing = [t for t in ("ip", "ss", "sysctl", "dnsmasq", "tinyproxy", "curl", "getent") if not shutil.which(t)]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install iproute2 procps dnsmasq-base tinyproxy-bin "
                    "curl (the binaries, without their services)", pytrace=False)


class Topology:
    """Builds, inspects and removes the namespaces and every process started in them."""

    def __init__(self, workdir: Path, suffix: str = "") -> None:
        self.workdir = workdir
        self.suffix = suffix
        self.onprem, self.private, self.internet = (f"gw-{n}{suffix}" for n in ("onprem", "azure-private",
                                                                                  "internet"))
        self.namespaces = (self.onprem, self.private, self.internet)
        self.cache = Account("lsanetcache", self.private, "10.1.0.5", _new_key(), "GODWIT_NET_CACHE_KEY")
        self.gateway = Account("gwsanetstate", self.internet, "203.0.113.10", _new_key(), "GODWIT_NET_GATEWAY_KEY")
        self.proxy_address = "172.31.0.1"
        self.proxy_url = f"http://{self.proxy_address}:{PROXY_PORT}"
        self.private_cidr = "10.1.0.0/24"
        self.private_if, self.internet_if = "er-onprem", "in-onprem"
        self.ca_file = workdir / "ca.pem"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._executors: dict[str, ThreadPoolExecutor] = {}
        self.dns_answer = (self.cache.address, True)  # (address, through privatelink)

    # -- building and removing ---------------------------------------------------------------------

    def up(self) -> None:
        self.remove_leftovers()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns])
            # Before any veth exists, so that new interfaces inherit it: no IPv6 chatter on the links.
            _run(["ip", "netns", "exec", ns, "sh", "-c", "sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 "
                  "net.ipv6.conf.default.disable_ipv6=1 && ip link set lo up"])
        links = [(self.onprem, self.private_if, "10.1.0.2/24", self.private, "er-azure", "10.1.0.5/24"),
                 (self.onprem, self.internet_if, "172.31.0.2/24", self.internet, "in-proxy", "172.31.0.1/24")]
        for ns_a, if_a, addr_a, ns_b, if_b, addr_b in links:
            _run(["ip", "link", "add", if_a, "netns", ns_a, "type", "veth", "peer", "name", if_b, "netns", ns_b])
            for ns, ifname, addr in ((ns_a, if_a, addr_a), (ns_b, if_b, addr_b)):
                _run(["ip", "-n", ns, "addr", "add", addr, "dev", ifname])
                _run(["ip", "-n", ns, "link", "set", ifname, "up"])
        for address in (self.gateway.address, PUBLIC_ADDRESS):
            _run(["ip", "-n", self.internet, "addr", "add", f"{address}/32", "dev", "lo"])
        _run(["ip", "-n", self.onprem, "route", "add", f"{PUBLIC_ADDRESS}/32", "via", self.proxy_address])
        self._write_etc()
        self._make_certificates()
        for account in (self.cache, self.gateway):  # both start before either is waited for
            self._start_azurite(account)
        self.start_dns()
        self.start_proxy()
        for account in (self.cache, self.gateway):
            self._wait_azurite(account)

    def down(self) -> None:
        """Stop every process, then remove namespaces (their veths go with them) and /etc/netns."""
        for name in list(self.procs):
            self._stop(name)
        for ex in self._executors.values():
            ex.shutdown(wait=True)
        self._executors.clear()
        self.remove_leftovers()

    def remove_leftovers(self) -> None:
        """Only our namespace names: whatever runs inside them was started by this harness."""
        existing = set(_run(["ip", "netns", "list"]).stdout.split())
        for ns in self.namespaces:
            if ns in existing:
                pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                _run(["ip", "netns", "del", ns], check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)
        with contextlib.suppress(OSError):
            Path("/etc/netns").rmdir()  # only when empty: other tools may keep theirs there

    def _write_etc(self) -> None:
        # `ip netns exec` bind-mounts these over /etc/resolv.conf and /etc/hosts.
        for ns, resolver, hosts in (
            (self.onprem, DNS_SERVER, ""),
            (self.private, "127.0.0.1", ""),  # nothing listens: names fail at once
            (self.internet, "127.0.0.1",  # the proxy's view of the internet
             f"{self.gateway.address} {self.gateway.fqdn} {' '.join(CONTROL_ENDPOINTS)}\n"),
        ):
            etc = Path(f"/etc/netns/{ns}")
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:1 attempts:1\n")
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{hosts}")

    def set_onprem_hosts(self, extra: str = "") -> None:
        """The onprem /etc/hosts: localhost plus ``extra`` lines (a hosts-file answer, for testing)."""
        Path(f"/etc/netns/{self.onprem}/hosts").write_text(f"127.0.0.1 localhost\n{extra}")

    def _make_certificates(self) -> None:
        import trustme

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_file))
        for account in (self.cache, self.gateway):
            # The account's name only, no IP: a client that checks the name against the address fails.
            names = [account.fqdn, *(CONTROL_ENDPOINTS if account is self.gateway else ())]
            cert = ca.issue_cert(*names)
            cert.cert_chain_pems[0].write_to_path(str(self.workdir / f"{account.name}-cert.pem"))
            cert.private_key_pem.write_to_path(str(self.workdir / f"{account.name}-key.pem"))

    # -- processes ---------------------------------------------------------------------------------

    def _spawn(self, name: str, ns: str, args: Sequence[str], env: dict[str, str] | None = None,
               supervise: bool = False) -> None:
        log = self.workdir / f"{name}.log"
        if supervise:
            args = ["sh", "-c", _SUPERVISE, name, *args]
        with open(log, "ab") as out:
            self.procs[name] = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.workdir, env=env, preexec_fn=_die_with_parent)

    def _stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _alive(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} is not running:\n{tail}")

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._alive(name)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready within {timeout:.0f} s")
            time.sleep(0.05)

    def _start_azurite(self, account: Account) -> None:
        store = self.workdir / f"azurite-{account.name}"
        store.mkdir(exist_ok=True)
        args = [find_azurite(), "--blobHost", account.address, "--blobPort", "443", "--skipApiVersionCheck",
                "--disableTelemetry", "--silent", "--inMemoryPersistence",
                "--cert", str(self.workdir / f"{account.name}-cert.pem"),
                "--key", str(self.workdir / f"{account.name}-key.pem")]
        self._spawn(f"azurite-{account.name}", account.namespace, args,
                    env=dict(os.environ, AZURITE_ACCOUNTS=f"{account.name}:{account.key}"))

    def _wait_azurite(self, account: Account) -> None:
        def ready() -> bool:
            try:
                self.on_account(account, lambda svc: svc.get_account_information())
            except Exception:
                return False
            return True

        self._wait(f"azurite-{account.name}", ready, timeout=60)

    def start_dns(self) -> None:
        self.set_cache_answer(self.cache.address, restart=False)
        self._start_dnsmasq()

    def _start_dnsmasq(self) -> None:
        self._stop("dnsmasq")
        self._spawn("dnsmasq", self.onprem, ["dnsmasq", "--keep-in-foreground", "--user=root", "--log-facility=-",
                                             "--log-queries", f"--conf-file={self.workdir / 'dnsmasq.conf'}"],
                    supervise=True)
        address = self.dns_answer[0]
        self._wait("dnsmasq", lambda: self.resolve(self.cache.fqdn) == [address])

    def set_cache_answer(self, address: str, *, privatelink: bool = True, restart: bool = True) -> None:
        """What the cache account's name resolves to from onprem: through the privatelink zone
        (Azure private DNS) or, ``privatelink=False``, a public-style chain. Waits until it answers."""
        target = self.cache.privatelink_fqdn if privatelink else PUBLIC_CNAME
        # The CNAME chain lives in the main file (read at start only); the A records in a hosts file
        # that SIGHUP rereads, so flipping an address mid-replication leaves no gap in the service.
        conf = "\n".join(["no-resolv", "no-hosts", f"listen-address={DNS_SERVER}", "bind-interfaces",
                          f"addn-hosts={self.workdir / 'dns-hosts'}", f"cname={self.cache.fqdn},{target}", ""])
        tmp = self.workdir / "dns-hosts.tmp"
        tmp.write_text(f"{address} {target}\n{self.gateway.address} {self.gateway.fqdn}\n")
        tmp.replace(self.workdir / "dns-hosts")
        self.dns_answer = (address, privatelink)
        conf_file = self.workdir / "dnsmasq.conf"
        changed = not conf_file.exists() or conf_file.read_text() != conf
        conf_file.write_text(conf)
        if not restart:
            return
        if changed or not self._running("dnsmasq"):
            self._start_dnsmasq()
        else:
            self.procs["dnsmasq"].send_signal(signal.SIGHUP)
            self._wait("dnsmasq", lambda: self.resolve(self.cache.fqdn) == [address])

    def start_proxy(self) -> None:
        conf = self.workdir / "tinyproxy.conf"
        # No User: it stays root and so keeps the parent-death signal (it only serves our namespaces).
        conf.write_text(f"Port {PROXY_PORT}\nListen {self.proxy_address}\n"
                        "Timeout 60\nMaxClients 50\nAllow 172.31.0.0/24\nConnectPort 443\n"
                        "DisableViaHeader Yes\nLogLevel Info\n")
        self._stop("tinyproxy")
        self._spawn("tinyproxy", self.internet, ["tinyproxy", "-d", "-c", str(conf)])
        self._wait("tinyproxy", lambda: self.tcp_connect(self.internet, self.proxy_address, PROXY_PORT) == 0)

    def stop_proxy(self) -> None:
        self._stop("tinyproxy")

    def _running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def proxy_connects(self) -> list[str]:
        """Every ``host:port`` that clients asked the proxy to CONNECT to, in order."""
        log = self.workdir / "tinyproxy.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP", text)

    def reset(self) -> None:
        """The default state between tests: private answer, proxy up, an empty onprem hosts file."""
        self.set_onprem_hosts()
        if self.dns_answer != (self.cache.address, True) or not self._running("dnsmasq"):
            self.set_cache_answer(self.cache.address)
        if not self._running("tinyproxy"):
            self.start_proxy()

    # -- looking inside ----------------------------------------------------------------------------

    def executor(self, ns: str) -> ThreadPoolExecutor:
        """A one-thread pool whose thread lives in ``ns`` (sockets only: names resolve as on the host)."""
        if ns not in self._executors:
            self._executors[ns] = ThreadPoolExecutor(1, thread_name_prefix=ns, initializer=enter_netns,
                                                     initargs=(ns,))
        return self._executors[ns]

    def tcp_connect(self, ns: str, address: str, port: int, timeout: float = 2.0) -> int:
        """Connect from ``ns`` to an IP address: 0, or the errno (ECONNREFUSED, ENETUNREACH...)."""
        def probe() -> int:
            with socket.socket() as s:
                s.settimeout(timeout)
                return s.connect_ex((address, port))

        return self.executor(ns).submit(probe).result()

    def on_account(self, account: Account, fn: Callable[[Any], T]) -> T:
        """``fn(BlobServiceClient)`` run from the account's own namespace (nothing crosses a link):
        path-style to its address, TLS checked against its name."""
        return self.executor(account.namespace).submit(admin_call, account, self.ca_file, fn).result()

    def new_container(self, account: Account, prefix: str = "t") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        self.on_account(account, lambda svc: svc.create_container(name))
        return name

    def link_bytes(self) -> Counters:
        """Byte counters of onprem's two veth ends, read inside onprem."""
        stats = [f"/sys/class/net/{i}/statistics/{d}_bytes" for i in (self.private_if, self.internet_if)
                 for d in ("tx", "rx")]
        values = [int(v) for v in _run(["ip", "netns", "exec", self.onprem, "cat", *stats]).stdout.split()]
        return Counters(LinkBytes(values[0], values[1]), LinkBytes(values[2], values[3]))

    def resolve(self, name: str) -> list[str]:
        """IPv4 addresses for ``name`` as a program in onprem sees them (glibc: hosts file, then DNS)."""
        out = _run(["ip", "netns", "exec", self.onprem, "getent", "ahostsv4", name], check=False).stdout
        return sorted({line.split()[0] for line in out.splitlines() if "STREAM" in line})

    # -- running things in onprem ------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for onprem programs: no proxy variables, the account keys by reference."""
        env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        env.update({self.cache.key_env: self.cache.key, self.gateway.key_env: self.gateway.key,
                    "COLUMNS": "200", "NO_COLOR": "1"}, **extra)
        return env

    def run(self, ns: str, *args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("env", self.env())
        return _run(["ip", "netns", "exec", ns, *args], check=False, timeout=timeout, **kw)

    def popen(self, ns: str, *args: str, **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("env", self.env())
        return subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=_die_with_parent, **kw)

    def godwit(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        """`godwit ARGS` in onprem (this venv's godwit)."""
        return self.run(self.onprem, str(VENV_BIN / "godwit"), *args, **kw)

    def python(self, code: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(self.onprem, sys.executable, "-c", code, **kw)

    def account_options(self, account: Account, container: str, **extra: Any) -> dict[str, Any]:
        """A godwit.toml Azure section for ``account`` by its production name (key by reference)."""
        return {"account_url": account.url, "container": container, "ca_file": str(self.ca_file),
                "credential": {"kind": "account_key", "env": account.key_env}, **FAST, **extra}


@pytest.fixture(scope="session")
def netns_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    """The session's topology. Each pytest-xdist worker builds its own, under names of its own
    (``gw-onprem-gw1``...): namespaces keep their addresses apart, so two can run at once."""
    require_tools()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    suffix = f"-{worker}" if worker.isalnum() else ""
    with host_lock(suffix=suffix):
        topo = Topology(tmp_path_factory.mktemp("netns"), suffix)
        try:
            topo.up()
            yield topo
        finally:
            topo.down()
