"""After every cycle: the data-plane path it took, and the server's state on the gateway account.

* :func:`record_path` keeps, per cycle, which path the replication bytes took (private endpoint,
  Microsoft peering or internet; direct or through a proxy) and how many were sent, as the
  transport's Router decided it (issue 9.8; ``replicate status`` shows it).
* :func:`publish` writes the server's replication state — what ``replicate status --json`` says
  of it — to ``[gateway]``'s container as ``servers/<name>.json``, as Azure Migrate's appliance
  keeps its state in the gateway (``gwsa…``) account (issue 9.4). That is control-plane traffic:
  through ``[network] proxy`` (or direct without one), never on the private path; a gateway that
  names the cache account's host is refused.

:func:`after_cycle` does both and never raises: the cycle is already durable, so a failure here
is an error event (the proxy down stops the state, not the replication).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from godwit.errors import GodwitError, NetworkPolicyError
from godwit.state.network import NetworkRecords

if TYPE_CHECKING:
    from godwit.azure.settings import AzureSettings
    from godwit.engine.cycle import CycleResult
    from godwit.project.project import Project

log = logging.getLogger("godwit.engine.gateway_state")
STATE_PREFIX = "servers"
FORMAT = 1
_LABELS = {"private-endpoint": "private endpoint", "microsoft-peering": "Microsoft peering", "internet": "internet"}


def current_path(project: Project) -> dict[str, Any]:
    """The data-plane path as the transport decides it now (after a cycle: the one it used)."""
    cfg = project.config
    if cfg.cache.kind != "azure":
        return {"data_plane": "local", "path": f"local folder {project.cache_dir}", "proxied": False,
                "proxy": None, "address": None}
    router = project.router
    if router is None:
        from godwit.azure.settings import parse_options
        from godwit.azure.transport import proxy_route

        settings = parse_options(cfg.cache.options, "cache", project.root)
        proxies = proxy_route(settings).for_url(settings.account_url)
        proxy = next(iter(proxies.values()), None)
        return {"data_plane": "internet", "path": f"internet, {'via proxy ' + proxy if proxy else 'direct'}",
                "proxied": proxy is not None, "proxy": proxy, "address": None}
    route = router.last_data_route
    if route is None:
        url = cfg.cache.options.get("account_url")
        route = router.route(str(url))
    mode = router.network.data_plane
    how = f"direct to {route.pinned}" if route.pinned is not None else (
        f"via proxy {route.proxy}" if route.proxy else "direct")
    return {"data_plane": mode, "path": f"{_LABELS.get(mode, mode)}, {how}", "proxied": route.proxy is not None,
            "proxy": route.proxy, "address": str(route.pinned) if route.pinned is not None else None}


def record_path(project: Project, result: CycleResult) -> dict[str, Any]:
    server = project.db.server(result.server)
    cyc = project.db.cycle(server.id, result.number)
    path = {**current_path(project), "cycle": result.number, "bytes_sent": result.bytes_sent, "at": time.time()}
    with project.db.unit() as u:
        NetworkRecords(u.connection).record_cycle_path(cyc.id, path)
    return path


def gateway_settings(project: Project) -> AzureSettings | None:
    """``[gateway]`` as settings routed by the project's Router; None when there is no gateway."""
    from godwit.azure.settings import CONNECTION_KEYS, parse_options
    from godwit.network.route import data_host_of

    options = {k: v for k, v in project.config.gateway.items() if k != "kind"}
    if not options:
        return None
    settings = dataclasses.replace(parse_options(options, "gateway", project.root, allowed=CONNECTION_KEYS),
                                   router=project.router)
    cache_url = project.config.cache.options.get("account_url") if project.config.cache.kind == "azure" else None
    host = data_host_of(settings.account_url)
    if isinstance(cache_url, str) and host == data_host_of(cache_url):
        raise NetworkPolicyError(f"[gateway] names the cache account's host {host}: the state would take the data "
                                 "path", hint="give [gateway] the gateway account's own URL (gwsa…)")
    if settings.router is not None:
        route = settings.router.route(settings.account_url)
        if route.plane != "control" or route.pinned is not None:  # never the private path
            raise NetworkPolicyError(f"the gateway account would be reached as {route.describe()}",
                                     hint="the gateway account stays on the internet path")
    return settings


def state_key(name: str) -> str:
    return f"{STATE_PREFIX}/{name}.json"


def publish(project: Project, name: str) -> str | None:
    """Write ``name``'s status to the gateway account; the blob's name, or None without [gateway]."""
    from godwit.azure.clients import service_client
    from godwit.azure.errors import map_error
    from godwit.engine.lifecycle import status

    settings = gateway_settings(project)
    if settings is None:
        return None
    state = status(project, name)[0].model_dump(mode="json")  # what `replicate status --json` says
    doc = {"format": FORMAT, "server": name, "written": time.time(), "status": state}
    body = json.dumps(doc, default=str, sort_keys=True).encode()
    key = state_key(name)
    service = service_client(settings, "control", pool=1)
    try:
        from azure.storage.blob import ContentSettings

        blob = service.get_blob_client(settings.container, key)
        blob.upload_blob(body, overwrite=True, content_settings=ContentSettings(content_type="application/json"))
    except GodwitError:
        raise
    except Exception as exc:
        raise map_error(exc, settings, f"writing the state of {name} to the gateway account") from None
    finally:
        service.close()
    return key


def after_cycle(project: Project, result: CycleResult) -> None:
    """Record the cycle's path, then publish the server's state; failures become events."""
    name = result.server
    try:
        record_path(project, result)
    except GodwitError as exc:
        log.warning("%s: the path of cycle %d was not recorded: %s", name, result.number, exc.message)
        project.db.event("warning", f"the network path of cycle {result.number} was not recorded: {exc.message}",
                         server=name, cycle=result.number)
    try:
        publish(project, name)
    except GodwitError as exc:
        msg = f"the state of {name} was not written to the gateway account: {exc.message}"
        log.error("%s", msg)
        project.db.event("error", msg + (f" (hint: {exc.hint})" if exc.hint else ""), server=name,
                         cycle=result.number)
