"""`godwit network check`: every check the article makes a person do by hand, on the real network.

The checks run on the project's own Router (``[network]``): DNS through its resolver, answers
judged by its private-path check, bypass questions asked of its matcher, connections opened on the
route it decides. Ids are stable (docs/configuration.md, "network check"); a check that does not
apply to the configured data plane is left out. Findings never raise: each is a
:class:`~godwit.checks.netcheck_model.Check`. The run is recorded in the state database, so that
``replicate status`` can say when the network was last checked.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from godwit.checks import netcheck_bypass as bypass
from godwit.checks.netcheck_dns import dns_checks
from godwit.checks.netcheck_model import Check, NetworkReport, failed, passed, warned
from godwit.checks.netcheck_reach import reach, tcp_only
from godwit.checks.netcheck_route import communities, expressroute_route
from godwit.config.network import NetworkConfig
from godwit.errors import GodwitError
from godwit.network.route import Route, Router, data_host_of

if TYPE_CHECKING:
    from godwit.project.project import Project

#: The control-plane endpoints reached by default: Entra ID's token endpoint and Azure Resource Manager.
CONTROL_ENDPOINTS = ("login.microsoftonline.com:443", "management.azure.com:443")


@dataclasses.dataclass(frozen=True)
class Account:
    url: str
    host: str
    port: int
    ca_file: Path | None


def _account(project: Project, section: str) -> tuple[Account | None, Check | None]:
    from godwit.azure.settings import CONNECTION_KEYS, parse_options

    if section == "cache":
        if project.config.cache.kind != "azure":
            return None, None
        options = dict(project.config.cache.options)
        allowed = None
    else:
        options = {k: v for k, v in project.config.gateway.items() if k != "kind"}
        if not options:
            return None, None
        allowed = CONNECTION_KEYS
    try:
        s = parse_options(options, section, project.root, allowed=allowed) if allowed else \
            parse_options(options, section, project.root)
    except GodwitError as exc:
        return None, failed(f"{section}.config", exc.message, exc.hint or "fix godwit.toml")
    port = urlsplit(s.account_url).port or (443 if s.account_url.startswith("https:") else 80)
    return Account(s.account_url, data_host_of(s.account_url), port, s.ca_file), None


def _proxy_auth(network: NetworkConfig) -> tuple[str | None, Check | None]:
    if network.proxy_credential is None:
        return None, None
    from godwit.azure.transport import read_proxy_secret

    try:
        return read_proxy_secret(network.proxy_credential), None
    except GodwitError as exc:
        return None, failed("proxy.credential", exc.message, exc.hint or "fix proxy_credential")


def run_network_check(project: Project, *, router: Router | None = None,
                      control_endpoints: Sequence[str] = CONTROL_ENDPOINTS, skip: Iterable[str] = (),
                      ip_argv: Sequence[str] = ("ip",), timeout: float = 5.0) -> NetworkReport:
    """Every check for ``project`` (``router``: the project's own unless given; tests pass one)."""
    network = project.config.network
    skipped = frozenset(skip)
    report = NetworkReport(network.data_plane)
    checks = report.checks
    if not network.configured:
        checks.append(warned("network.config", "godwit.toml has no [network] table: the data plane is the internet "
                             "and proxies come from the Azure sections or the environment",
                             "add a [network] table (docs/configuration.md) so godwit decides every route itself"))
    else:
        n = len(network.bypass)
        checks.append(passed("network.config", f"data_plane = \"{network.data_plane}\", "
                                               f"{'proxy ' + network.proxy if network.proxy else 'no proxy'}, "
                                               f"{n} bypass entr{'y' if n == 1 else 'ies'}"))
    cache, problem = _account(project, "cache")
    gateway, gproblem = _account(project, "gateway")
    checks += [c for c in (problem, gproblem) if c is not None]
    if router is None:
        router = project.router or Router(network, [cache.host] if cache else [])
    auth, aproblem = _proxy_auth(network)
    if aproblem is not None:
        checks.append(aproblem)
    if network.proxy is not None:
        p = urlsplit(network.proxy)
        checks.append(tcp_only("proxy.reach", p.hostname or "", p.port or 80, timeout, "proxy"))
    if cache is None:
        if problem is None:
            checks.append(warned("cache.account", "the cache is a local folder: there is no data plane to check",
                                 'configure [cache] kind = "azure" for replication to Azure'))
    else:
        checks += _cache_checks(router, cache, gateway, auth, ip_argv, timeout, skipped)
    if gateway is not None:
        checks += _gateway_checks(router, cache, gateway, auth, timeout, skipped)
    # Token requests are verified as the account's own requests are (its ca_file): the same here.
    control_ca = (cache.ca_file if cache else None) or (gateway.ca_file if gateway else None)
    for endpoint in control_endpoints:
        host, _, port = endpoint.rpartition(":") if ":" in endpoint else (endpoint, "", "443")
        route = _route(router, f"https://{host}:{port}/")
        if isinstance(route, Check):
            checks.append(route)
            continue
        prefix = f"control.{host}"
        checks += _unless_skipped(skipped, (f"{prefix}.tcp", f"{prefix}.tls"), functools.partial(
            reach, prefix, route, ca_file=control_ca, timeout=timeout, proxy_auth=auth, what="control-plane endpoint"))
    checks.append(bypass.internet_only(router))
    report.checks = [c if c.id not in skipped else _skipped(c.id) for c in checks]
    return report


def _skipped(id_: str) -> Check:
    return warned(id_, "skipped (--skip)", "run it without --skip")


def _unless_skipped(skip: frozenset[str], ids: Sequence[str], run: Callable[[], list[Check]]) -> list[Check]:
    """``run()`` unless every one of ``ids`` is skipped: then it is not run at all (no traffic)."""
    if ids and all(i in skip for i in ids):
        return [_skipped(i) for i in ids]
    return run()


def _route(router: Router, url: str) -> Route | Check:
    try:
        return router.route(url)
    except GodwitError as exc:
        return failed("route.data", exc.message, exc.hint or "")


def _cache_checks(router: Router, cache: Account, gateway: Account | None, auth: str | None,
                  ip_argv: Sequence[str], timeout: float, skip: frozenset[str]) -> list[Check]:
    network = router.network
    if "dns.cache" in skip:
        out, resolution = [_skipped("dns.cache")], None
    else:
        out, resolution = dns_checks(router, cache.host)
    out.append(bypass.cache_bypass(router, cache.host, cache.port))
    out.append(bypass.gateway_bypass(router, cache.host, gateway.host if gateway else None))
    out.append(bypass.privatelink_entries(router, cache.host))
    if network.data_plane == "private-endpoint" and any(c.status == "fail" for c in out if c.id.startswith("dns.")):
        out.append(failed("cache.tcp", "not tried: the private path is refused (see dns.*)", "fix DNS first"))
    else:
        route = _route(router, cache.url)
        if isinstance(route, Check):
            out.append(route)
        else:
            out += _unless_skipped(skip, ("cache.tcp", "cache.tls"), lambda: reach(
                "cache", route, ca_file=cache.ca_file, timeout=timeout, proxy_auth=auth, what="cache account"))
    if network.data_plane == "microsoft-peering":
        out += _unless_skipped(skip, ("route.expressroute",), lambda: [
            expressroute_route(network, resolution.addresses if resolution else (), ip_argv)])
        out.append(communities(network))
    return out


def _gateway_checks(router: Router, cache: Account | None, gateway: Account, auth: str | None,
                    timeout: float, skip: frozenset[str]) -> list[Check]:
    if cache is not None and gateway.host == cache.host:
        return [failed("gateway.route", f"[gateway] names the cache account's host {gateway.host}: its state would "
                       "take the data path", "give [gateway] the gateway account's own URL (gwsa…)")]
    route = router.route(gateway.url)
    if route.plane != "control" or route.pinned is not None:
        return [failed("gateway.route", f"the gateway account is routed as {route.describe()}",
                       "the gateway account must stay on the internet path: check [network] and [cache]")]
    out = [passed("gateway.route", route.describe())]
    return out + _unless_skipped(skip, ("gateway.tcp", "gateway.tls"), lambda: reach(
        "gateway", route, ca_file=gateway.ca_file, timeout=timeout, proxy_auth=auth, what="gateway account"))


def record(project: Project, report: NetworkReport) -> None:
    """Remember this run (time, verdict) for ``replicate status``; an event says what failed."""
    from godwit.state.network import NetworkRecords

    failed_ids = [c.id for c in report.checks if c.status == "fail"]
    with project.db.unit() as u:
        NetworkRecords(u.connection).record_check(ok=report.ok, data_plane=report.data_plane, failed=failed_ids)
        if failed_ids:
            u.events.add("warning", f"network check failed: {', '.join(failed_ids)}")
        else:
            u.events.add("info", f"network check passed ({report.data_plane})")
