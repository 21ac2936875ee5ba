"""The CLI's client of a running `godwit serve` (`godwit --service URL …`, token in $GODWIT_TOKEN).

The commands that support it (`replicate status|start|cycle|stop`, `events`, `migrate`) ask
``service_client()``: None means work on the local project as usual. Answers are validated into
the same typed models the local path returns, so printing is one code path. A long operation is
started (202) and followed by polling its resource until it ends (``follow``). The token is taken
from the environment only, never from an option, so it shows neither in `ps` nor in a shell
history, and no message ever includes it.
"""

from __future__ import annotations

import os
import re
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import TypeAdapter, ValidationError

from godwit import errors
from godwit.errors import ConfigError, ConflictError, GodwitError, NotFoundError, ProjectError, UsageError
from godwit.state.views import Event, ServerStatus

if TYPE_CHECKING:
    from godwit.service.models import OperationError, OperationView, ReplicationView
    from godwit.state.appliances import ApplianceView

SERVICE_ENV, TOKEN_ENV, CA_ENV = "GODWIT_SERVICE", "GODWIT_TOKEN", "GODWIT_SERVICE_CA"
_BY_STATUS: dict[int, type[GodwitError]] = {400: UsageError, 404: NotFoundError, 409: ConflictError,
                                             422: UsageError}
#: Seconds between two polls of a running operation.
POLL = 0.2


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

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, body: Any = None, **params: Any) -> Any:
        try:
            r = self._http.request(method, path, json=body, params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise ProjectError(f"cannot reach the service at {self.url}: {exc}",
                               hint="check --service and that `godwit serve` runs there") from None
        if r.status_code == 401:
            raise ConfigError(f"the service at {self.url} did not accept the token (401)",
                              hint=f"set ${TOKEN_ENV} to a valid token (`godwit token create`)")
        if r.status_code >= 400:
            message, hint = _error_of(r)
            if r.status_code == 403:
                raise ConfigError(f"the service at {self.url} refused this to the token's role: {message} (403)",
                                  hint="use a token with that role (`godwit token create --role …`)")
            raise _BY_STATUS.get(r.status_code, GodwitError)(message, hint=hint)
        return r.json()

    def _get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, **params)

    def _as(self, kind: Any, data: Any) -> Any:
        try:
            return TypeAdapter(kind).validate_python(data)
        except ValidationError:
            raise ProjectError(f"the service at {self.url} answered something that is not godwit's API",
                               hint="check --service, and that both sides run the same godwit version") from None

    def status(self, name: str | None = None) -> list[ServerStatus]:
        if name is not None:
            return [self._as(ServerStatus, self._get(f"/api/v1/servers/{segment(name)}"))]
        result: list[ServerStatus] = self._as(list[ServerStatus], self._get("/api/v1/servers"))
        return result

    def events(self, server: str | None, limit: int) -> list[Event]:
        result: list[Event] = self._as(list[Event], self._get("/api/v1/events", server=server, limit=limit))
        return result

    # -- the acting commands ---------------------------------------------------------------------

    def start(self, method: str, path: str, body: dict[str, Any] | None = None) -> OperationView:
        """Start an operation (the service answers 202 with it)."""
        from godwit.service.models import OperationView

        op: OperationView = self._as(OperationView, self._call(method, path, body=body))
        return op

    def operation(self, op_id: int) -> OperationView:
        from godwit.service.models import OperationView

        op: OperationView = self._as(OperationView, self._get(f"/api/v1/operations/{op_id}"))
        return op

    def follow(self, op: OperationView, on_progress: Callable[[float], None] | None = None) -> OperationView:
        """Poll ``op`` until it ends; its result, or its error raised as the GodwitError it was.
        Interrupted here (Ctrl-C), the operation goes on in the service."""
        try:
            while op.state in ("queued", "running"):
                if on_progress is not None and op.progress is not None:
                    on_progress(min(op.progress, 0.99))  # all read is not yet all sent and committed
                time.sleep(POLL)
                op = self.operation(op.id)
        except KeyboardInterrupt:
            raise ProjectError(f"stopped following operation {op.id}; it goes on in the service",
                               hint=f"GET {self.url}/api/v1/operations/{op.id} tells how it ends") from None
        if op.error is not None:
            raise raised(op.error)
        if on_progress is not None:
            on_progress(1.0)
        return op

    def stop_replication(self, name: str) -> ReplicationView:
        from godwit.service.models import ReplicationView

        view: ReplicationView = self._as(ReplicationView, self._call("PUT", f"/api/v1/replications/{segment(name)}",
                                                                     body={"enabled": False}))
        return view


    def appliances(self) -> list[ApplianceView]:
        from godwit.state.appliances import ApplianceView

        views: list[ApplianceView] = self._as(list[ApplianceView], self._get("/api/v1/appliances"))
        return views

    def unregister_appliance(self, name: str) -> tuple[ApplianceView, list[str]]:
        from godwit.service.protocol_models import Unregistered

        done: Unregistered = self._as(Unregistered, self._call("DELETE", f"/api/v1/appliances/{segment(name)}"))
        return done.appliance, done.stopped


def _error_of(r: httpx.Response) -> tuple[str, str | None]:
    try:
        body = r.json()
        if r.status_code == 422 and isinstance(body.get("detail"), list):  # FastAPI's validation answer
            first = body["detail"][0]
            return f"the service refused the request: {first['msg']} ({'.'.join(map(str, first['loc']))})", None
        return str(body["error"]), body.get("hint")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"the service answered {r.status_code}", None


def raised(error: OperationError) -> GodwitError:
    """The GodwitError an operation failed with, rebuilt from its class name and exit code."""
    cls = getattr(errors, error.type, None)
    if not (isinstance(cls, type) and issubclass(cls, GodwitError)):
        cls = GodwitError
    exc = cls(error.error, hint=error.hint)
    exc.exit_code = error.exit_code  # the service's own, also for `Interrupted`
    return exc


def segment(name: str) -> str:
    """A server's or appliance's name as one segment of an API path: refused unless it is a name
    (``../tokens/1`` must not become another route)."""
    from godwit.service.models import NAME

    if not re.fullmatch(NAME, name):
        raise UsageError(f"{name[:80]!r} is not a name (letters, digits, '.', '_', '-'; at most 63)")
    return name


def service_client() -> ServiceClient | None:
    """The client for `--service` / $GODWIT_SERVICE, or None for the local project."""
    url = os.environ.get(SERVICE_ENV)
    if not url:
        return None
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise UsageError(f"--service needs a token in ${TOKEN_ENV}", hint="`godwit token create` makes one")
    return ServiceClient(url, token, os.environ.get(CA_ENV) or None)
