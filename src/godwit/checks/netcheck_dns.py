"""The cache account's name as godwit resolves it: the privatelink CNAME chain, private answers.

The answer is asked of the Router's own resolver and judged by the Router's own check, so that
``network check`` passes exactly when the private path would be allowed, and fails with the
same fix (:func:`godwit.network.route.private_endpoint_fix`).
"""

from __future__ import annotations

from godwit.checks.netcheck_model import Check, failed, passed, warned
from godwit.config.network import is_private
from godwit.errors import NetworkPolicyError
from godwit.network.addresses import describe, parse_address
from godwit.network.resolve import Resolution
from godwit.network.route import Router, private_endpoint_fix


def privatelink_name(host: str) -> str | None:
    """``acct.privatelink.blob.core.windows.net`` for ``acct.blob.core.windows.net`` (any cloud)."""
    account, _, rest = host.partition(".")
    if not rest.startswith("blob.") or ".privatelink." in f".{rest}":
        return None
    return f"{account}.privatelink.{rest}"


def dns_checks(router: Router, host: str) -> tuple[list[Check], Resolution | None]:
    """``dns.cache`` (the answer), ``dns.privatelink`` and ``dns.private`` (private-endpoint mode),
    ``dns.hosts-file``; the resolution, for the route check, or None when there is none."""
    mode = router.network.data_plane
    if parse_address(host) is not None:
        return [warned("dns.cache", f"the cache account URL names the address {host}: there is no name to resolve",
                       "use the account's own name, https://ACCOUNT.blob.core.windows.net, so that DNS decides "
                       "and TLS checks the account's certificate")], None
    try:
        resolution = router.resolver(host)
    except NetworkPolicyError as exc:
        return [failed("dns.cache", exc.message, exc.hint or "fix DNS for the cache account")], None
    checks = [passed("dns.cache", resolution.describe())]
    if mode == "private-endpoint":
        checks += _private_endpoint(router, host, resolution)
    elif mode == "microsoft-peering":
        private = [a for a in resolution.addresses if is_private(a)]
        if private:
            checks.append(warned("dns.public", f"{host} resolves to {', '.join(map(str, private))} "
                                 f"({describe(private[0])}): a private endpoint answers, so replication would take "
                                 "private peering, not Microsoft peering",
                                 'set [network] data_plane = "private-endpoint", or remove the private DNS answer '
                                 "for this appliance"))
        else:
            checks.append(passed("dns.public", f"{host} resolves to public addresses, as Microsoft peering needs"))
    if resolution.from_hosts:
        checks.append(warned("dns.hosts-file", f"the answer for {host} comes from {resolution.source}",
                             "a hosts entry is for testing only: create the private DNS zone's record and an "
                             "on-premises conditional forwarder, then remove the entry"))
    else:
        checks.append(passed("dns.hosts-file", f"the answer for {host} comes from {resolution.source}, "
                                               "not a hosts file"))
    return checks, resolution


def _private_endpoint(router: Router, host: str, resolution: Resolution) -> list[Check]:
    out: list[Check] = []
    expected = privatelink_name(host)
    if expected is not None and not resolution.from_hosts:
        if expected in resolution.chain[1:]:
            out.append(passed("dns.privatelink", f"{host} is a CNAME of {expected}"))
        else:
            out.append(failed("dns.privatelink", f"{host} does not resolve through {expected}: "
                              f"{resolution.describe()}", private_endpoint_fix(resolution, ["no privatelink CNAME"])))
    problems = router.check(resolution, router.network.private_cidrs)
    if problems:
        out.append(failed("dns.private", f"{resolution.describe()}: {'; '.join(problems)}",
                          private_endpoint_fix(resolution, problems)))
    else:
        cidrs = router.network.private_cidrs
        inside = f", inside {', '.join(map(str, cidrs))}" if cidrs else ""
        out.append(passed("dns.private", f"every address of {host} is private{inside}: "
                                         f"{', '.join(map(str, resolution.addresses))}"))
    return out
