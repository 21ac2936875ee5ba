"""The one place that builds an outbound HTTP connection to Azure: :func:`build_transport`.

Every Azure client godwit makes (the cache store, page-blob replicas, ``store check``) and every
credential that fetches tokens gets its azure-core transport here, named by its **plane**:

* ``data``: the bulk bytes — the cache account, replica page blobs, a managed disk's upload URL;
* ``control``: everything else — the gateway/state account, Entra ID token requests, the service.

The HTTP library never reads the environment on its own (``trust_env`` is off: no proxy, no
``.netrc``, no ``REQUESTS_CA_BUNDLE``). Proxies come from the section's ``proxy`` option; without
one, this module reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` itself, once, when the
transport is built, and routes each request by its host (:class:`ProxyRoute`).

With a ``[network]`` table (``settings.router`` set, a :class:`godwit.network.Router`), godwit
alone decides every request: its plane by host, direct or through ``[network] proxy`` by the
bypass list (the environment and a section's ``proxy`` are not consulted), and in
``private-endpoint`` mode the cache account's checked, pinned private address. TLS through the
proxy is a CONNECT tunnel with certificate checks on; a failed check names the certificate that
was presented and by whom (:mod:`godwit.network.tlsprobe`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from godwit.azure.settings import NO_PROXY, AzureSettings
from godwit.errors import ConfigError, NetworkPolicyError

if TYPE_CHECKING:
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter

    from godwit.config.network import SecretRef
    from godwit.network.route import Route, Router

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


def read_proxy_secret(ref: SecretRef) -> str:
    """The proxy's ``user:password``, registered for redaction. ConfigError if missing or malformed."""
    from pathlib import Path

    from godwit.azure.credentials import register_secret

    if ref.env is not None:
        value = os.environ.get(ref.env, "").strip()
    else:
        try:
            value = Path(str(ref.file)).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the proxy credential from {ref.source}: "
                              f"{getattr(exc, 'strerror', None) or exc}") from None
    if ":" not in value:
        raise ConfigError(f"the proxy credential in {ref.source} is not set, or not user:password",
                          hint="store the proxy's user name and password as user:password")
    register_secret(value)
    register_secret(value.partition(":")[2])
    return value


def build_transport(plane: Plane, settings: AzureSettings, *, pool: int = 16,
                    environ: Mapping[str, str] | None = None) -> RequestsTransport:
    """A new transport with its own ``requests.Session`` for one client of ``plane``.

    ``pool`` is the number of connections kept per host: one per thread that may send at once,
    so connections (and TLS handshakes) are reused rather than discarded. ``environ`` replaces
    ``os.environ`` as the source of default proxies (tests). With ``settings.router`` the router
    decides every request instead (see the module's docstring).
    """
    if plane not in PLANES:
        raise ValueError(f"unknown network plane {plane!r}; expected one of {', '.join(PLANES)}")
    if settings.router is not None:
        return _routed_transport(plane, settings, settings.router, pool)
    from requests.adapters import HTTPAdapter

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

    return _transport(Adapter, settings, pool, godwit_plane=plane, godwit_route=route)


def _transport(adapter: type[HTTPAdapter], settings: AzureSettings, pool: int, **marks: Any) -> RequestsTransport:
    """azure-core's requests transport, whose session (made on first use) is set up here rather
    than by azure-core, which would take ``trust_env`` from ``use_env_settings``. ``marks`` are
    class attributes that tests and callers read (the plane, the route or router)."""
    from azure.core.pipeline.transport import RequestsTransport
    from urllib3.util.retry import Retry

    def init_session(self: RequestsTransport, session: requests.Session) -> None:
        session.trust_env = False
        # Retries belong to the SDK's policy.
        mounted = adapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False),
                          pool_connections=4, pool_maxsize=max(10, pool))
        session.mount("https://", mounted)
        session.mount("http://", mounted)

    cls = type("Transport", (RequestsTransport,), {"_init_session": init_session, **marks})
    transport: RequestsTransport = cls(
        use_env_settings=False,
        connection_verify=str(settings.ca_file) if settings.ca_file else True,
        connection_timeout=settings.connect_timeout_seconds, read_timeout=settings.read_timeout_seconds)
    return transport


def _verify_message(exc: BaseException) -> str:
    import ssl

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            return str(cur.verify_message or cur.reason)
        for arg in getattr(cur, "args", ()):
            if isinstance(arg, BaseException):
                cur = arg
                break
        else:
            cur = cur.__cause__ or cur.__context__
    return "certificate verify failed"


