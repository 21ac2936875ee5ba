"""The Azure Blob cache store (the ``lsa…`` cache account), and what every Azure client shares.

Packs and manifests are block blobs named by their keys. A put is atomic on Azure's side: one Put
Blob, or staged blocks that exist for nobody until Put Block List commits them. ``overwrite=False``
sends ``If-None-Match: *`` so a second writer of the same manifest gets a 409, never a silent
overwrite.

Shared with the page-blob replica and ``godwit store check``: parsing the options of an Azure
account (:func:`parse_options`), building an SDK client with godwit's retry and TLS settings
(:func:`service_client`), and mapping SDK errors once, at the boundary (:func:`map_error`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from godwit.azure.credentials import CredentialRef, build_credential, parse_credential, redact, sas_expiry
from godwit.errors import (
    ConfigError,
    GodwitError,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreReadOnlyError,
)
from godwit.stores.base import ObjectStore, validate_key

MIB = 1 << 20
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_LOOPBACK_NAMES = ("localhost",)

# Option keys per use. Pack keys tune block-blob uploads; the gateway account holds small state
# objects only, so it takes none of them.
CONNECTION_KEYS = frozenset({"account_url", "container", "credential", "ca_file", "retries",
                             "retry_backoff_seconds", "connect_timeout_seconds", "read_timeout_seconds"})
PACK_KEYS = frozenset({"max_concurrency", "block_size_mib", "single_put_mib", "validate_content"})
VALIDATE_CHOICES = ("md5", "none")


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
    #: Extra SDK client keywords (request hooks, logging_enable) for tests and benchmarks only;
    #: godwit.toml cannot set them.
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def where(self) -> str:
        return f"azure blob account {self.account} container {self.container}"


# -- option parsing ------------------------------------------------------------------------------

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
    validate = opts.pop("validate_content", d.validate_content)
    if validate not in VALIDATE_CHOICES:
        raise ConfigError(f"[{section}] validate_content must be one of {', '.join(VALIDATE_CHOICES)}, "
                          f"got {validate!r}")
    return AzureSettings(url, account, container, credential, ca_file, validate_content=validate, **settings)


# -- clients ---------------------------------------------------------------------------------------

def _retry_policy(settings: AzureSettings) -> Any:
    from azure.storage.blob import ExponentialRetry

    class GodwitRetry(ExponentialRetry):
        """The SDK's storage retry (500, 503, 408, timeouts, resets) with a scalable backoff.

        The stock curve starts at 15 s with ±3 s jitter; ours is ``backoff * 2**n`` ±20%, capped at
        a minute, so tests can set it near zero and people can stretch it.
        """

        def get_backoff_time(self, retry_settings: dict[str, Any]) -> float:
            base = min(60.0, settings.retry_backoff_seconds * 2.0 ** int(retry_settings["count"]))
            return base * random.uniform(0.8, 1.2)

    return GodwitRetry(retry_total=settings.retries)


def _transport(settings: AzureSettings, pool: int) -> Any:
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class Adapter(HTTPAdapter):
        # Bigger socket writes for request bodies given as streams (the SDK's default is 8 KiB).
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("blocksize", 1 << 16)
            super().init_poolmanager(*args, **kwargs)

    session = requests.Session()
    # Retries belong to the SDK's policy; one pool slot per thread that may send at once, so
    # connections (and TLS handshakes) are reused rather than discarded.
    adapter = Adapter(max_retries=Retry(total=False, redirect=False, raise_on_status=False),
                      pool_connections=4, pool_maxsize=max(10, pool))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=True,
                             connection_verify=str(settings.ca_file) if settings.ca_file else True,
                             connection_timeout=settings.connect_timeout_seconds,
                             read_timeout=settings.read_timeout_seconds)


def client_kwargs(settings: AzureSettings, *, pool: int = 16) -> dict[str, Any]:
    """Keyword arguments for any azure-storage-blob client: retry, transport, TLS, sizes."""
    return {
        "retry_policy": _retry_policy(settings),
        "transport": _transport(settings, pool),
        "max_single_put_size": settings.single_put_mib * MIB,
        "max_block_size": settings.block_size_mib * MIB,
        # Blocks read straight from the caller's buffer rather than copied first (the SDK does so
        # only when no MD5 is asked for: an MD5 needs the whole block in memory anyway).
        "min_large_block_upload_threshold": 1 * MIB + 1,
        "max_single_get_size": 32 * MIB,
        "max_chunk_get_size": 4 * MIB,
        **settings.extra,
    }


def service_client(settings: AzureSettings, *, pool: int = 16) -> Any:
    """A BlobServiceClient for ``settings``; reads the secret now (ConfigError if it is missing)."""
    from azure.storage.blob import BlobServiceClient

    credential = build_credential(settings.credential, settings.account)
    return BlobServiceClient(settings.account_url, credential=credential, **client_kwargs(settings, pool=pool))


# -- errors ----------------------------------------------------------------------------------------

_PERMISSION_CODES = {"AuthorizationPermissionMismatch", "AuthorizationResourceTypeMismatch",
                     "AuthorizationServiceMismatch", "AuthorizationSourceIPMismatch",
                     "AuthorizationProtocolMismatch", "InsufficientAccountPermissions"}


def error_code(exc: BaseException) -> str:
    code = getattr(exc, "error_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None) or {}
        code = headers.get("x-ms-error-code")
    return str(getattr(code, "value", code) or "")


def _ssl_failure(exc: BaseException) -> str | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLError):
            return getattr(cur, "verify_message", None) or cur.reason or str(cur)
        text = str(cur)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSLError" in text:
            return "certificate verify failed" if "VERIFY" in text else "TLS handshake failed"
        cur = cur.__cause__ or cur.__context__
    return None


def _reason(exc: BaseException) -> str:
    """A short reason from a transport error, without the URL (it may carry a SAS)."""
    cur: BaseException | None = exc
    for _ in range(6):
        if cur is None:
            break
        text = str(cur)
        for marker in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                       "timed out", "Connection reset", "Connection aborted", "No route to host",
                       "Network is unreachable", "RemoteDisconnected", "Max retries exceeded"):
            if marker in text:
                return marker.lower() if marker != "RemoteDisconnected" else "the server closed the connection"
        cur = cur.__cause__ or cur.__context__
    return type(exc).__name__


def map_error(exc: Exception, settings: AzureSettings, what: str, *,
              base: type[GodwitError] = StoreError) -> GodwitError:
    """One SDK exception as the godwit error a person can act on. Never includes a secret.

    ``base`` is the class for generic failures (StoreError for the cache, ReplicaError for
    replica disks); auth, missing container and network failures keep it as their class too,
    except for the store-specific ObjectMissingError / StoreReadOnlyError.
    """
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    where = settings.where
    account = settings.account
    cred = settings.credential
    if isinstance(exc, GodwitError):
        return exc
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        code = error_code(exc)
        if code == "ContainerNotFound":
            return base(f"container {settings.container} does not exist in azure blob account {account}",
                        hint=f"create it (az storage container create --account-name {account} "
                             f"--name {settings.container}) or run `godwit store check`")
        if isinstance(exc, ResourceNotFoundError) and base is StoreError and code in ("BlobNotFound", ""):
            return ObjectMissingError(f"an object is missing from {where} while {what}")
        if status in (401, 403):
            if code in _PERMISSION_CODES:
                cls = StoreReadOnlyError if base is StoreError else base
                return cls(f"{where} refused {what}: the credential lacks that permission ({code})",
                           hint=f"grant it (SAS permissions or an RBAC role such as Storage Blob Data "
                                f"Contributor) to the {cred.kind} from {cred.source}")
            if cred.kind in ("sas", "connection_string"):
                expired = _expired_sas(cred)
                if expired:
                    return base(f"the SAS for {where} expired at {expired} ({what} refused)",
                                hint=f"issue a new SAS and store it in {cred.source}")
            return base(f"{where} refused the credential ({code or status}) while {what}",
                        hint=f"check that the {cred.kind} from {cred.source} belongs to account {account} and "
                             "is current; a firewall or private-endpoint-only account also refuses other "
                             "networks; `godwit store check` compares the clocks")
        if status in (500, 502, 503, 504):
            return base(f"{where} answered {status} {code or 'server error'} to {what} "
                        f"after {settings.retries} retries",
                        hint="the account is busy or unavailable; godwit retries later. Lower "
                             "[replication] upload_concurrency if it keeps throttling")
        return base(redact(f"{where} failed {what}: HTTP {status} {code}".rstrip()))
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        tls = _ssl_failure(exc)
        if tls:
            return base(f"TLS to {settings.account_url} failed while {what}: {tls}",
                        hint="if the endpoint uses a private CA, set ca_file to its PEM; otherwise "
                             "check for a TLS-inspecting proxy")
        reason = _reason(exc)
        verb = "cannot reach" if isinstance(exc, ServiceRequestError) else "lost the connection to"
        return base(f"{verb} {where} at {settings.account_url} while {what} ({reason}, "
                    f"after {settings.retries} retries)",
                    hint="check DNS, proxy and firewall for this account (for a private endpoint, that the "
                         "name resolves to its private address); run `godwit store check`")
    return base(redact(f"{where} failed {what}: {type(exc).__name__}: {exc}"))


def _expired_sas(cred: CredentialRef) -> str | None:
    from godwit.azure.credentials import parse_connection_string, read_secret

    try:
        secret = read_secret(cred)
    except GodwitError:
        return None
    if cred.kind == "connection_string":
        fields = {k.lower(): v for k, v in parse_connection_string(secret).items()}
        secret = fields.get("sharedaccesssignature", "")
    expiry = sas_expiry(secret)
    if expiry is not None and expiry <= datetime.now(UTC):
        return expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    return None


# -- the store ---------------------------------------------------------------------------------------

class AzureBlobStore(ObjectStore):
    """A cache store in one blob container. Thread-safe: one client, shared by the upload pool."""

    def __init__(self, settings: AzureSettings, *, service: Any = None) -> None:
        self.settings = settings
        self.description = f"azure blob {settings.account}/{settings.container}"
        self._service = service if service is not None else service_client(settings)
        self._container = self._service.get_container_client(settings.container)
        self._validate = settings.validate_content if settings.validate_content != "none" else None

    def _fail(self, exc: Exception, what: str, key: str | None = None) -> GodwitError:
        from azure.core.exceptions import ResourceNotFoundError

        if key is not None and isinstance(exc, ResourceNotFoundError) and error_code(exc) in ("BlobNotFound", ""):
            return ObjectMissingError(f"object {key} is missing from {self.description}")
        return map_error(exc, self.settings, what)

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        validate_key(key)
        # The SDK iterates a memoryview byte by byte: hand it bytes.
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            self._container.upload_blob(key, body, length=len(body), overwrite=overwrite,
                                        max_concurrency=self.settings.max_concurrency,
                                        validate_content=self._validate)
        except ResourceExistsError as exc:
            if not overwrite and error_code(exc) in ("BlobAlreadyExists", "ConditionNotMet", ""):
                raise ObjectExistsError(f"object {key} already exists in {self.description}; "
                                        "refusing to overwrite it") from None
            raise self._fail(exc, f"writing {key}") from None
        except HttpResponseError as exc:
            if not overwrite and exc.status_code == 412:
                raise ObjectExistsError(f"object {key} already exists in {self.description}; "
                                        "refusing to overwrite it") from None
            raise self._fail(exc, f"writing {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"writing {key}") from None

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        from azure.core.exceptions import HttpResponseError

        blob = self._container.get_blob_client(key)
        try:
            if length == 0:
                blob.get_blob_properties()  # still a missing key must raise
                return b""
            # No range for a whole read: the SDK then also handles an empty blob.
            stream = blob.download_blob(offset=None if offset == 0 and length is None else offset, length=length,
                                        max_concurrency=self.settings.max_concurrency,
                                        validate_content=self._validate)
            data: bytes = stream.readall()
            return data
        except HttpResponseError as exc:
            if exc.status_code == 416:  # a range starting at or past the end: nothing to read
                return b""
            raise self._fail(exc, f"reading {key}", key) from None
        except Exception as exc:
            raise self._fail(exc, f"reading {key}", key) from None

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            return bool(self._container.get_blob_client(key).exists())
        except Exception as exc:
            raise self._fail(exc, f"looking up {key}") from None

    def size(self, key: str) -> int:
        validate_key(key)
        try:
            return int(self._container.get_blob_client(key).get_blob_properties().size)
        except Exception as exc:
            raise self._fail(exc, f"looking up {key}", key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        try:
            # Uncommitted blobs (a put in flight) are never listed by the service.
            names = [str(n) for n in self._container.list_blob_names(name_starts_with=prefix or None)]
        except Exception as exc:
            raise self._fail(exc, f"listing {prefix or 'all objects'}") from None
        yield from sorted(names)

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        validate_key(key)
        try:
            self._container.delete_blob(key, delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._fail(exc, f"deleting {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"deleting {key}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._service.close()


def open_azure_store(options: dict[str, Any], root: Path) -> AzureBlobStore:
    """The cache store for ``[cache] kind = "azure"``; ``options`` are the section's other keys."""
    return AzureBlobStore(parse_options(options, "cache", Path(root)))
