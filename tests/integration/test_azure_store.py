"""AzureBlobStore, its configuration, credentials, redaction and `godwit store check`, against a
real Azurite (tests/azurite.py). Fault tests use a private Azurite or a proxy of our own."""

from __future__ import annotations

import http.client
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from godwit.azure.credentials import install_log_redaction
from godwit.azure.settings import parse_options
from godwit.cli import store_cmd
from godwit.errors import ObjectExistsError, ObjectMissingError, StoreError, StoreReadOnlyError
from godwit.stores.azure import AzureBlobStore, open_azure_store
from tests.azurite import Azurite, AzuriteTLS

pytestmark = pytest.mark.azure


# -- helpers -----------------------------------------------------------------------------------------

class FaultProxy:
    """An HTTPS reverse proxy to Azurite that answers 503 to the first ``fail`` requests, holds
    the first ``delay`` requests past the client's read timeout, or rewrites response headers."""

    def __init__(self, upstream: Azurite, tls: AzuriteTLS, *, fail: int = 0, delay: int = 0,
                 delay_seconds: float = 0.0, rewrite: dict[str, str] | None = None) -> None:
        self.upstream = upstream
        self.rewrite = {k.lower(): v for k, v in (rewrite or {}).items()}
        self.fail = fail
        self.delay = delay
        self.delay_seconds = delay_seconds
        self.seen = 0
        self.lock = threading.Lock()
        proxy = self
        upstream_ctx = ssl.create_default_context(cafile=str(tls.ca_file))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with proxy.lock:
                    proxy.seen += 1
                    n = proxy.seen
                if n <= proxy.fail:
                    payload = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
                               b"<Message>The server is busy.</Message></Error>")
                    self.send_response(503)
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if n <= proxy.delay:
                    time.sleep(proxy.delay_seconds)
                conn = http.client.HTTPSConnection("127.0.0.1", upstream.port, context=upstream_ctx, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                        self.send_header(k, proxy.rewrite.get(k.lower(), v))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.ca.issue_cert("127.0.0.1").configure_cert(ctx)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/{self.upstream.account}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fault_proxy(azurite: Azurite, azurite_tls: AzuriteTLS) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(**kwargs: Any) -> FaultProxy:
        p = FaultProxy(azurite, azurite_tls, **kwargs)
        proxies.append(p)
        return p

    try:
        yield make
    finally:
        for p in proxies:
            p.close()


@pytest.fixture
def restore_log_factory() -> Iterator[None]:
    """install_log_redaction() replaces the process-wide record factory; put it back afterwards."""
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)


def store_for(azurite: Azurite, container: str, root: Path, **extra: Any) -> AzureBlobStore:
    return open_azure_store(azurite.options(container, **extra), root)


# -- the store ---------------------------------------------------------------------------------------

def test_roundtrip_single_put_and_blocks(azurite: Azurite, azure_container: str, tmp_path: Path) -> None:
    store = store_for(azurite, azure_container, tmp_path, single_put_mib=1, block_size_mib=1, max_concurrency=3)
    try:
        small = b"manifest"
        big = os.urandom(3 * (1 << 20) + 12345)  # four staged blocks, committed by Put Block List
        store.put("servers/x/cycles/0000000001.manifest", small, overwrite=False)
        store.put("servers/x/packs/p1.pack", memoryview(big))
        assert store.get("servers/x/packs/p1.pack") == big
        assert store.get("servers/x/packs/p1.pack", 1 << 20, 100) == big[1 << 20:(1 << 20) + 100]
        assert store.get("servers/x/packs/p1.pack", len(big) - 5) == big[-5:]
        assert store.get("servers/x/packs/p1.pack", 7, 0) == b""
        assert store.size("servers/x/packs/p1.pack") == len(big)
        assert list(store.list("servers/x/")) == ["servers/x/cycles/0000000001.manifest", "servers/x/packs/p1.pack"]
        assert list(store.list("servers/x/packs/")) == ["servers/x/packs/p1.pack"]
        assert store.exists("servers/x/packs/p1.pack") and not store.exists("servers/x/packs/p2.pack")
        store.delete("servers/x/packs/p1.pack")
        store.delete("servers/x/packs/p1.pack")  # idempotent
        assert list(store.list()) == ["servers/x/cycles/0000000001.manifest"]
        with pytest.raises(ObjectMissingError, match=r"p1\.pack is missing"):
            store.get("servers/x/packs/p1.pack")
        with pytest.raises(ObjectMissingError):
            store.size("servers/x/packs/p1.pack")
        with pytest.raises(ObjectMissingError):
            store.get("servers/x/packs/p1.pack", 0, 0)
    finally:
        store.close()


