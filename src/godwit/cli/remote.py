"""The CLI's client of a running `godwit serve` (`godwit --service URL …`, token in $GODWIT_TOKEN).

The read commands that support it (`replicate status`, `events`) ask ``service_client()``: None
means work on the local project as usual. Answers are validated into the same state views the
local path returns, so printing is one code path. The token is taken from the environment only,
never from an option, so it shows neither in `ps` nor in a shell history.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import httpx
from pydantic import TypeAdapter, ValidationError

from godwit.errors import ConfigError, ConflictError, GodwitError, NotFoundError, ProjectError, UsageError
from godwit.state.views import Event, ServerStatus

SERVICE_ENV, TOKEN_ENV, CA_ENV = "GODWIT_SERVICE", "GODWIT_TOKEN", "GODWIT_SERVICE_CA"
_BY_STATUS: dict[int, type[GodwitError]] = {400: UsageError, 404: NotFoundError, 409: ConflictError}


class ServiceClient:
    def __init__(self, url: str, token: str, ca_file: str | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--service {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"},
                                  verify=verify, timeout=60, trust_env=True)

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, **params: Any) -> Any:
        try:
            r = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise ProjectError(f"cannot reach the service at {self.url}: {exc}",
                               hint="check --service and that `godwit serve` runs there") from None
        if r.status_code in (401, 403):
            raise ConfigError(f"the service at {self.url} refused the token ({r.status_code})",
                              hint=f"set ${TOKEN_ENV} to a valid token (`godwit token create`)")
        if r.status_code >= 400:
            try:
                body = r.json()
                message, hint = str(body["error"]), body.get("hint")
            except (ValueError, KeyError, TypeError):
                message, hint = f"the service answered {r.status_code}", None
            raise _BY_STATUS.get(r.status_code, GodwitError)(message, hint=hint)
        return r.json()

    def _as(self, kind: Any, data: Any) -> Any:
        try:
            return TypeAdapter(kind).validate_python(data)
        except ValidationError:
            raise ProjectError(f"the service at {self.url} answered something that is not godwit's API",
                               hint="check --service, and that both sides run the same godwit version") from None

    def status(self, name: str | None = None) -> list[ServerStatus]:
        if name is not None:
            return [self._as(ServerStatus, self._get(f"/api/v1/servers/{name}"))]
        result: list[ServerStatus] = self._as(list[ServerStatus], self._get("/api/v1/servers"))
        return result

    def events(self, server: str | None, limit: int) -> list[Event]:
        result: list[Event] = self._as(list[Event], self._get("/api/v1/events", server=server, limit=limit))
        return result


def service_client() -> ServiceClient | None:
    """The client for `--service` / $GODWIT_SERVICE, or None for the local project."""
    url = os.environ.get(SERVICE_ENV)
    if not url:
        return None
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise UsageError(f"--service needs a token in ${TOKEN_ENV}", hint="`godwit token create` makes one")
    return ServiceClient(url, token, os.environ.get(CA_ENV) or None)
