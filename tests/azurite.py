"""A pytest plugin: a real Azurite blob service over HTTPS for the Azure tests.

Enabled with ``pytest_plugins = ["tests.azurite"]`` in tests/conftest.py. One Azurite serves the
whole session (in memory, an account and key of our own, a certificate from a throwaway CA);
tests that must kill or restart it start their own with the ``azurite_factory`` fixture.

Fixtures: ``azurite`` (session), ``azure_store`` (an AzureBlobStore on a fresh container),
``azure_replica_factory`` (name -> PageBlobReplica on a fresh container), ``azurite_factory``
(start private instances, stopped at the end of the test).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from godwit.replicas.pageblob import PageBlobReplica, open_pageblob_replica
from godwit.stores.azure import AzureBlobStore, open_azure_store

REPO = Path(__file__).resolve().parents[1]
ACCOUNT = "godwittest"
INSTALL_HINT = "run `npm install --prefix .tools azurite@3` in the repository root (or set GODWIT_AZURITE)"
_counter = itertools.count()

# Fast failure in tests: one retry, a near-zero backoff, short timeouts.
FAST: dict[str, Any] = {"retries": 1, "retry_backoff_seconds": 0.05, "connect_timeout_seconds": 5,
                        "read_timeout_seconds": 30}


def _die_with_parent() -> None:
    """In the child: SIGTERM it when pytest dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def find_azurite() -> str:
    candidates = [os.environ.get("GODWIT_AZURITE", ""), str(REPO / ".tools/node_modules/.bin/azurite-blob"),
                  shutil.which("azurite-blob") or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    pytest.fail(f"Azurite is not installed: {INSTALL_HINT}", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class AzuriteTLS:
    ca_file: Path
    cert_file: Path
    key_file: Path
    ca: Any  # trustme.CA, for proxies that need a certificate of their own


def make_ca(folder: Path) -> AzuriteTLS:
    import trustme

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = AzuriteTLS(folder / "ca.pem", folder / "cert.pem", folder / "key.pem", ca)
    ca.cert_pem.write_to_path(str(paths.ca_file))
    cert.cert_chain_pems[0].write_to_path(str(paths.cert_file))
    cert.private_key_pem.write_to_path(str(paths.key_file))
    return paths


@dataclass
class Azurite:
    """One Azurite blob service. ``start``/``stop``/``kill`` manage only the process it started."""

    workdir: Path
    tls: AzuriteTLS | None
    location: Path | None = None  # None: in memory
    account: str = ACCOUNT
    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(64)).decode())
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    key_env: str = ""

    def __post_init__(self) -> None:
        self.key_env = f"GODWIT_TEST_AZURITE_KEY_{self.port}"
        os.environ[self.key_env] = self.key

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def blob_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{self.account}"

    @property
    def ca_file(self) -> Path | None:
        return self.tls.ca_file if self.tls else None

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol={self.scheme};AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.blob_url};")

    def start(self, timeout: float = 30.0) -> None:
        binary = find_azurite()
        args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--skipApiVersionCheck",
                "--disableTelemetry", "--silent"]
        if self.location is not None:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        else:
            args += ["--inMemoryPersistence"]
        if self.tls:
            args += ["--cert", str(self.tls.cert_file), "--key", str(self.tls.key_file)]
        env = dict(os.environ, AZURITE_ACCOUNTS=f"{self.account}:{self.key}")
        log = self.workdir / f"azurite-{self.port}.log"
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                tail = log.read_text(errors="replace")[-2000:]
                self.proc = None
                pytest.fail(f"Azurite exited at start (code {code}):\n{tail}", pytrace=False)
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Azurite did not answer on port {self.port} within {timeout:.0f} s", pytrace=False)
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        try:
            with self.service(retries=0) as svc:
                svc.get_account_information()
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """Stop gracefully (Azurite saves its database), or kill after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        os.environ.pop(self.key_env, None)

    # -- helpers for tests ----------------------------------------------------------------------

    def service(self, *, retries: int = 0) -> Any:
        from azure.core.credentials import AzureNamedKeyCredential
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(self.blob_url, credential=AzureNamedKeyCredential(self.account, self.key),
                                 connection_verify=str(self.ca_file) if self.ca_file else True,
                                 retry_total=retries, connection_timeout=5, read_timeout=30,
                                 use_env_settings=False)  # tests may point HTTPS_PROXY anywhere

    def new_container(self, prefix: str = "t") -> str:
        name = f"{prefix}-{os.getpid()}-{next(_counter)}-{secrets.token_hex(3)}"
        with self.service() as svc:
            svc.create_container(name)
        return name

    def delete_container(self, name: str) -> None:
        with self.service() as svc, contextlib.suppress(Exception):
            svc.delete_container(name)

    def options(self, container: str, **extra: Any) -> dict[str, Any]:
        """godwit.toml options for this account (credential by reference, the key in an env var)."""
        opts: dict[str, Any] = {"account_url": self.blob_url, "container": container,
                                "credential": {"kind": "account_key", "env": self.key_env}, **FAST}
        if self.ca_file:
            opts["ca_file"] = str(self.ca_file)
        opts.update(extra)
        return opts


@pytest.fixture(scope="session")
def azurite_tls(tmp_path_factory: pytest.TempPathFactory) -> AzuriteTLS:
    return make_ca(tmp_path_factory.mktemp("azurite-ca"))


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory, azurite_tls: AzuriteTLS) -> Iterator[Azurite]:
    az = Azurite(tmp_path_factory.mktemp("azurite"), azurite_tls)
    try:
        az.start()
        yield az
    finally:
        az.close()


@pytest.fixture
def azurite_factory(tmp_path: Path, azurite_tls: AzuriteTLS) -> Iterator[Callable[..., Azurite]]:
    """Start private Azurite instances (``location=`` for one that keeps data over restarts)."""
    started: list[Azurite] = []

    def factory(*, location: Path | None = None, tls: bool = True) -> Azurite:
        az = Azurite(tmp_path / f"az{len(started)}", azurite_tls if tls else None, location=location)
        started.append(az)
        az.start()
        return az

    try:
        yield factory
    finally:
        for az in started:
            az.close()


@pytest.fixture
def azure_container(azurite: Azurite) -> Iterator[str]:
    name = azurite.new_container()
    try:
        yield name
    finally:
        azurite.delete_container(name)


@pytest.fixture
def azure_store(azurite: Azurite, azure_container: str, tmp_path: Path) -> Iterator[AzureBlobStore]:
    store = open_azure_store(azurite.options(azure_container), tmp_path)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def azure_replica_factory(azurite: Azurite, azure_container: str,
                          tmp_path: Path) -> Iterator[Callable[[str], PageBlobReplica]]:
    opened: list[PageBlobReplica] = []

    def factory(name: str) -> PageBlobReplica:
        replica = open_pageblob_replica(azurite.options(azure_container), tmp_path, name)
        opened.append(replica)
        return replica

    try:
        yield factory
    finally:
        for r in opened:
            r.close()
