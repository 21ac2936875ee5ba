"""Azure SDK failures as godwit errors a person can act on, mapped once, at the boundary.

:func:`map_error` names the account, what was being done, and the fix (a missing container, a
permission the credential lacks, an expired SAS, a TLS or network failure); it never includes a
secret. :func:`error_code` reads the service's ``x-ms-error-code``.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

from godwit.azure.credentials import CredentialRef, parse_connection_string, read_secret, redact, sas_expiry
from godwit.azure.settings import AzureSettings
from godwit.errors import GodwitError, ObjectMissingError, StoreError, StoreReadOnlyError

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
