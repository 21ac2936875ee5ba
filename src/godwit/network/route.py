"""The one routing decision for every outbound connection: :meth:`Router.route`.

For each request godwit decides, from its URL alone:

1. **the plane**: ``data`` when the host is the cache account's (the replication bytes), else
   ``control`` (the gateway account, Entra ID, every other Azure endpoint, the service);
2. **direct or proxied**: through ``[network] proxy`` unless a bypass entry covers the host;
3. **the address**, for the data plane in ``private-endpoint`` mode: the cache account's name is
   resolved, **every** address must be private (and inside ``private_cidrs`` when set), and the
   connection goes to the checked address (pinned), directly, never through the proxy. Otherwise
   the request is refused before a byte leaves, with what resolved to what and the fix.

A changed answer for the data host while godwit runs is recorded (:meth:`Router.changes`, the
``on_change`` callback); :meth:`Router.refuse_if_changed` then refuses until someone calls
:meth:`Router.acknowledge`. The engine calls it before each cycle, so the next cycle refuses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from godwit.config.network import IPAddress, IPNetwork, NetworkConfig
from godwit.errors import NetworkPolicyError
from godwit.network.addresses import answer_problems
from godwit.network.bypass import BypassList, normalize_host
from godwit.network.resolve import Resolution, Resolver

Plane = Literal["data", "control"]
PRIVATELINK_ZONE = "privatelink.blob.core.windows.net"
#: ``(resolution, private_cidrs) -> problems``; empty means acceptable. Tests substitute one
#: that also accepts loopback, since their private endpoint is on 127.0.0.x.
AnswerCheck = Callable[[Resolution, Sequence[IPNetwork]], list[str]]


def check_answer(resolution: Resolution, cidrs: Sequence[IPNetwork]) -> list[str]:
    return answer_problems(resolution.addresses, cidrs)


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


@dataclass(frozen=True)
class Route:
    """Where one request goes. ``proxy`` None means direct; ``pinned`` is the address to connect to."""

    host: str
    port: int
    plane: Plane
    mode: str  # the [network] data_plane, for the data plane; "control" otherwise
    proxy: str | None = None
    pinned: IPAddress | None = None
    rule: str | None = None  # the bypass entry that sent it direct
    resolution: Resolution | None = None

    @property
    def path(self) -> str:
        """``private-endpoint 10.1.0.5, direct``, ``microsoft-peering, via proxy URL``, ``direct``..."""
        if self.pinned is not None:
            return f"{self.mode} {self.pinned}, direct"
        how = f"via proxy {self.proxy}" if self.proxy else "direct"
        return how if self.plane == "control" else f"{self.mode}, {how}"

    def describe(self) -> str:
        why = f", bypass entry {self.rule!r}" if self.rule else ""
        return f"{self.plane} plane request to {self.host}:{self.port} ({self.path}{why})"


@dataclass(frozen=True)
class AnswerChange:
    """The data host's answer changed from ``before`` to ``after`` while godwit ran."""

    host: str
    before: tuple[IPAddress, ...]
    after: Resolution
    problems: tuple[str, ...]
    at: float  # time.time()

    def describe(self) -> str:
        was = ", ".join(map(str, self.before))
        tail = f"; refused: {'; '.join(self.problems)}" if self.problems else " (still private)"
        return f"DNS for {self.host} changed from {was} to {self.after.describe()}{tail}"


def private_endpoint_fix(resolution: Resolution, problems: Sequence[str]) -> str:
    """The fix for a data host whose answer is not the private endpoint's, from what was seen."""
    name = resolution.name
    account = name.split(".", 1)[0]
    hosts_hint = f"for testing only, a hosts entry `<private IP> {name}`"
    if resolution.from_hosts:
        return f"the hosts file gives {name} a non-private address: correct or remove that entry"
    if name.endswith(".blob.core.windows.net") and not any(c.endswith("." + PRIVATELINK_ZONE)
                                                          for c in resolution.chain[1:]):
        return (f"{name} does not resolve through {PRIVATELINK_ZONE}: create the private endpoint on the "
                f"account's blob sub-resource, the private DNS zone {PRIVATELINK_ZONE} with its VNet link "
                f"and the A record {account} → the endpoint's address; on premises, a conditional "
                f"forwarder for blob.core.windows.net to a resolver in that VNet (or set [network] "
                f"dns_servers); {hosts_hint}")
    if all("outside private_cidrs" in p for p in problems):
        return (f"fix the A record {account} in the {PRIVATELINK_ZONE} zone (or the endpoint's DNS zone "
                f"group) to the private endpoint's address, or correct [network] private_cidrs")
    return (f"the {PRIVATELINK_ZONE} name is answered from public DNS here: check the zone's VNet link "
            f"and its A record {account}, and the on-premises conditional forwarder for "
            f"{PRIVATELINK_ZONE} to the VNet's resolver (or set [network] dns_servers); {hosts_hint}")


def data_host_of(account_url: str) -> str:
    """The host of an account URL, normalised (the data host when it is the cache account's)."""
    return normalize_host(urlsplit(account_url).hostname or "")


