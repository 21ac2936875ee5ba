"""The options of an Azure storage account section of godwit.toml, validated once.

:func:`parse_options` turns a ``[cache]``, ``[replicas]`` or ``[gateway]`` section (kind
``azure``) into :class:`AzureSettings`: the account URL and container checked against Azure's
naming rules, the credential as a reference (never the secret), retry, timeout, upload-size and
proxy settings. Every Azure client godwit builds starts from one of these.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from godwit.azure.credentials import CredentialRef, parse_credential
from godwit.errors import ConfigError

if TYPE_CHECKING:
    from godwit.network.route import Router

MIB = 1 << 20
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_LOOPBACK_NAMES = ("localhost",)

# Option keys per use. Pack keys tune block-blob uploads; the gateway account holds small state
# objects only, so it takes none of them.
CONNECTION_KEYS = frozenset({"account_url", "container", "credential", "ca_file", "retries",
                             "retry_backoff_seconds", "connect_timeout_seconds", "read_timeout_seconds",
                             "proxy"})
PACK_KEYS = frozenset({"max_concurrency", "block_size_mib", "single_put_mib", "validate_content"})
VALIDATE_CHOICES = ("md5", "none")
#: ``proxy = "none"``: connect directly, whatever the environment says.
NO_PROXY = "none"


@dataclass(frozen=True)
class AzureSettings:
    """One account and container, validated; holds no secret (the credential is a reference)."""

    account_url: str
    account: str
    container: str
    credential: CredentialRef
    ca_file: Path | None = None
    retries: int = 5
    retry_backoff_seconds: float = 1.0
    connect_timeout_seconds: float = 20.0
    read_timeout_seconds: float = 120.0
    # Measured on Azurite (bench/azure.py, quiet machine, HTTPS): with the cycle's 4 pack uploads
    # in flight, one Put Blob per pack (up to 64 MiB) gave 340 MB/s against 273 MB/s for 8 MiB
    # blocks two at a time plus a Put Block List: a quarter of the requests, and no commit step.
    # Larger objects still go in blocks, max_concurrency at a time.
    # MD5 per request costs a core ~50 ms per 32 MiB (about 650 MB/s), which halved the cycle's
    # throughput on 2 cores; it is off by default because TLS already authenticates every byte on
    # the wire (plain http is refused except to loopback) and the mover verifies every extent's own
    # checksum before writing. Turn it on behind TLS-inspecting proxies.
    max_concurrency: int = 2
    block_size_mib: int = 8
    single_put_mib: int = 64
    validate_content: str = "none"
    #: None: the environment's HTTPS_PROXY / HTTP_PROXY / NO_PROXY (read by azure.transport, never
    #: by the HTTP library); ``"none"``: direct; otherwise the proxy URL every request goes through.
    proxy: str | None = None
    #: The project's network plane (``[network]``): when set it routes every request (azure.transport).
    router: Router | None = field(default=None, compare=False)
    #: Extra SDK client keywords (request hooks, logging_enable) for tests and benchmarks only;
    #: godwit.toml cannot set them.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        return f"azure blob account {self.account} container {self.container}"


def parse_account_url(url: object, section: str) -> tuple[str, str]:
    """(normalised URL, account name) for a production-style or a path-style blob endpoint."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"[{section}] account_url must be a URL like https://ACCOUNT.blob.core.windows.net")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"[{section}] account_url {url!r} is not an http(s) URL",
                          hint="use https://ACCOUNT.blob.core.windows.net")
    if parts.query or parts.fragment:
        raise ConfigError(f"[{section}] account_url must not carry a query string",
                          hint="a SAS belongs in the credential reference, never in godwit.toml")
    if parts.username or parts.password:
        raise ConfigError(f"[{section}] account_url must not carry a user name or password")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"[{section}] account_url {url!r} has an invalid port") from None
    host = parts.hostname.lower()
    path = parts.path.strip("/")
    if _is_ip(host) or host in _LOOPBACK_NAMES:
        # Path style, as emulators serve it: http(s)://127.0.0.1:PORT/ACCOUNT
        if not path or "/" in path:
            raise ConfigError(f"[{section}] account_url {url!r} needs the account as its only path segment",
                              hint="with an IP address write http(s)://HOST:PORT/ACCOUNT")
        account = path
    else:
        if path:
            raise ConfigError(f"[{section}] account_url {url!r} must not have a path",
                              hint="the container is configured separately: container = \"NAME\"")
        if "." not in host:
            raise ConfigError(f"[{section}] account_url host {host!r} is not ACCOUNT.blob.<suffix>",
                              hint="use https://ACCOUNT.blob.core.windows.net")
        account = host.split(".", 1)[0]
    if not _ACCOUNT.match(account):
        raise ConfigError(f"[{section}] storage account name {account!r} is not valid",
                          hint="account names are 3-24 lowercase letters and digits")
    if parts.scheme == "http" and not (_is_loopback(host)):
        raise ConfigError(f"[{section}] account_url uses plain http to {host}",
                          hint="use https; plain http is accepted only for an emulator on this machine")
    netloc = host if port is None else f"{host}:{port}"
    base = f"{parts.scheme}://{netloc}"
    return (f"{base}/{account}" if path else base), account


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_container(name: object, section: str) -> str:
    """Azure's container naming rules, one clear error per rule broken."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"[{section}] container must be a name like \"godwit-cache\"")
    if not 3 <= len(name) <= 63:
        raise ConfigError(f"[{section}] container {name!r} is {len(name)} characters long; it must be 3-63")
    if name != name.lower():
        raise ConfigError(f"[{section}] container {name!r} has uppercase letters; container names are lowercase")
    bad = sorted(set(re.sub(r"[a-z0-9-]", "", name)))
    if bad:
        raise ConfigError(f"[{section}] container {name!r} contains {''.join(bad)!r}; "
                          "only lowercase letters, digits and hyphens are allowed")
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise ConfigError(f"[{section}] container {name!r} must start and end with a letter or digit")
    if "--" in name:
        raise ConfigError(f"[{section}] container {name!r} has consecutive hyphens; use single hyphens")
    return name


def parse_proxy(value: object, section: str) -> str:
    """``"none"`` or an ``http(s)://HOST:PORT`` proxy URL (credentials in it are refused)."""
    hint = f'write proxy = "http://HOST:PORT", or proxy = "{NO_PROXY}" to connect directly'
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[{section}] proxy must be a URL or \"{NO_PROXY}\", got {value!r}", hint=hint)
    if value == NO_PROXY:
        return value
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"[{section}] proxy {value!r} has an invalid port", hint=hint) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"[{section}] proxy {value!r} is not an http(s) URL", hint=hint)
    if parts.username or parts.password:
        raise ConfigError(f"[{section}] proxy must not carry a user name or password",
                          hint="godwit.toml holds no secrets; allow this host on the proxy instead")
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigError(f"[{section}] proxy {value!r} must be only scheme, host and port", hint=hint)
    return value.rstrip("/")


