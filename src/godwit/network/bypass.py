"""The bypass matcher: does a host go direct, or through the proxy?

godwit decides this itself, for every client alike, because Python's ``NO_PROXY`` knows only
exact names and dot-suffixes, and an explicit ``proxies=`` ignores it (FIELD-NOTES). Entries come
parsed from ``[network] bypass`` (:func:`godwit.config.network.parse_bypass_entry`):

* ``lsa1.blob.core.windows.net`` — that name exactly;
* ``*.blob.core.windows.net`` and the article's ``.*.blob.core.windows.net`` — any name under the
  domain (not the domain itself);
* a regular expression (``lsa[0-9]+\\.blob\\.core\\.windows\\.net``), matched against the whole name
  in linear time (:mod:`godwit.config.hostpattern`: no pattern can hang godwit);
* ``10.1.0.5``, ``10.1.0.0/24``, ``[fd00::5]`` — IP hosts only;
* ``*`` — every host.

Names compare case-insensitively, trailing dots ignored; ``HOST:PORT`` applies to that port only.
The first entry that matches wins (it is the one reported).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from godwit.config.network import BypassEntry, parse_bypass_entry

_CACHE_MAX = 4096


def normalize_host(host: str) -> str:
    """Lowercase, no brackets, no trailing dots: the form every rule compares against."""
    return host.strip().strip("[]").rstrip(".").lower()


def entry_matches(entry: BypassEntry, host: str, port: int | None) -> bool:
    """Whether ``entry`` covers ``host`` (normalised) on ``port`` (the URL's effective port)."""
    if entry.port is not None and entry.port != port:
        return False
    if entry.kind == "all":
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if entry.kind in ("ip", "cidr"):
        return (address is not None and entry.network is not None
                and address.version == entry.network.version and address in entry.network)
    if entry.kind == "exact":
        return address is None and host == entry.name
    if entry.kind == "wildcard":
        return address is None and host.endswith("." + entry.name)
    assert entry.pattern is not None
    return entry.pattern.fullmatch(host)


@dataclass
class BypassList:
    """An ordered bypass list with a small cache of answers (hosts repeat on every request)."""

    entries: tuple[BypassEntry, ...] = ()
    _cache: dict[tuple[str, int | None], BypassEntry | None] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def parse(cls, texts: Iterable[str]) -> BypassList:
        """From strings as written in godwit.toml (ConfigError on a bad one)."""
        return cls(tuple(parse_bypass_entry(t) for t in texts))

    def match(self, host: str, port: int | None = None) -> BypassEntry | None:
        """The first entry that covers ``host`` on ``port``, or None (then: through the proxy)."""
        key = (normalize_host(host), port)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        found = next((e for e in self.entries if entry_matches(e, key[0], port)), None)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = found
        return found

    def bypasses(self, host: str, port: int | None = None) -> bool:
        return self.match(host, port) is not None