def router_for(network: NetworkConfig, cache_account_url: str | None, **kwargs: Any) -> Router | None:
    """The project's Router, or None without a ``[network]`` table (then the Azure sections' own
    proxy settings apply). ``kwargs`` go to :class:`Router` (``on_change`` for the engine's event)."""
    if not network.configured:
        return None
    return Router(network, [data_host_of(cache_account_url)] if cache_account_url else [], **kwargs)


class Router:
    """Decides the route of every request (thread-safe; one per project)."""

    def __init__(self, network: NetworkConfig, data_hosts: Iterable[str] = (), *,
                 resolver: Callable[[str], Resolution] | None = None, check: AnswerCheck = check_answer,
                 answer_cache_seconds: float = 5.0,
                 on_change: Callable[[AnswerChange], None] | None = None) -> None:
        self.network = network
        self.data_hosts = frozenset(normalize_host(h) for h in data_hosts if h)
        self.bypass = BypassList(network.bypass)
        self.resolver = resolver or Resolver(network.dns_servers)
        self.check = check
        self.answer_cache_seconds = answer_cache_seconds
        self.on_change = on_change
        self._lock = threading.Lock()
        self._answers: dict[str, Resolution] = {}
        self._baseline: dict[str, frozenset[IPAddress]] = {}
        self._changes: list[AnswerChange] = []
        self.last_data_route: Route | None = None

    def plane_of(self, host: str) -> Plane:
        return "data" if normalize_host(host) in self.data_hosts else "control"

    def route(self, url: str) -> Route:
        """The route for ``url``; NetworkPolicyError when the plan forbids every path to it."""
        parts = urlsplit(url)
        host = normalize_host(parts.hostname or "")
        port = parts.port or default_port(parts.scheme)
        plane = self.plane_of(host)
        mode = self.network.data_plane if plane == "data" else "control"
        if plane == "data" and mode == "private-endpoint":
            resolution = self.private_answer(host)
            route = Route(host, port, plane, mode, pinned=_pick(resolution.addresses), resolution=resolution)
        else:
            rule = self.bypass.match(host, port)
            proxy = None if rule is not None else self.network.proxy
            route = Route(host, port, plane, mode, proxy=proxy, rule=rule.text if rule else None)
        if plane == "data":
            self.last_data_route = route
        return route

    def private_answer(self, host: str) -> Resolution:
        """``host``'s checked answer (fresh, or cached within its TTL); refuses a non-private one."""
        with self._lock:
            cached = self._answers.get(host)
        if cached is not None and time.monotonic() - cached.at < self._ttl(cached):
            return cached
        resolution = self.resolver(host)
        problems = self.check(resolution, self.network.private_cidrs)
        self._watch(host, resolution, problems)
        if problems:
            raise NetworkPolicyError(
                f"refused to send replication data to {host}: {resolution.describe()}, and "
                f"{'; '.join(problems)} (data_plane = \"private-endpoint\" needs every address private"
                f"{' and inside private_cidrs' if self.network.private_cidrs else ''})",
                hint=private_endpoint_fix(resolution, problems))
        with self._lock:
            self._answers[host] = resolution
        return resolution

    def _ttl(self, resolution: Resolution) -> float:
        if resolution.ttl is None:
            return self.answer_cache_seconds
        return min(float(resolution.ttl), self.answer_cache_seconds)

    # -- the watch on the data host's answer ------------------------------------------------------

    def _watch(self, host: str, resolution: Resolution, problems: Sequence[str]) -> None:
        now = frozenset(resolution.addresses)
        change = None
        with self._lock:
            before = self._baseline.get(host)
            if before is None:
                if not problems:
                    self._baseline[host] = now
                return
            last = self._changes[-1].after.addresses if self._changes else None
            if now != before and (last is None or frozenset(last) != now):
                change = AnswerChange(host, tuple(sorted(before, key=_order)), resolution, tuple(problems),
                                      time.time())
                self._changes.append(change)
        if change is not None and self.on_change is not None:
            self.on_change(change)

    def changes(self) -> tuple[AnswerChange, ...]:
        """Changes of the data host's answer not yet acknowledged, oldest first."""
        with self._lock:
            return tuple(self._changes)

    def refuse_if_changed(self) -> None:
        """Raise NetworkPolicyError if the data host's answer changed since it was first checked."""
        changes = self.changes()
        if changes:
            raise NetworkPolicyError(
                f"the cache account's address changed while replicating: {changes[-1].describe()}",
                hint="find out why (DNS zone, forwarder, hosts file), then run `godwit network check`; "
                     "replication resumes once the change is acknowledged")

    def acknowledge(self) -> None:
        """Accept the current answers as the new baseline (after a person checked them)."""
        with self._lock:
            for change in self._changes:
                if not change.problems:
                    self._baseline[change.host] = frozenset(change.after.addresses)
                else:
                    self._baseline.pop(change.host, None)
            self._changes.clear()
            self._answers.clear()


def _order(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


def _pick(addresses: Sequence[IPAddress]) -> IPAddress:
    # IPv4 first, lowest first: the same choice every time for the same answer.
    return sorted(addresses, key=_order)[0]
