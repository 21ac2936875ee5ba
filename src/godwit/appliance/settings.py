"""What an appliance needs to reach its service, and the token it keeps after registering.

From options or a TOML file (``--config``)::

    [appliance]
    service = "https://godwit.example.net:8443"
    name = "site-a"
    servers = ["web", "db"]      # asked for at registration
    key_file = "/etc/godwit/registration-key"   # or key_env = "GODWIT_REGISTRATION_KEY"
    ca_bundle = "/etc/godwit/service-ca.pem"    # a private CA for the service's certificate
    poll_seconds = 5

The token lives in the appliance's project folder (``state/appliance/token``, mode 0600, written
atomically) and is never printed; the registration key is needed only until it exists.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from godwit.errors import ConfigError, UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
KEYS = frozenset({"service", "name", "servers", "key", "key_file", "key_env", "ca_bundle", "poll_seconds"})


@dataclass(frozen=True)
class ApplianceSettings:
    service: str
    name: str
    servers: tuple[str, ...] = ()
    key: str | None = field(default=None, repr=False)
    ca_bundle: Path | None = None
    poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.service.startswith(("http://", "https://")):
            raise UsageError(f"the service {self.service[:200]!r} is not an http:// or https:// URL")
        if not NAME_RE.match(self.name):
            raise UsageError(f"an appliance's name must be 1 to 63 letters, digits, '.', '_' or '-', "
                             f"not {self.name[:80]!r}")
        for s in self.servers:
            if not NAME_RE.match(s):
                raise UsageError(f"{s[:80]!r} is not a server name")
        if not 0.05 <= self.poll_seconds <= 3600:
            raise UsageError("poll_seconds must be between 0.05 and 3600")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise UsageError(f"the CA bundle {self.ca_bundle} is not a file")


def load(path: Path) -> ApplianceSettings:
    """The ``[appliance]`` table of a TOML file, strictly (an unknown key is an error)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    table = doc.get("appliance")
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [appliance] table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) in [appliance] of {path}: {', '.join(unknown)}",
                          hint="known: " + ", ".join(sorted(KEYS)))
    key = table.get("key")
    if table.get("key_file"):
        try:
            key = Path(str(table["key_file"])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the registration key from {table['key_file']}: {exc.strerror}") from None
    elif table.get("key_env"):
        key = os.environ.get(str(table["key_env"])) or None
    try:
        servers = table.get("servers", [])
        if not isinstance(servers, list):
            raise TypeError("servers must be a list")
        return ApplianceSettings(
            service=str(table["service"]), name=str(table["name"]), servers=tuple(str(s) for s in servers),
            key=str(key) if key else None,
            ca_bundle=Path(str(table["ca_bundle"])) if table.get("ca_bundle") else None,
            poll_seconds=float(table.get("poll_seconds", 5.0)))
    except KeyError as exc:
        raise ConfigError(f"[appliance] of {path} needs {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[appliance] of {path}: {exc}") from None


@dataclass(frozen=True)
class SavedToken:
    service: str
    name: str
    secret: str = field(repr=False)


def token_path(folder: Path) -> Path:
    return folder / "token"


def read_token(folder: Path) -> SavedToken | None:
    p = token_path(folder)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        return SavedToken(str(doc["service"]), str(doc["name"]), str(doc["secret"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"the appliance's token file {p} is damaged",
                          hint="remove it and run again with the registration key") from None


def save_token(folder: Path, token: SavedToken) -> None:
    """Write the token file with mode 0600 from its first byte, then rename it into place."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    tmp = folder / ".token.new"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"service": token.service, "name": token.name, "secret": token.secret}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, token_path(folder))