def test_overwrite_false_keeps_existing_object(azure_store: AzureBlobStore) -> None:
    azure_store.put("servers/s/cycles/0000000001.manifest", b"first", overwrite=False)
    with pytest.raises(ObjectExistsError, match="already exists"):
        azure_store.put("servers/s/cycles/0000000001.manifest", b"second", overwrite=False)
    assert azure_store.get("servers/s/cycles/0000000001.manifest") == b"first"
    azure_store.put("servers/s/cycles/0000000001.manifest", b"third")  # overwrite=True replaces
    assert azure_store.get("servers/s/cycles/0000000001.manifest") == b"third"


def test_overwrite_false_on_a_block_upload(azurite: Azurite, azure_container: str, tmp_path: Path) -> None:
    store = store_for(azurite, azure_container, tmp_path, single_put_mib=1, block_size_mib=1)
    try:
        first = os.urandom(2 << 20)
        store.put("k", first, overwrite=False)
        with pytest.raises(ObjectExistsError):
            store.put("k", os.urandom(2 << 20), overwrite=False)  # If-None-Match on the commit
        assert store.get("k") == first
    finally:
        store.close()


def test_uncommitted_blocks_are_not_listed(azurite: Azurite, azure_store: AzureBlobStore,
                                           azure_container: str) -> None:
    with azurite.service() as svc:
        svc.get_blob_client(azure_container, "in-flight").stage_block("YmxvY2sx", b"x" * 1024)
    assert list(azure_store.list()) == []
    assert not azure_store.exists("in-flight")


def test_invalid_keys_are_refused(azure_store: AzureBlobStore) -> None:
    from godwit.errors import UsageError

    for key in ("../x", "/abs", "a//b", ""):
        with pytest.raises(UsageError):
            azure_store.put(key, b"x")


# -- faults ---------------------------------------------------------------------------------------------

def test_killed_mid_upload_then_restarted(azurite_factory: Callable[..., Azurite], tmp_path: Path) -> None:
    az = azurite_factory(location=tmp_path / "azurite-data")
    container = az.new_container("kill")
    kept = {"servers/s/packs/a.pack": os.urandom(100_000), "servers/s/packs/b.pack": os.urandom(2 << 20)}
    big = os.urandom(6 << 20)
    blocks = 0

    def hook(request: Any) -> None:
        nonlocal blocks
        if "comp=block" in request.http_request.url and "blocklist" not in request.http_request.url:
            blocks += 1
            if blocks == 3:
                az.kill()  # SIGKILL with two of six blocks staged

    settings = parse_options(az.options(container, single_put_mib=1, block_size_mib=1, max_concurrency=1,
                                        connect_timeout_seconds=2), "cache", tmp_path)
    store = AzureBlobStore(replace(settings, extra={"raw_request_hook": hook}))
    try:
        for key, data in kept.items():
            store.put(key, data)
        # Azurite saves its metadata every 5 s (Azure commits before it answers): let it save.
        time.sleep(5.5)
        with pytest.raises(StoreError, match=r"cannot reach .* after 1 retries") as info:
            store.put("servers/s/packs/c.pack", big)
        assert az.key not in str(info.value)
        az.start()  # same port, same data folder
        assert list(store.list()) == sorted(kept)  # the half-sent pack is not there
        for key, data in kept.items():
            assert store.get(key) == data
        store.put("servers/s/packs/c.pack", big)  # the retried put
        assert store.get("servers/s/packs/c.pack") == big
        assert blocks > 6
    finally:
        store.close()


def test_503_is_retried(fault_proxy: Callable[..., FaultProxy], azurite: Azurite, azure_container: str,
                        tmp_path: Path) -> None:
    proxy = fault_proxy(fail=2)
    store = store_for(azurite, azure_container, tmp_path, account_url=proxy.url, retries=3)
    try:
        store.put("k", b"data")
        assert store.get("k") == b"data"
        assert proxy.seen == 4  # two 503s, then the put and the get
    finally:
        store.close()


def test_503_persisting_is_a_clear_error(fault_proxy: Callable[..., FaultProxy], azurite: Azurite,
                                         azure_container: str, tmp_path: Path) -> None:
    proxy = fault_proxy(fail=1000)
    store = store_for(azurite, azure_container, tmp_path, account_url=proxy.url, retries=2)
    try:
        with pytest.raises(StoreError) as info:
            store.put("k", b"data")
        err = info.value
        assert type(err) is StoreError
        assert str(err) == (f"azure blob account {azurite.account} container {azure_container} answered 503 "
                            "ServerBusy to writing k after 2 retries")
        assert err.hint and "busy" in err.hint
        assert proxy.seen == 3
    finally:
        store.close()


