"""The ``[network]`` table of godwit.toml: which path each plane takes, validated strictly.

The data plane (the cache account) goes over the internet, a private endpoint (ExpressRoute
private peering) or Microsoft peering; everything else is the control plane. ``proxy`` and
``bypass`` decide direct or proxied per host; ``private_cidrs`` and ``dns_servers`` define what a
private answer is and who is asked. The decisions themselves are made in :mod:`godwit.network`.

Bypass entries are parsed here into :class:`BypassEntry` (exact name, ``*.``-wildcard, the
article's ``.*.name`` form, a regular expression, an IP address or a CIDR range, each with an
optional port) so that a bad entry is an error when the project opens, not at the first request.
The proxy's credential, like the Azure ones, is named by reference only.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from godwit.config.hostpattern import HostPattern, PatternError, compile_pattern, is_regex
from godwit.errors import ConfigError

DATA_PLANES = ("internet", "private-endpoint", "microsoft-peering")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
KEYS = frozenset({"data_plane", "proxy", "proxy_credential", "bypass", "private_cidrs", "dns_servers",
                  "source_region", "target_region", "route_filter_communities", "expressroute_interface",
                  "expressroute_next_hop"})
#: The address ranges a private endpoint can have: RFC 1918, RFC 6598 (shared address space), and
#: IPv6 unique local addresses.
PRIVATE_RANGES: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))

_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_REGION = re.compile(r"^[a-z][a-z0-9]{1,39}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMMUNITY = re.compile(r"^(\d{1,5}):(\d{1,5})$")
WHERE = "[network]"


@dataclass(frozen=True)
class SecretRef:
    """Where a secret is (an environment variable or a file), never the secret itself."""

    env: str | None = None
    file: Path | None = None

    @property
    def source(self) -> str:
        return f"environment variable {self.env}" if self.env is not None else f"file {self.file}"


@dataclass(frozen=True)
class BypassEntry:
    """One entry of the bypass list. ``kind``: exact, wildcard, regex, ip, cidr or all."""

    text: str
    kind: str
    name: str = ""  # exact: the host; wildcard: the suffix after "*."
    port: int | None = None
    pattern: HostPattern | None = field(default=None, compare=False)
    network: IPNetwork | None = None


@dataclass(frozen=True)
class DnsServer:
    address: IPAddress
    port: int = 53

    def __str__(self) -> str:
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return host if self.port == 53 else f"{host}:{self.port}"


@dataclass(frozen=True)
class NetworkConfig:
    data_plane: str = "internet"
    proxy: str | None = None  # http(s)://HOST:PORT, no credentials; None: direct
    proxy_credential: SecretRef | None = None  # "user:password" for the proxy's Basic auth
    bypass: tuple[BypassEntry, ...] = ()
    private_cidrs: tuple[IPNetwork, ...] = ()
    dns_servers: tuple[DnsServer, ...] = ()  # empty: the system's resolver (hosts file, resolv.conf)
    source_region: str | None = None
    target_region: str | None = None
    route_filter_communities: tuple[str, ...] = ()
    expressroute_interface: str | None = None
    expressroute_next_hop: IPAddress | None = None
    #: Whether godwit.toml has a [network] table at all. Without one, godwit keeps the Azure
    #: sections' own proxy settings (and the environment's HTTPS_PROXY); with one, it decides alone.
    configured: bool = False


def is_private(address: IPAddress) -> bool:
    """RFC 1918, RFC 6598 or an IPv6 unique local address (an IPv4-mapped IPv6 is unwrapped)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in PRIVATE_RANGES)


def _fail(key: str, message: str, hint: str | None = None) -> ConfigError:
    return ConfigError(f"{WHERE} {key} {message}", hint=hint or "see docs/configuration.md, section [network]")


def valid_hostname(name: str) -> bool:
    labels = name.split(".")
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in labels)


