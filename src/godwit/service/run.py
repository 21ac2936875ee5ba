"""Run the app under uvicorn on a socket bound here, so port 0 works and the caller learns the
real address before the first request."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import uvicorn

from godwit.errors import UsageError
from godwit.project.project import Project
from godwit.service.app import ServiceSettings, create_app


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}",
                         hint="pick another --port, or stop what holds it") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        raise UsageError("--cert and --key go together", hint="give both PEM files, or neither for plain HTTP")
    if cert is not None and key is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"cannot load the certificate {cert} with key {key}: {exc}",
                             hint="both must be PEM; the key must match the certificate") from None


def serve(project: Project, settings: ServiceSettings, *, host: str, port: int, cert: Path | None = None,
          key: Path | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles them and lets running requests finish)."""
    check_tls(cert, key)
    settings.export_dir.mkdir(parents=True, exist_ok=True)
    sock = bind(host, port)
    real_port = sock.getsockname()[1]
    scheme = "https" if cert else "http"
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(create_app(project, settings), log_level="warning", access_log=False,
                            ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
                            timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(f"{scheme}://{shown}:{real_port}")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
