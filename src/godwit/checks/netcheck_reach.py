"""TCP and TLS reachability of an endpoint on the route the Router gives it.

The connection is opened as the transport would open it: to the pinned private address, through
the proxy's CONNECT tunnel, or directly to the name. TLS names the host (SNI) and verifies the
certificate against ``ca_file`` or the system's CAs; a failed verification says which
certificate was presented and by whom (:mod:`godwit.network.tlsprobe`). Nothing but the
handshake is sent.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from godwit.checks.netcheck_model import Check, failed, passed
from godwit.network.route import Route
from godwit.network.tlsprobe import _tunnel, explain


def open_route(route: Route, timeout: float, proxy_auth: str | None) -> socket.socket:
    """A TCP connection to ``route``'s endpoint, opened the way the transport opens it."""
    if route.proxy is not None:
        return _tunnel(route.proxy, route.host, route.port, timeout, proxy_auth)
    target = str(route.pinned) if route.pinned is not None else route.host
    return socket.create_connection((target, route.port), timeout)


def _where(route: Route) -> str:
    return f"{route.host}:{route.port} ({route.path})"


def reach(prefix: str, route: Route, *, ca_file: Path | None, timeout: float, proxy_auth: str | None,
          what: str) -> list[Check]:
    """``PREFIX.tcp`` and ``PREFIX.tls`` for ``route``; TLS is skipped when TCP failed."""
    try:
        sock = open_route(route, timeout, proxy_auth)
    except OSError as exc:
        fix = (f"check that proxy {route.proxy} is up, reachable and allows CONNECT to {route.host}:{route.port}"
               if route.proxy else f"check the network path to {route.host}:{route.port} (firewall, route, "
                                   f"the {what}'s network rules)")
        return [failed(f"{prefix}.tcp", f"cannot connect to {_where(route)}: {exc}", fix)]
    checks = [passed(f"{prefix}.tcp", f"connected to {_where(route)}")]
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    try:
        with ctx.wrap_socket(sock, server_hostname=route.host) as tls:
            version = tls.version()
        checks.append(passed(f"{prefix}.tls", f"TLS ({version}) with {route.host}, certificate verified"))
    except ssl.SSLCertVerificationError as exc:
        seen = explain(route.host, route.port, address=route.pinned, proxy=route.proxy, proxy_auth=proxy_auth,
                       timeout=timeout)
        checks.append(failed(f"{prefix}.tls", f"the certificate of {_where(route)} failed its check: "
                             f"{exc.verify_message or exc.reason}; {seen}",
                             "if a TLS-inspecting proxy or firewall presented it, let it pass this host untouched; "
                             "if the endpoint's CA is private, set ca_file to it"))
    except (OSError, ssl.SSLError) as exc:
        checks.append(failed(f"{prefix}.tls", f"no TLS handshake with {_where(route)}: {exc}",
                             "check that the endpoint speaks HTTPS on this port, and what sits in between"))
    finally:
        sock.close()
    return checks


def tcp_only(id_: str, host: str, port: int, timeout: float, what: str) -> Check:
    try:
        with socket.create_connection((host, port), timeout):
            return passed(id_, f"{what} {host}:{port} accepts connections")
    except OSError as exc:
        return failed(id_, f"cannot connect to {what} {host}:{port}: {exc}",
                      f"start the {what}, or correct its address in godwit.toml")