def test_read_timeout_is_retried(fault_proxy: Callable[..., FaultProxy], azurite: Azurite, azure_container: str,
                                 tmp_path: Path) -> None:
    proxy = fault_proxy(delay=1, delay_seconds=1.5)
    store = store_for(azurite, azure_container, tmp_path, account_url=proxy.url, retries=2, read_timeout_seconds=0.5)
    try:
        store.put("k", b"data")
        assert store.get("k") == b"data"
        assert proxy.seen >= 3
    finally:
        store.close()


def test_expired_sas_names_the_account_and_leaks_nothing(
        azurite: Azurite, azure_container: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, restore_log_factory: None) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    now = datetime.now(UTC)
    sas = generate_container_sas(azurite.account, azure_container, account_key=azurite.key,
                                 permission=ContainerSasPermissions(read=True, write=True, list=True),
                                 start=now - timedelta(hours=2), expiry=now - timedelta(hours=1))
    signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    monkeypatch.setenv("GODWIT_TEST_SAS", sas)
    install_log_redaction()
    caplog.set_level(logging.DEBUG)
    opts = azurite.options(azure_container, credential={"kind": "sas", "env": "GODWIT_TEST_SAS"})
    settings = parse_options(opts, "cache", tmp_path)
    store = AzureBlobStore(replace(settings, extra={"logging_enable": True}))  # the SDK logs every request
    try:
        with pytest.raises(StoreError) as info:
            store.put("servers/s/packs/a.pack", b"data")
        # Something that logs a full SAS URL, as third-party code might.
        logging.getLogger("godwit.test").warning("uploading to %s/a?%s", azurite.blob_url, sas)
    finally:
        store.close()
    err = info.value
    assert str(err).startswith(f"the SAS for azure blob account {azurite.account} container {azure_container} "
                               "expired at ")
    assert "GODWIT_TEST_SAS" in (err.hint or "")
    from urllib.parse import unquote

    assert "Request URL" in caplog.text  # the SDK did log its requests
    for text in (str(err), err.hint or "", caplog.text):
        for secret in (signature, unquote(signature), azurite.key):
            assert secret not in text


