"""DNS as godwit sees it: the answer, the CNAME chain that led there, and who gave it.

:class:`Resolver` asks the servers of ``[network] dns_servers`` when set; otherwise it does what
the system's resolver does (``files`` then ``dns`` in nsswitch terms): the hosts file first, then
the servers of ``/etc/resolv.conf``. An answer from the hosts file is flagged (``from_hosts``): the
article allows it for testing only. A and AAAA are both asked, so that no address is missed when
every address must be private.

Failures are :class:`~godwit.errors.NetworkPolicyError` saying which name, which servers and what
went wrong: the private path is refused rather than guessed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from godwit.config.network import DnsServer, IPAddress
from godwit.errors import NetworkPolicyError
from godwit.network.addresses import parse_address
from godwit.network.bypass import normalize_host

HOSTS_FILE = Path("/etc/hosts")
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Resolution:
    """What ``name`` resolved to. ``chain`` starts with ``name`` and follows every CNAME."""

    name: str
    chain: tuple[str, ...]
    addresses: tuple[IPAddress, ...]
    from_hosts: bool = False
    source: str = ""  # "hosts file /etc/hosts", "DNS 10.0.0.4", "an IP address"
    ttl: int | None = None
    at: float = 0.0  # time.monotonic() of the answer

    def describe(self) -> str:
        """``a → b → 10.1.0.5, 10.1.0.6`` (from SOURCE)."""
        answer = ", ".join(map(str, self.addresses)) or "no address"
        return f"{' → '.join(self.chain)} → {answer} (from {self.source})"


def hosts_lookup(name: str, hosts_file: Path = HOSTS_FILE) -> tuple[IPAddress, ...]:
    """Every address the hosts file gives ``name`` (all matching lines, not only the first)."""
    try:
        text = hosts_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    found: list[IPAddress] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        address = parse_address(fields[0].split("%", 1)[0])
        if address is not None and name in (normalize_host(f) for f in fields[1:]) and address not in found:
            found.append(address)
    return tuple(found)


@dataclass(frozen=True)
class Resolver:
    """Resolves names as configured; a callable ``name -> Resolution``. Holds no state."""

    servers: tuple[DnsServer, ...] = ()
    hosts_file: Path = HOSTS_FILE
    resolv_conf: Path = RESOLV_CONF
    timeout: float = 5.0

    @property
    def where(self) -> str:
        if self.servers:
            return "DNS " + ", ".join(map(str, self.servers))
        return f"the system's resolver ({self.hosts_file}, then the servers of {self.resolv_conf})"

    def __call__(self, host: str) -> Resolution:
        name = normalize_host(host)
        now = time.monotonic()
        literal = parse_address(name)
        if literal is not None:
            return Resolution(name, (name,), (literal,), source="an IP address", at=now)
        if not self.servers:
            listed = hosts_lookup(name, self.hosts_file)
            if listed:
                return Resolution(name, (name,), listed, from_hosts=True, source=f"hosts file {self.hosts_file}",
                                  at=now)
        return self._dns(name, now)

    def _resolver(self) -> object:
        import dns.nameserver
        import dns.resolver

        try:
            if self.servers:
                r = dns.resolver.Resolver(configure=False)
                r.nameservers = [dns.nameserver.Do53Nameserver(str(s.address), s.port) for s in self.servers]
            else:
                r = dns.resolver.Resolver(filename=str(self.resolv_conf))
        except dns.resolver.NoResolverConfiguration:
            raise NetworkPolicyError(f"no DNS server is configured in {self.resolv_conf}",
                                     hint="set [network] dns_servers, or fix the system's resolver") from None
        r.lifetime = self.timeout
        r.timeout = min(self.timeout, 2.0)
        r.search = []
        return r

    def _dns(self, name: str, now: float) -> Resolution:
        import dns.exception
        import dns.resolver

        resolver = self._resolver()
        assert isinstance(resolver, dns.resolver.Resolver)
        chain = [name]
        addresses: list[IPAddress] = []
        ttls: list[int] = []
        server = ""
        for rdtype in ("A", "AAAA"):
            try:
                answer = resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                raise NetworkPolicyError(f"{name} does not exist in DNS (NXDOMAIN from {self.where})",
                                         hint=_fix_hint(name)) from None
            except dns.resolver.NoNameservers as exc:
                raise NetworkPolicyError(f"no DNS server could answer for {name} ({self.where}): {exc}",
                                         hint="check that the resolvers are up and allowed to answer") from None
            except dns.exception.Timeout:
                raise NetworkPolicyError(f"DNS for {name} timed out after {self.timeout:g} s ({self.where})",
                                         hint="check that the resolvers are reachable from here") from None
            except dns.exception.DNSException as exc:
                raise NetworkPolicyError(f"DNS for {name} failed ({self.where}): {exc}") from None
            server = server or str(answer.nameserver)
            for rrset in answer.chaining_result.cnames:
                for rr in rrset:
                    target = rr.target.to_text(omit_final_dot=True).lower()
                    if target not in chain:
                        chain.append(target)
                ttls.append(rrset.ttl)
            if answer.rrset is not None:
                ttls.append(answer.rrset.ttl)
                for rr in answer.rrset:
                    a = parse_address(rr.address)
                    if a is not None and a not in addresses:
                        addresses.append(a)
        return Resolution(name, tuple(chain), tuple(addresses), source=f"DNS {server}",
                          ttl=min(ttls) if ttls else None, at=now)


def _fix_hint(name: str) -> str:
    return (f"create the record for {name} (see the fix of `godwit network check`), or set [network] "
            "dns_servers to resolvers that know it")

