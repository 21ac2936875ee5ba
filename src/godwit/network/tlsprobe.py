"""Which certificate a TLS endpoint presented, and who presented it, for a failed check.

A verification failure alone ("unable to get local issuer certificate") does not say whether the
account, a TLS-inspecting proxy or a wrong address answered. After a failure godwit connects once
more on the same path (directly, to the pinned address, or through the proxy's CONNECT tunnel)
with verification off, only to read the presented certificate; nothing is sent over it.
"""

from __future__ import annotations

import base64
import socket
import ssl
from urllib.parse import urlsplit

from godwit.config.network import IPAddress


def _tunnel(proxy: str, host: str, port: int, timeout: float, auth: str | None) -> socket.socket:
    p = urlsplit(proxy)
    sock = socket.create_connection((p.hostname or "", p.port or 80), timeout)
    try:
        lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
        if auth:
            lines.append("Proxy-Authorization: Basic " + base64.b64encode(auth.encode()).decode())
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        reply = b""
        while b"\r\n\r\n" not in reply and len(reply) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        status = reply.split(b"\r\n", 1)[0].decode("latin-1", "replace")
        if " 200" not in status:
            raise OSError(f"the proxy answered {status!r} to CONNECT")
    except BaseException:
        sock.close()
        raise
    return sock


def presented_certificate(host: str, port: int, *, address: IPAddress | None = None, proxy: str | None = None,
                          proxy_auth: str | None = None, timeout: float = 5.0) -> bytes:
    """The DER certificate that ``host:port`` presents on that path (verification off)."""
    if proxy is not None:
        if urlsplit(proxy).scheme != "http":
            raise OSError("only http:// proxies are probed")
        sock = _tunnel(proxy, host, port, timeout, proxy_auth)
    else:
        sock = socket.create_connection((str(address) if address else host, port), timeout)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(sock, server_hostname=host) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise OSError("no certificate was presented")
    return der


def describe_certificate(der: bytes) -> str:
    """``subject CN=x, issued by CN=y, for DNS:a, DNS:b, valid until 2027-01-01``."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
        names += [f"IP:{n}" for n in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return (f"subject {cert.subject.rfc4514_string() or '(empty)'}, issued by {cert.issuer.rfc4514_string()}, "
            f"for {', '.join(names) or 'no names'}, valid until {until}")


def who_presented(host: str, port: int, *, address: IPAddress | None, proxy: str | None) -> str:
    if proxy is not None:
        return f"through the CONNECT tunnel of proxy {proxy} (the proxy or what it reached for {host}:{port})"
    if address is not None:
        return f"by {address}:{port}, the checked address of {host}"
    return f"by {host}:{port}"


def explain(host: str, port: int, *, address: IPAddress | None = None, proxy: str | None = None,
            proxy_auth: str | None = None, timeout: float = 5.0) -> str:
    """What was presented and by whom, as one phrase; never raises."""
    where = who_presented(host, port, address=address, proxy=proxy)
    try:
        return f"presented {describe_certificate(presented_certificate(host, port, address=address, proxy=proxy, proxy_auth=proxy_auth, timeout=timeout))} {where}"  # noqa: E501
    except (OSError, ValueError, ssl.SSLError) as exc:
        return f"the certificate could not be read back {where} ({exc})"