def test_wrong_key_names_the_account(azurite: Azurite, azure_container: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    wrong = base64.b64encode(os.urandom(64)).decode()
    monkeypatch.setenv("GODWIT_TEST_WRONG_KEY", wrong)
    store = store_for(azurite, azure_container, tmp_path,
                      credential={"kind": "account_key", "env": "GODWIT_TEST_WRONG_KEY"})
    try:
        with pytest.raises(StoreError, match=f"account {azurite.account} container {azure_container} refused "
                                             "the credential") as info:
            list(store.list())
        assert wrong not in str(info.value) and "GODWIT_TEST_WRONG_KEY" in (info.value.hint or "")
    finally:
        store.close()


def test_read_only_sas_is_read_only(azurite: Azurite, azure_container: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    sas = generate_container_sas(azurite.account, azure_container, account_key=azurite.key,
                                 permission=ContainerSasPermissions(read=True, list=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    monkeypatch.setenv("GODWIT_TEST_RO_SAS", sas)
    store = store_for(azurite, azure_container, tmp_path, credential={"kind": "sas", "env": "GODWIT_TEST_RO_SAS"})
    try:
        assert list(store.list()) == []
        with pytest.raises(StoreReadOnlyError, match="lacks that permission"):
            store.put("k", b"x")
    finally:
        store.close()


def test_connection_string_credential(azurite: Azurite, azure_container: str, tmp_path: Path) -> None:
    secret = tmp_path / "secrets" / "cache.conn"
    secret.parent.mkdir()
    secret.write_text(azurite.connection_string + "\n")
    store = store_for(azurite, azure_container, tmp_path,
                      credential={"kind": "connection_string", "file": "secrets/cache.conn"})
    try:
        store.put("k", b"v")
        assert store.get("k") == b"v"
    finally:
        store.close()


def test_missing_container(azurite: Azurite, tmp_path: Path) -> None:
    store = store_for(azurite, "no-such-container", tmp_path)
    try:
        with pytest.raises(StoreError, match="container no-such-container does not exist") as info:
            store.put("k", b"v")
        assert "godwit store check" in (info.value.hint or "")
        with pytest.raises(StoreError, match="does not exist"):
            store.delete("k")
    finally:
        store.close()


def test_unreachable_account(tmp_path: Path, azurite: Azurite) -> None:
    from tests.azurite import free_port

    store = store_for(azurite, "cont", tmp_path, account_url=f"https://127.0.0.1:{free_port()}/{azurite.account}",
                      retries=0)
    try:
        with pytest.raises(StoreError, match=r"cannot reach .*connection refused") as info:
            store.exists("k")
        assert "DNS" in (info.value.hint or "")
    finally:
        store.close()


def test_untrusted_certificate(azurite: Azurite, azure_container: str, tmp_path: Path) -> None:
    opts = azurite.options(azure_container, retries=0)
    del opts["ca_file"]
    store = open_azure_store(opts, tmp_path)
    try:
        with pytest.raises(StoreError, match=r"TLS to .* failed") as info:
            store.exists("k")
        assert "ca_file" in (info.value.hint or "")
    finally:
        store.close()


# -- godwit store check --------------------------------------------------------------------------------------

def write_project(root: Path, azurite: Azurite, container: str, *, gateway: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)

    def section(name: str, cont: str, kind: bool) -> str:
        return (f'[{name}]\n' + ('kind = "azure"\n' if kind else "")
                + f'account_url = "{azurite.blob_url}"\ncontainer = "{cont}"\n'
                f'ca_file = "{azurite.ca_file}"\nretries = 0\n'
                f'credential = {{ kind = "account_key", env = "{azurite.key_env}" }}\n')

    text = '[project]\nname = "check"\n\n' + section("cache", container, True)
    if gateway:
        text += "\n" + section("gateway", gateway, False)
    (root / "godwit.toml").write_text(text)
    return root


def test_store_check_ok(azurite: Azurite, azure_container: str, tmp_path: Path) -> None:
    gateway = azurite.new_container("gw")
    try:
        root = write_project(tmp_path / "p", azurite, azure_container, gateway=gateway)
        result = CliRunner().invoke(store_cmd.app, ["check", "--project", str(root), "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        names = [c["name"] for c in doc["checks"]]
        for prefix in ("cache", "gateway"):
            for step in ("account kind", "clock", "container", "create", "write", "read", "list", "delete"):
                assert f"{prefix}: {step}" in names
        assert doc["ok"] and all(c["ok"] for c in doc["checks"])
        kind = next(c for c in doc["checks"] if c["name"] == "cache: account kind")
        assert "StorageV2" in kind["detail"]
        assert azurite.key not in result.output
        # The human table says the same.
        table = CliRunner().invoke(store_cmd.app, ["check", "--project", str(root)])
        assert table.exit_code == 0 and "all checks passed" in table.stdout
    finally:
        azurite.delete_container(gateway)
    with azurite.service() as svc:  # the scratch blob is gone
        assert list(svc.get_container_client(azure_container).list_blob_names()) == []


def test_store_check_missing_container(azurite: Azurite, tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", azurite, "not-created-yet")
    result = CliRunner().invoke(store_cmd.app, ["check", "--project", str(root), "--json"])
    assert result.exit_code == StoreError.exit_code
    doc = json.loads(result.stdout)
    assert not doc["ok"]
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["cache: container"]
    assert "az storage container create" in failed[0]["fix"]
    table = CliRunner().invoke(store_cmd.app, ["check", "--project", str(root)])
    assert table.exit_code == StoreError.exit_code and "FAIL" in table.stdout


def test_store_check_flags_account_kind_and_clock(fault_proxy: Callable[..., FaultProxy], azurite: Azurite,
                                                  azure_container: str, tmp_path: Path) -> None:
    """A general-purpose v1 account and a service clock 10 minutes behind, as a proxy reports them."""
    from godwit.checks.storecheck import check_azure

    behind = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    proxy = fault_proxy(rewrite={"x-ms-account-kind": "Storage", "Date": behind})
    settings = parse_options(azurite.options(azure_container, account_url=proxy.url), "cache", tmp_path)
    results = {r.name: r for r in check_azure("cache", settings, "data", require_gpv2=True)}
    kind = results["cache: account kind"]
    assert not kind.ok and "needs general-purpose v2 (StorageV2)" in kind.detail
    assert "Configuration → Account kind → Upgrade" in kind.fix and "--set kind=StorageV2" in kind.fix
    clock = results["cache: clock"]
    assert not clock.ok and "ahead of the service" in clock.detail and "NTP" in clock.fix
    assert all(results[f"cache: {step}"].ok for step in ("container", "create", "write", "read", "list", "delete"))
    # The gateway account may be of any kind (it stays on the internet path, no private endpoint).
    gateway = {r.name: r for r in check_azure("gateway", settings, "control", require_gpv2=False)}
    assert gateway["gateway: account kind"].ok


def test_store_check_bad_config_is_reported(azurite: Azurite, tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", azurite, "Bad_Name")
    result = CliRunner().invoke(store_cmd.app, ["check", "--project", str(root), "--json"])
    assert result.exit_code == StoreError.exit_code
    (check,) = json.loads(result.stdout)["checks"]
    assert check["name"] == "cache: config" and "uppercase" in check["detail"]
