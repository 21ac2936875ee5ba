"""The one place that builds an outbound HTTP connection to Azure: :func:`build_transport`.

Every Azure client godwit makes (the cache store, page-blob replicas, ``store check``) and every
credential that fetches tokens gets its azure-core transport here, named by its **plane**:

* ``data``: the bulk bytes — the cache account, replica page blobs, a managed disk's upload URL;
* ``control``: everything else — the gateway/state account, Entra ID token requests, the service.

The HTTP library never reads the environment on its own (``trust_env`` is off: no proxy, no
``.netrc``, no ``REQUESTS_CA_BUNDLE``). Proxies come from the section's ``proxy`` option; without
one, this module reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` itself, once, when the
transport is built, and routes each request by its host (:class:`ProxyRoute`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from godwit.azure.settings import NO_PROXY, AzureSettings

if TYPE_CHECKING:
    from azure.core.pipeline.transport import RequestsTransport

Plane = Literal["data", "control"]
PLANES: tuple[Plane, ...] = ("data", "control")


@dataclass(frozen=True)
class ProxyRoute:
    """Which proxy a request to a URL goes through: one per scheme, and the hosts that bypass it.

    ``no_proxy`` follows the common convention: exact host names and dot-suffixes
    (case-insensitive), IP addresses and CIDR ranges for IP hosts, ``*`` for every host.
    """

    proxies: Mapping[str, str] = field(default_factory=dict)
    no_proxy: tuple[str, ...] = ()
    source: str = "none"

    def for_url(self, url: str) -> dict[str, str]:
        """The ``proxies=`` mapping for one request: empty means connect directly."""
        parts = urlsplit(url)
        proxy = self.proxies.get(parts.scheme)
        if not proxy or self.bypasses(parts.hostname or "", parts.port):
            return {}
        return {parts.scheme: proxy}

    def bypasses(self, host: str, port: int | None = None) -> bool:
        host = host.lower().strip("[]")
        for entry in self.no_proxy:
            name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if entry_port and (not entry_port.isdigit() or port != int(entry_port)):
                continue
            name = name.lower().strip("[]")
            if name == "*" or host == name.lstrip(".") or host.endswith("." + name.lstrip(".")):
                return True
            if _in_network(host, name):
                return True
        return False


def _in_network(host: str, entry: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def _env(name: str, environ: Mapping[str, str]) -> str:
    # The lowercase spelling wins, as in curl, requests and urllib.
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def proxy_route(settings: AzureSettings, environ: Mapping[str, str] | None = None) -> ProxyRoute:
    """The route for ``settings``: its ``proxy`` option, or else the environment's, read here."""
    if settings.proxy == NO_PROXY:
        return ProxyRoute(source="proxy = \"none\"")
    if settings.proxy is not None:
        # A configured proxy carries every request of this account; NO_PROXY is not consulted.
        return ProxyRoute({"https": settings.proxy, "http": settings.proxy}, source="godwit.toml proxy")
    env = os.environ if environ is None else environ
    proxies = {scheme: value for scheme in ("https", "http") if (value := _env(f"{scheme}_proxy", env))}
    no_proxy = tuple(e.strip() for e in _env("no_proxy", env).split(",") if e.strip())
    return ProxyRoute(proxies, no_proxy, source="environment" if proxies else "none")


def build_transport(plane: Plane, settings: AzureSettings, *, pool: int = 16,
                    environ: Mapping[str, str] | None = None) -> RequestsTransport:
    """A new transport with its own ``requests.Session`` for one client of ``plane``.

    ``pool`` is the number of connections kept per host: one per thread that may send at once,
    so connections (and TLS handshakes) are reused rather than discarded. ``environ`` replaces
    ``os.environ`` as the source of default proxies (tests).
    """
    if plane not in PLANES:
        raise ValueError(f"unknown network plane {plane!r}; expected one of {', '.join(PLANES)}")
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    route = proxy_route(settings, environ)

    class Adapter(HTTPAdapter):
        """Routes each request by its URL (with ``trust_env`` off, the proxies requests would pass
        are only the session's, which stay empty)."""

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            # Bigger socket writes for request bodies given as streams (the SDK's default is 8 KiB).
            kwargs.setdefault("blocksize", 1 << 16)
            super().init_poolmanager(*args, **kwargs)

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["proxies"] = route.for_url(str(request.url))
            return super().send(request, *args, **kwargs)

    class Transport(RequestsTransport):  # type: ignore[misc]
        """azure-core's requests transport; the session it makes on first use is set up here
        rather than by azure-core (which would take ``trust_env`` from ``use_env_settings``)."""

        godwit_plane: Plane = plane
        godwit_route: ProxyRoute = route

        def _init_session(self, session: requests.Session) -> None:
            session.trust_env = False
            # Retries belong to the SDK's policy.
            adapter = Adapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False),
                              pool_connections=4, pool_maxsize=max(10, pool))
            session.mount("https://", adapter)
            session.mount("http://", adapter)

    transport: RequestsTransport = Transport(
        use_env_settings=False,
        connection_verify=str(settings.ca_file) if settings.ca_file else True,
        connection_timeout=settings.connect_timeout_seconds, read_timeout=settings.read_timeout_seconds)
    return transport