def _routed_transport(plane: Plane, settings: AzureSettings, router: Router, pool: int) -> RequestsTransport:
    """The transport for a project with a [network] table: every request routed by ``router``."""
    import base64
    import threading

    import requests
    from requests.adapters import HTTPAdapter
    from urllib3 import PoolManager

    from godwit.network.pinned import pinned_pool_manager
    from godwit.network.tlsprobe import explain

    if settings.proxy is not None:
        raise ConfigError(f"{settings.where} has its own proxy option, but [network] decides every route",
                          hint="remove proxy from the account's section; set [network] proxy and bypass instead")
    network = router.network
    auth = read_proxy_secret(network.proxy_credential) if network.proxy_credential else None
    basic = base64.b64encode(auth.encode()).decode() if auth else ""
    if basic:
        from godwit.azure.credentials import register_secret

        register_secret(basic)  # the header's form of the secret, should anything ever print it
    proxy_headers = {"Proxy-Authorization": "Basic " + basic} if basic else {}

    class Adapter(HTTPAdapter):
        """Asks the router for each request's route, then sends it there: proxied, direct, or direct
        to the pinned address (a pool manager per address; TLS still names the host)."""

        def __init__(self, **kwargs: Any) -> None:
            self._local = threading.local()
            self._pinned: dict[str, PoolManager] = {}
            self._pinned_lock = threading.Lock()
            super().__init__(**kwargs)

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("blocksize", 1 << 16)
            self._pool_args = (args, dict(kwargs))
            super().init_poolmanager(*args, **kwargs)

        def proxy_headers(self, proxy: str) -> dict[str, str]:
            return dict(proxy_headers)

        def _manager_for(self, route: Route) -> PoolManager:
            key = str(route.pinned)
            with self._pinned_lock:
                manager = self._pinned.get(key)
                if manager is None:
                    args, kwargs = self._pool_args
                    assert route.pinned is not None
                    names = ("num_pools", "maxsize", "block")
                    manager = pinned_pool_manager(route.pinned, **dict(zip(names, args, strict=False)), **kwargs)
                    self._pinned[key] = manager
            return manager

        def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None,
                                            cert: Any = None) -> Any:
            route: Route | None = getattr(self._local, "route", None)
            if route is None or route.pinned is None:
                return super().get_connection_with_tls_context(request, verify, proxies, cert)
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
            return self._manager_for(route).connection_from_host(**host_params, pool_kwargs=pool_kwargs)

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            route = router.route(str(request.url))
            scheme = str(request.url).split(":", 1)[0]
            kwargs["proxies"] = {scheme: route.proxy} if route.proxy else {}
            self._local.route = route
            try:
                return super().send(request, *args, **kwargs)
            except requests.exceptions.SSLError as exc:
                if "CERTIFICATE_VERIFY_FAILED" not in str(exc) and "certificate verify failed" not in str(exc):
                    raise
                seen = explain(route.host, route.port, address=route.pinned, proxy=route.proxy, proxy_auth=auth,
                               timeout=min(5.0, settings.connect_timeout_seconds))
                raise NetworkPolicyError(
                    f"the TLS certificate of {route.host}:{route.port} failed its check on the "
                    f"{route.describe()}: {_verify_message(exc)}; {seen}",
                    hint="if a TLS-inspecting proxy or firewall presented it, let it pass this host untouched "
                         "(or give its CA in ca_file); if it is the endpoint's own certificate from a private CA, "
                         "set ca_file to that CA") from None
            except requests.exceptions.ProxyError as exc:
                raise NetworkPolicyError(
                    f"the proxy {route.proxy} failed the {route.describe()}: {_proxy_reason(exc)}",
                    hint="check that the proxy is up and reachable from here, allows CONNECT to this host and "
                         "port, and accepts proxy_credential; or bypass the host if it is reachable directly"
                ) from None
            finally:
                self._local.route = None

        def close(self) -> None:
            super().close()
            with self._pinned_lock:
                for manager in self._pinned.values():
                    manager.clear()
                self._pinned.clear()

    return _transport(Adapter, settings, pool, godwit_plane=plane, godwit_router=router)


def _proxy_reason(exc: BaseException) -> str:
    import re

    text = str(exc)
    status = re.search(r"Tunnel connection failed: (\d{3}[^'\")]*)", text)
    if status:
        code = status[1].strip()
        if code[:3] in ("401", "407"):
            return f"it asked for credentials ({code}): check proxy_credential"
        return f"it refused the CONNECT tunnel ({code})"
    for marker in ("Connection refused", "timed out", "Connection reset", "Name or service not known"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__