def _number(options: dict[str, Any], key: str, section: str, kind: type, lo: float, hi: float,
            default: Any) -> Any:
    if key not in options:
        return default
    value = options.pop(key)
    ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
    if isinstance(value, bool) or not ok or not lo <= value <= hi:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"[{section}] {key} must be {what} from {lo:g} to {hi:g}, got {value!r}")
    return kind(value)


def parse_options(options: Mapping[str, Any], section: str, root: Path, *,
                  allowed: frozenset[str] = CONNECTION_KEYS | PACK_KEYS,
                  default_concurrency: int = AzureSettings.max_concurrency) -> AzureSettings:
    """Validate the kind-specific options of an Azure account section of godwit.toml.

    ``options`` is left untouched; unknown keys (and keys outside ``allowed``) are errors.
    ``default_concurrency`` is the default of ``max_concurrency``, which means requests per put
    for the cache (packs are already put several at a time) and requests in flight for a replica.
    """
    opts = dict(options)
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(unknown)}",
                          hint=f"known keys: {', '.join(sorted(allowed))}")
    for required in ("account_url", "container", "credential"):
        if required not in opts:
            raise ConfigError(f"[{section}] needs {required} when kind = \"azure\"",
                              hint="see docs/configuration.md, section Azure")
    url, account = parse_account_url(opts.pop("account_url"), section)
    container = validate_container(opts.pop("container"), section)
    credential = parse_credential(opts.pop("credential"), section, root)
    ca_file = None
    if "ca_file" in opts:
        raw = opts.pop("ca_file")
        if not isinstance(raw, str) or not raw:
            raise ConfigError(f"[{section}] ca_file must be a path to a PEM file")
        ca_file = (root / raw).resolve()
        if not ca_file.is_file():
            raise ConfigError(f"[{section}] ca_file {ca_file} does not exist",
                              hint="give the PEM of the private CA, relative to the project folder")
    if url.startswith("http:") and ca_file is not None:
        raise ConfigError(f"[{section}] ca_file is set but account_url uses http", hint="use https")
    d = AzureSettings
    settings = {
        "retries": _number(opts, "retries", section, int, 0, 20, d.retries),
        "retry_backoff_seconds": _number(opts, "retry_backoff_seconds", section, float, 0, 60,
                                         d.retry_backoff_seconds),
        "connect_timeout_seconds": _number(opts, "connect_timeout_seconds", section, float, 0.1, 600,
                                           d.connect_timeout_seconds),
        "read_timeout_seconds": _number(opts, "read_timeout_seconds", section, float, 0.1, 3600,
                                        d.read_timeout_seconds),
        "max_concurrency": _number(opts, "max_concurrency", section, int, 1, 64, default_concurrency),
        "block_size_mib": _number(opts, "block_size_mib", section, int, 1, 256, d.block_size_mib),
        "single_put_mib": _number(opts, "single_put_mib", section, int, 0, 256, d.single_put_mib),
    }
    proxy = parse_proxy(opts.pop("proxy"), section) if "proxy" in opts else None
    validate = opts.pop("validate_content", d.validate_content)
    if validate not in VALIDATE_CHOICES:
        raise ConfigError(f"[{section}] validate_content must be one of {', '.join(VALIDATE_CHOICES)}, "
                          f"got {validate!r}")
    return AzureSettings(url, account, container, credential, ca_file, validate_content=validate, proxy=proxy,
                         **settings)