def _split_port(text: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` into (host, port); a bare IPv6 address keeps its colons."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("missing ']'")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError("junk after ']'")
        return host, _port(rest[1:])
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, _port(port)
    return text, None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not 1-65535")
    return int(text)


def _ip_entry(text: str) -> BypassEntry | None:
    """``text`` as an IP address or CIDR range (with an optional port), or None if it is not one."""
    try:
        host, port = _split_port(text)
        host = host.rstrip(".") if "/" not in host else host  # "10.1.0.5." is that address too
        if "/" in host:
            return BypassEntry(text, "cidr", port=port, network=ipaddress.ip_network(host, strict=True))
        return BypassEntry(text, "ip", port=port, network=ipaddress.ip_network(host))
    except ValueError:
        return None


def parse_bypass_entry(raw: object) -> BypassEntry:
    """One bypass entry, classified; ConfigError saying what is wrong and how to write it."""
    key = "bypass entry"
    if not isinstance(raw, str) or not raw.strip():
        raise _fail(key, f"{raw!r} must be a non-empty string")
    text = raw.strip()
    if any(c.isspace() or not c.isprintable() for c in text):
        raise _fail(key, f"{text!r} contains spaces or control characters", "one host or pattern per entry")
    if text == "*":
        return BypassEntry(text, "all")
    if text.startswith(".*."):
        # The article's form: "any name under this domain", as a wildcard (its dots are literal).
        try:
            suffix, port = _split_port(text[3:])
        except ValueError:
            suffix, port = "", None
        if valid_hostname(suffix.lower().rstrip(".")):
            return BypassEntry(text, "wildcard", suffix.lower().rstrip("."), port)
    address = _ip_entry(text)
    if address is not None:
        return address
    if is_regex(text) and not text.startswith("*."):
        try:
            return BypassEntry(text, "regex", pattern=compile_pattern(text))
        except PatternError as exc:
            raise _fail(key, f"{text!r} is not a supported regular expression: {exc}",
                        "use an exact name, *.domain, or a simple regex such as "
                        ".*\\.blob\\.core\\.windows\\.net") from None
    try:
        host, port = _split_port(text)
    except ValueError as exc:
        raise _fail(key, f"{text!r}: {exc}", "write HOST, HOST:PORT, *.DOMAIN or an IP/CIDR") from None
    if "/" in host:
        try:
            ipaddress.ip_network(host, strict=True)
        except ValueError:
            raise _fail(key, f"{text!r} is not a CIDR range (host bits set, or not an address)",
                        "write the network address, for example 10.1.0.0/24") from None
    name = host.lower()
    if name.startswith("*."):
        suffix = name[2:].rstrip(".")
        if not valid_hostname(suffix):
            raise _fail(key, f"{text!r}: {suffix!r} is not a valid domain name")
        return BypassEntry(text, "wildcard", suffix, port)
    name = name.rstrip(".")
    if name.startswith("."):
        raise _fail(key, f"{text!r} is ambiguous (a NO_PROXY suffix?)",
                    f"write *{name} for every name under {name[1:]}, or the exact name")
    if not valid_hostname(name):
        raise _fail(key, f"{text!r} is not a valid host name")
    return BypassEntry(text, "exact", name, port)


def _strings(table: dict[str, Any], key: str) -> list[Any]:
    value = table.pop(key, [])
    if not isinstance(value, list):
        raise _fail(key, f"must be a list, got {value!r}", f'for example {key} = ["..."]')
    return value


def _optional_str(table: dict[str, Any], key: str) -> str | None:
    if key not in table:
        return None
    value = table.pop(key)
    if not isinstance(value, str) or not value:
        raise _fail(key, f"must be a non-empty string, got {value!r}")
    return value


def parse_proxy_url(value: str) -> str:
    hint = 'write proxy = "http://HOST:PORT"; a user name and password go in proxy_credential'
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise _fail("proxy", f"{value!r} has an invalid port", hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail("proxy", f"{value!r} is not an http(s) URL", hint)
    if parts.username or parts.password or "@" in parts.netloc:
        raise _fail("proxy", "must not carry a user name or password", hint)
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise _fail("proxy", f"{value!r} must be only scheme, host and port", hint)
    if port is None:
        raise _fail("proxy", f"{value!r} needs a port", hint)
    return value.rstrip("/")


def parse_secret_ref(value: object, key: str, root: Path) -> SecretRef:
    hint = f'{key} = {{ env = "GODWIT_PROXY_AUTH" }} or {{ file = "secrets/proxy" }}, holding user:password'
    if not isinstance(value, Mapping):
        raise _fail(key, "must be a table", hint)
    table = dict(value)
    env, file = table.pop("env", None), table.pop("file", None)
    if table:
        raise _fail(key, f"has unknown key(s): {', '.join(sorted(table))}", hint)
    if (env is None) == (file is None):
        raise _fail(key, "needs exactly one of env or file", hint)
    if env is not None:
        if not isinstance(env, str) or not _ENV.match(env):
            raise _fail(key, f"env must be an environment variable name, got {env!r}",
                        "name the variable; never put the secret itself in godwit.toml")
        return SecretRef(env=env)
    if not isinstance(file, str) or not file:
        raise _fail(key, f"file must be a path, got {file!r}", hint)
    return SecretRef(file=(root / file).resolve())


def parse_network(value: object, root: Path) -> NetworkConfig:
    """Validate the ``[network]`` table (``value`` is what TOML gave; absent means defaults)."""
    if value is None:
        return NetworkConfig()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{WHERE} must be a table")
    table = dict(value)
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) in {WHERE}: {', '.join(unknown)}",
                          hint=f"known keys: {', '.join(sorted(KEYS))}")
    plane = table.pop("data_plane", "internet")
    if plane not in DATA_PLANES:
        raise _fail("data_plane", f"must be one of {', '.join(DATA_PLANES)}, got {plane!r}")
    proxy = _optional_str(table, "proxy")
    if proxy is not None:
        proxy = parse_proxy_url(proxy)
    cred = parse_secret_ref(table.pop("proxy_credential"), "proxy_credential", root) \
        if "proxy_credential" in table else None
    if cred is not None and proxy is None:
        raise _fail("proxy_credential", "is set but there is no proxy", "set proxy, or remove proxy_credential")
    bypass = tuple(parse_bypass_entry(e) for e in _strings(table, "bypass"))
    cidrs: list[IPNetwork] = []
    for raw in _strings(table, "private_cidrs"):
        try:
            net = ipaddress.ip_network(raw, strict=True) if isinstance(raw, str) else None
        except ValueError:
            net = None
        if net is None:
            raise _fail("private_cidrs", f"entry {raw!r} is not a CIDR range such as 10.1.0.0/24",
                        "write the network address of the private endpoint's subnet")
        if not any(net.version == p.version and net.subnet_of(p) for p in PRIVATE_RANGES):  # type: ignore[arg-type]
            raise _fail("private_cidrs", f"entry {raw!r} is not inside a private range (RFC 1918, RFC 6598, "
                        "fc00::/7)", "a private endpoint's address is private; check the subnet")
        cidrs.append(net)
    servers: list[DnsServer] = []
    for raw in _strings(table, "dns_servers"):
        try:
            if not isinstance(raw, str):
                raise ValueError
            host, port = _split_port(raw)
            servers.append(DnsServer(ipaddress.ip_address(host), port or 53))
        except ValueError:
            raise _fail("dns_servers", f"entry {raw!r} is not an IP address (optionally :PORT)",
                        "name resolvers by address, for example \"10.0.0.4\" or \"[fd00::53]:5353\"") from None
    regions = {}
    for key in ("source_region", "target_region"):
        region = _optional_str(table, key)
        if region is not None and not _REGION.match(region):
            raise _fail(key, f"{region!r} is not an Azure region name", 'for example "westeurope" or "eastus2"')
        regions[key] = region
    communities: list[str] = []
    for raw in _strings(table, "route_filter_communities"):
        m = _COMMUNITY.match(raw) if isinstance(raw, str) else None
        if m is None or int(m[1]) > 65535 or int(m[2]) > 65535:
            raise _fail("route_filter_communities", f"entry {raw!r} is not a BGP community ASN:VALUE",
                        'for example "12076:51004"; see docs/configuration.md')
        communities.append(raw)
    iface = _optional_str(table, "expressroute_interface")
    if iface is not None and not _IFNAME.match(iface):
        raise _fail("expressroute_interface", f"{iface!r} is not a network interface name")
    hop_text = _optional_str(table, "expressroute_next_hop")
    try:
        hop = ipaddress.ip_address(hop_text) if hop_text is not None else None
    except ValueError:
        raise _fail("expressroute_next_hop", f"{hop_text!r} is not an IP address") from None
    return NetworkConfig(plane, proxy, cred, bypass, tuple(cidrs), tuple(servers), regions["source_region"],
                         regions["target_region"], tuple(communities), iface, hop, configured=True)
