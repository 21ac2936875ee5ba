"""Azure credentials, configured by reference only, and redaction of secrets from text and logs.

godwit.toml names where a secret lives, never the secret itself::

    credential = { kind = "sas", env = "GODWIT_CACHE_SAS" }
    credential = { kind = "account_key", file = "secrets/cache.key" }   # relative to the project
    credential = { kind = "default" }   # azure-identity DefaultAzureCredential: no secret at all

Every secret read here is registered with :func:`redact`, which also removes the shapes secrets
take on the wire (a SAS ``sig=``, ``Authorization`` headers, ``AccountKey=`` in connection
strings). :func:`install_log_redaction` applies it to every log record, the Azure SDK's included.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from godwit.errors import ConfigError

KINDS = ("connection_string", "account_key", "sas", "default")
REDACTED = "REDACTED"


@dataclass(frozen=True)
class CredentialRef:
    """Where a credential comes from. Holds no secret, so it may be printed and stored."""

    kind: str
    env: str | None = None
    file: Path | None = None

    @property
    def source(self) -> str:
        if self.env is not None:
            return f"environment variable {self.env}"
        if self.file is not None:
            return f"file {self.file}"
        if self.kind == "default":
            return "DefaultAzureCredential (environment, managed identity, Azure CLI login)"
        return "the SAS URL given to godwit"


def parse_credential(value: object, section: str, root: Path) -> CredentialRef:
    """Validate a ``credential = { kind = ..., env = ... | file = ... }`` table."""
    where = f"[{section}] credential"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a table like {{ kind = \"sas\", env = \"VAR\" }}",
                          hint="secrets are configured by reference: an environment variable or a file")
    table = dict(value)
    kind = table.pop("kind", None)
    if kind not in KINDS:
        raise ConfigError(f"{where} kind must be one of {', '.join(KINDS)}, got {kind!r}")
    env = table.pop("env", None)
    file = table.pop("file", None)
    if table:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(sorted(table))}",
                          hint="a credential has kind and one of env or file")
    if kind == "default":
        if env is not None or file is not None:
            raise ConfigError(f"{where} of kind \"default\" takes no env or file",
                              hint="DefaultAzureCredential finds its own identity; remove env/file")
        return CredentialRef(kind)
    if (env is None) == (file is None):
        raise ConfigError(f"{where} of kind {kind!r} needs exactly one of env or file",
                          hint=f'for example credential = {{ kind = "{kind}", env = "GODWIT_AZURE_SECRET" }}')
    if env is not None:
        if not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):
            raise ConfigError(f"{where} env must be an environment variable name, got {env!r}",
                              hint="name the variable; never put the secret itself in godwit.toml")
        return CredentialRef(kind, env=env)
    if not isinstance(file, str) or not file:
        raise ConfigError(f"{where} file must be a path, got {file!r}")
    return CredentialRef(kind, file=(root / file).resolve())


def read_secret(ref: CredentialRef) -> str:
    """The secret ``ref`` points at, registered for redaction. ConfigError if missing or empty."""
    if ref.env is not None:
        value = os.environ.get(ref.env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {ref.env} (the {ref.kind} credential) is not set or empty",
                              hint=f"export {ref.env} in the environment that runs godwit")
    elif ref.file is not None:
        try:
            value = ref.file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"credential file {ref.file} does not exist",
                              hint=f"write the {ref.kind} into it, or fix credential.file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read credential file {ref.file}: {getattr(exc, 'strerror', None) or exc}",
                              hint="check its permissions (it should be readable by godwit only)") from None
        if not value:
            raise ConfigError(f"credential file {ref.file} is empty", hint=f"write the {ref.kind} into it")
    else:
        raise ConfigError(f"a {ref.kind} credential needs env or file")
    register_secret(value)
    return value


def parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;...`` pairs (values may contain '='); keys case-insensitive, returned as written."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ConfigError("the connection string is malformed (expected Key=Value;Key=Value)")
        out[key.strip()] = value.strip()
    return out


def sas_expiry(token: str) -> datetime | None:
    """The ``se=`` expiry of a SAS token, if it has a readable one."""
    values = parse_qs(token.lstrip("?")).get("se")
    if not values:
        return None
    try:
        when = datetime.fromisoformat(values[0].replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def build_credential(ref: CredentialRef, account: str, *, transport: Callable[[], Any],
                     retries: int = 3) -> Any:
    """The object the Azure SDK takes as ``credential=`` for ``account``.

    Returns a named key credential, a SAS string, or a DefaultAzureCredential. A connection string
    contributes only its key or SAS: the endpoint comes from ``account_url`` in godwit.toml, so
    the configured network path cannot be overridden by a secret. ``transport`` makes the
    transport of a credential that requests tokens itself (``azure.transport``, control plane):
    left to itself, azure-identity would build one that reads proxies from the environment.
    ``retries`` bounds that credential's retries of a token request, as for the account's own.
    """
    from azure.core.credentials import AzureNamedKeyCredential

    if ref.kind == "default":
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential(transport=transport(), retry_total=retries)
    secret = read_secret(ref)
    if ref.kind == "account_key":
        return AzureNamedKeyCredential(account, secret)
    if ref.kind == "sas":
        token = secret.lstrip("?")
        if "sig=" not in token:
            raise ConfigError(f"the SAS in {ref.source} has no sig= field",
                              hint="store the SAS token (the part after '?'), not the URL or the key")
        return token
    fields = {k.lower(): v for k, v in parse_connection_string(secret).items()}
    named = fields.get("accountname")
    if named and named != account:
        raise ConfigError(f"the connection string in {ref.source} is for account {named!r}, "
                          f"but account_url names {account!r}", hint="use the connection string of that account")
    if fields.get("accountkey"):
        return AzureNamedKeyCredential(account, fields["accountkey"])
    if fields.get("sharedaccesssignature"):
        register_secret(fields["sharedaccesssignature"])
        return fields["sharedaccesssignature"].lstrip("?")
    raise ConfigError(f"the connection string in {ref.source} has neither AccountKey nor SharedAccessSignature",
                      hint="copy it from the portal: storage account → Access keys → Connection string")


# -- redaction ----------------------------------------------------------------------------------

_lock = threading.Lock()
_secrets: set[str] = set()
_MIN_SECRET = 8  # shorter strings would blank out ordinary words

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # A SAS signature in a URL or a token, raw or percent-encoded.
    (re.compile(r"(?i)(\bsig=)[^&\s'\"<>;,]+"), r"\1" + REDACTED),
    # Connection string secrets.
    (re.compile(r"(?i)(\b(?:AccountKey|SharedAccessSignature)=)[^;\s'\"]+"), r"\1" + REDACTED),
    # Header values, as `Name: value`, `'Name': 'value'` or `Name=value`.
    (re.compile(r"(?i)(\b(?:x-ms-copy-source-authorization|authorization)['\"]?\s*[:=]\s*['\"]?)[^'\"\r\n]+"),
     r"\1" + REDACTED),
    # A SharedKey signature: "SharedKey account:base64signature".
    (re.compile(r"(?i)(\bSharedKey(?:Lite)?\s+[a-z0-9]+:)[A-Za-z0-9+/=]+"), r"\1" + REDACTED),
]


def register_secret(secret: str) -> None:
    """Make :func:`redact` remove ``secret`` (and its URL-encoded form) from any text."""
    forms = {secret, quote(secret, safe=""), unquote(secret)}
    # A SAS token's signature is what must never leak; register it alone too.
    for sig in parse_qs(secret.lstrip("?")).get("sig", []):
        forms.update({sig, quote(sig, safe="")})
    with _lock:
        _secrets.update(f for f in forms if len(f) >= _MIN_SECRET)


def redact(text: str) -> str:
    """``text`` with SAS signatures, authorization headers, account keys and registered secrets removed."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its formatted message and any exception text."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string: keep the raw template, still redacted
        message = str(record.msg)
    record.msg = redact(message)
    record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactingFilter(logging.Filter):
    """A logging filter for handlers: redacts every record that passes through, drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_log_redaction() -> None:
    """Redact every log record as it is created, in every logger (idempotent).

    A filter on a logger does not see records its children propagate, and handlers come and go;
    the record factory sees every record that passes a level check, whoever logs it.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "_godwit_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redact_record(record)
        return record

    factory._godwit_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
