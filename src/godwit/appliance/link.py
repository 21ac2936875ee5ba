"""The appliance's HTTP link to the service: out only, on the control plane's route.

The route is the project's Router's decision for the service's URL (``[network]`` proxy and bypass
list; no ``[network]`` table: direct). The environment's proxy variables are never read
(``trust_env`` off), TLS is verified, against ``ca_bundle`` when given. Answers are sorted into
what the appliance acts on: the service is down (keep replicating, retry later), refused the
token, refused a report (409), or answered.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx

from godwit.errors import ConfigError, ConflictError, GodwitError, NotFoundError, ProjectError
from godwit.network.route import Router

log = logging.getLogger("godwit.appliance")


class ServiceDown(ProjectError):
    """The service did not answer (connection, timeout, 5xx): the appliance carries on and retries."""


class TokenRefused(ConfigError):
    """401: the token is unknown, expired or revoked (or the registration key is wrong)."""


class Refused(ConflictError):
    """409: the service refused what was sent (a cycle out of order, a conflicting report)."""


class ServiceLink:
    def __init__(self, url: str, *, router: Router | None, ca_bundle: str | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        proxy: httpx.Proxy | None = None
        self.route = router.route(self.url) if router is not None else None
        if self.route is not None and self.route.proxy:
            auth = None
            if router is not None and router.network.proxy_credential is not None:
                from godwit.azure.transport import read_proxy_secret

                user, _, password = read_proxy_secret(router.network.proxy_credential).partition(":")
                auth = (user, password)
            proxy = httpx.Proxy(self.route.proxy, auth=auth)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self._http = httpx.Client(base_url=self.url, proxy=proxy, verify=verify, trust_env=False,
                                  timeout=timeout)
        self._token: str | None = None

    @property
    def path(self) -> str:
        return self.route.describe() if self.route is not None else f"control plane request to {self.url} (direct)"

    def use_token(self, secret: str) -> None:
        self._token = secret

    def close(self) -> None:
        self._http.close()

    # -- the protocol's calls ------------------------------------------------------------------

    def register(self, name: str, key: str, servers: list[str]) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/appliances/register",
                               {"name": name, "key": key, "servers": servers}, auth=False))

    def desired(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/appliance/desired"))

    def report_cycle(self, report: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/api/v1/appliance/cycles", report))

    def report_progress(self, progress: dict[str, Any]) -> None:
        self._call("POST", "/api/v1/appliance/progress", progress)

    def report_events(self, events: list[dict[str, Any]]) -> int:
        return int(self._call("POST", "/api/v1/appliance/events", {"events": events})["last_event"])

    def command_done(self, command_id: int, result: str) -> None:
        self._call("POST", f"/api/v1/appliance/commands/{int(command_id)}/done", {"result": result[:2000]})

    # -- one request ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Authorization": f"Bearer {self._token}"} if auth and self._token else {}
        try:
            r = self._http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceDown(f"the service at {self.url} did not answer: {type(exc).__name__}",
                              hint="the appliance keeps replicating and reports when it is back") from None
        if r.status_code >= 500 or r.status_code == 429:
            raise ServiceDown(f"the service at {self.url} answered {r.status_code}")
        if r.status_code == 401:
            raise TokenRefused(f"the service at {self.url} refused the appliance's "
                               f"{'token' if auth else 'registration key'}",
                               hint="register again with the project's registration key (`--key`)")
        if r.status_code >= 400:
            message, hint = _error_of(r)
            if r.status_code == 409:
                raise Refused(message, hint=hint)
            if r.status_code == 404:
                raise NotFoundError(message, hint=hint)
            raise GodwitError(f"the service refused {method} {path} ({r.status_code}): {message}", hint=hint)
        if r.status_code == 204:
            return None
        try:
            return r.json()
        except ValueError:
            raise ProjectError(f"the service at {self.url} answered something that is not godwit's API") from None


def _error_of(r: httpx.Response) -> tuple[str, str | None]:
    try:
        body = r.json()
        return str(body["error"]), (str(body["hint"]) if body.get("hint") else None)
    except (ValueError, KeyError, TypeError):
        return f"the service answered {r.status_code}", None
