"""Every Azure client and credential godwit builds really uses azure/transport.py.

The environment points HTTPS_PROXY at a dead port. A client that let the HTTP library read the
environment would fail; ours reach Azurite directly when ``proxy = "none"``, or through a
recording proxy of our own when ``proxy`` names it — the proxy's log shows whose requests it
carried. Without a ``proxy`` option the environment's proxy applies, read by godwit.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from godwit.azure.clients import credential_for
from godwit.azure.settings import CONNECTION_KEYS, parse_options
from godwit.checks.storecheck import check_azure
from godwit.errors import StoreError
from godwit.replicas.pageblob import open_pageblob_replica
from godwit.stores.azure import open_azure_store
from tests.azurite import Azurite, free_port

pytestmark = pytest.mark.azure

MIB = 1 << 20


class RecordingProxy:
    """An HTTP CONNECT proxy on loopback that records every target asked for and tunnels only to
    127.0.0.1 (anything else, Entra ID included, gets a 403: these tests never leave the machine)."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.targets.append(self.path)
                host, _, port = self.path.rpartition(":")
                if host != "127.0.0.1":
                    self.send_error(403, "this test proxy tunnels to loopback only")
                    return
                try:
                    upstream = socket.create_connection((host, int(port)), timeout=10)
                except OSError:
                    self.send_error(502)
                    return
                self.send_response(200, "Connection established")
                self.end_headers()
                self._tunnel(upstream)

            def _tunnel(self, upstream: socket.socket) -> None:
                sockets = [self.connection, upstream]
                with upstream:
                    while True:
                        readable, _, _ = select.select(sockets, [], [], 30)
                        if not readable:
                            return
                        for s in readable:
                            data = s.recv(1 << 16)
                            if not data:
                                return
                            (upstream if s is self.connection else self.connection).sendall(data)

            def _refuse(self) -> None:
                proxy.targets.append(self.path)
                self.send_error(403, "this test proxy tunnels to loopback only")

            do_GET = do_POST = do_PUT = do_HEAD = _refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="recording-proxy", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy() -> Iterator[RecordingProxy]:
    p = RecordingProxy()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def dead_env_proxy(monkeypatch: pytest.MonkeyPatch) -> str:
    """HTTPS_PROXY (both spellings) set to a port nobody listens on; NO_PROXY unset."""
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, dead)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    return dead


def _transport(client: Any) -> Any:
    transport = client._pipeline._transport  # the SDK's pipeline, for this one check
    transport.open()
    return transport


def test_store_ignores_the_environment_when_told_to(azurite: Azurite, azure_container: str, tmp_path: Path,
                                                    dead_env_proxy: str) -> None:
    store = open_azure_store(azurite.options(azure_container, proxy="none"), tmp_path)
    try:
        store.put("k", b"direct")
        assert store.get("k") == b"direct"
        transport = _transport(store._service)
        assert transport.session.trust_env is False and transport.godwit_plane == "data"
    finally:
        store.close()


def test_store_uses_the_environments_proxy_by_default(azurite: Azurite, azure_container: str,
                                                      tmp_path: Path, dead_env_proxy: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_azure_store(azurite.options(azure_container, retries=0), tmp_path)
    try:
        with pytest.raises(StoreError, match="cannot reach"):
            store.exists("k")
    finally:
        store.close()
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")  # and the environment's NO_PROXY
    store = open_azure_store(azurite.options(azure_container, retries=0), tmp_path)
    try:
        assert store.exists("k") is False
    finally:
        store.close()


def test_store_goes_through_the_configured_proxy(azurite: Azurite, azure_container: str, tmp_path: Path,
                                                 dead_env_proxy: str, proxy: RecordingProxy) -> None:
    store = open_azure_store(azurite.options(azure_container, proxy=proxy.url), tmp_path)
    try:
        store.put("k", b"proxied")
        assert store.get("k") == b"proxied"
    finally:
        store.close()
    assert proxy.targets and set(proxy.targets) == {f"127.0.0.1:{azurite.port}"}


def test_page_blob_replica_goes_through_the_configured_proxy(azurite: Azurite, azure_container: str,
                                                             tmp_path: Path, dead_env_proxy: str,
                                                             proxy: RecordingProxy) -> None:
    r = open_pageblob_replica(azurite.options(azure_container, proxy=proxy.url), tmp_path, "via-proxy")
    try:
        r.begin(1, [(0, MIB)], MIB)
        r.write(100, b"x" * 5000)
        r.seal(1)
        with r.open_point(1) as p:
            assert p.read(100, 5000) == b"x" * 5000
    finally:
        r.close()
    assert len(proxy.targets) >= 1 and set(proxy.targets) == {f"127.0.0.1:{azurite.port}"}


def test_store_check_goes_through_the_configured_proxy(azurite: Azurite, azure_container: str,
                                                       tmp_path: Path, dead_env_proxy: str,
                                                       proxy: RecordingProxy) -> None:
    settings = parse_options(azurite.options(azure_container, proxy=proxy.url), "gateway", tmp_path,
                             allowed=CONNECTION_KEYS)
    results = check_azure("gateway", settings, "control", require_gpv2=False)
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert proxy.targets and set(proxy.targets) == {f"127.0.0.1:{azurite.port}"}


@pytest.fixture
def entra_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service principal in the environment, as DefaultAzureCredential finds one."""
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-a-real-secret-" + "x" * 16)
    monkeypatch.delenv("AZURE_AUTHORITY_HOST", raising=False)


def test_the_credentials_token_requests_use_the_transport(tmp_path: Path, dead_env_proxy: str,
                                                          proxy: RecordingProxy, entra_env: None) -> None:
    """DefaultAzureCredential would build its own transport, reading HTTPS_PROXY (dead here)."""
    from azure.core.exceptions import ClientAuthenticationError

    options = {"account_url": "https://lsaexample.blob.core.windows.net", "container": "godwit-cache",
               "credential": {"kind": "default"}, "proxy": proxy.url, "retries": 0}
    credential = credential_for(parse_options(options, "cache", tmp_path))
    with contextlib.closing(credential), pytest.raises(ClientAuthenticationError):
        credential.get_token("https://storage.azure.com/.default")
    assert "login.microsoftonline.com:443" in proxy.targets


def test_the_stores_credential_uses_the_transport(tmp_path: Path, dead_env_proxy: str,
                                                  proxy: RecordingProxy, entra_env: None) -> None:
    """The cache store's own credential (built by open_azure_store) asks Entra ID via our proxy."""
    options = {"account_url": "https://lsaexample.blob.core.windows.net", "container": "godwit-cache",
               "credential": {"kind": "default"}, "proxy": proxy.url, "retries": 0}
    store = open_azure_store(options, tmp_path)
    try:
        with pytest.raises(StoreError):
            store.exists("k")
    finally:
        store.close()
    assert "login.microsoftonline.com:443" in proxy.targets
