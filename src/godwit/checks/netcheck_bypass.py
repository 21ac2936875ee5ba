"""The bypass list judged against the article: which host goes direct, and which must not.

Every answer comes from the Router's own matcher (:class:`godwit.network.bypass.BypassList`), so
what is checked is what the transport will do.
"""

from __future__ import annotations

from godwit.checks.netcheck_dns import privatelink_name
from godwit.checks.netcheck_model import Check, failed, passed, warned
from godwit.network.bypass import BypassList
from godwit.network.route import Router

#: The article's "not accessible over ExpressRoute, require Internet connectivity" list, each
#: pattern with a host it covers (what the check asks the bypass list about).
INTERNET_ONLY: tuple[tuple[str, str], ...] = (
    ("*.portal.azure.com", "ms.portal.azure.com"), ("*.windows.net", "login.windows.net"),
    ("*.msftauth.net", "aadcdn.msftauth.net"), ("*.msauth.net", "aadcdn.msauth.net"),
    ("*.microsoft.com", "graph.microsoft.com"), ("*.live.com", "login.live.com"),
    ("*.office.com", "www.office.com"), ("*.microsoftonline.com", "login.microsoftonline.com"),
    ("*.microsoftonline-p.com", "secure.aadcdn.microsoftonline-p.com"),
    ("*.microsoftazuread-sso.com", "autologon.microsoftazuread-sso.com"),
    ("management.azure.com", "management.azure.com"), ("*.services.visualstudio.com", "dc.services.visualstudio.com"),
    ("aka.ms", "aka.ms"), ("download.microsoft.com", "download.microsoft.com"),
)


def cache_bypass(router: Router, host: str, port: int) -> Check:
    mode, proxy = router.network.data_plane, router.network.proxy
    rule = router.bypass.match(host, port)
    exact = f'add "{host}" to [network] bypass'
    if proxy is None:
        return passed("bypass.cache", f"no proxy is set: {host} is reached directly")
    if rule is not None:
        return passed("bypass.cache", f"bypass entry {rule.text!r} sends {host} direct, not through {proxy}")
    if mode == "microsoft-peering":
        return failed("bypass.cache", f"no bypass entry covers {host}: replication would go through proxy {proxy} "
                      "over the internet, not over the circuit",
                      exact + ' (or the documented ".*.blob.core.windows.net")')
    if mode == "private-endpoint":
        return warned("bypass.cache", f"no bypass entry covers {host}; godwit connects to its private endpoint "
                      "directly anyway, but other tools on this appliance would use the proxy",
                      exact + " (the exact name, as the article writes it)")
    return passed("bypass.cache", f"{host} goes through proxy {proxy} (data_plane = \"internet\")")


def gateway_bypass(router: Router, cache_host: str, gateway_host: str | None) -> Check:
    """In private-endpoint mode the gateway account must stay on the proxy; in microsoft-peering
    mode the blanket blob rule is the documented one."""
    mode, proxy = router.network.data_plane, router.network.proxy
    named = gateway_host is not None
    _, _, rest = cache_host.partition(".")
    probe = gateway_host or (f"gwsa0godwit0probe.{rest}" if rest.startswith("blob.") else None)
    if probe is None:
        return passed("bypass.gateway", "no [gateway] account, and the cache URL is not ACCOUNT.blob.SUFFIX")
    who = f"the gateway account {gateway_host}" if named else "any other account, such as the gateway account (gwsa…)"
    if proxy is None:
        return passed("bypass.gateway", f"no proxy is set: {who} is reached directly")
    rule = router.bypass.match(probe, 443)
    if rule is None:
        return passed("bypass.gateway", f"{who} goes through proxy {proxy}")
    blanket = rule.kind in ("wildcard", "regex", "all") and router.bypass.match(cache_host, 443) is rule
    if mode == "private-endpoint":
        kind = "the blanket entry" if blanket else "the entry"
        return failed("bypass.gateway", f"{kind} {rule.text!r} also bypasses {who}: it has no private endpoint and "
                      "needs the internet path, through the proxy",
                      f'replace {rule.text!r} with the cache account\'s exact name "{cache_host}"')
    if mode == "microsoft-peering" and blanket:
        return passed("bypass.gateway", f"{rule.text!r} sends every blob account direct, {who} included: the "
                                        "documented rule for Microsoft peering")
    return passed("bypass.gateway", f"bypass entry {rule.text!r} sends {who} direct")


def privatelink_entries(router: Router, cache_host: str) -> Check:
    """An entry that names the privatelink FQDN but not the account's own: clients never use it."""
    pl = privatelink_name(cache_host)
    if pl is None:
        return passed("bypass.privatelink", "the cache URL is not ACCOUNT.blob.SUFFIX: nothing to compare")
    wrong = [e for e in router.bypass.entries
             if BypassList((e,)).bypasses(pl, 443) and not BypassList((e,)).bypasses(cache_host, 443)]
    if not wrong:
        return passed("bypass.privatelink", "no bypass entry names the privatelink FQDN instead of the account's")
    return warned("bypass.privatelink", f"bypass entr{'y' if len(wrong) == 1 else 'ies'} "
                  f"{', '.join(repr(e.text) for e in wrong)} name{'s' if len(wrong) == 1 else ''} {pl}; clients "
                  f"connect to {cache_host}, so {'it' if len(wrong) == 1 else 'they'} never match",
                  f'write the account\'s own name "{cache_host}" instead')


def internet_only(router: Router) -> Check:
    """The article's endpoints that are not reachable over ExpressRoute stay on the proxy."""
    proxy = router.network.proxy
    if proxy is None:
        return passed("bypass.internet-endpoints", "no proxy is set: the internet-only endpoints (Entra ID, "
                                                   "management.azure.com, ...) are reached directly")
    hits = [(pattern, host, rule.text) for pattern, host in INTERNET_ONLY
            if (rule := router.bypass.match(host, 443)) is not None]
    if not hits:
        return passed("bypass.internet-endpoints", f"the {len(INTERNET_ONLY)} internet-only endpoint patterns of the "
                                                   f"article go through proxy {proxy}")
    seen = "; ".join(f"{host} ({pattern}) by {rule!r}" for pattern, host, rule in hits)
    return warned("bypass.internet-endpoints", f"bypassed, though not reachable over ExpressRoute: {seen}",
                  "remove those entries (or narrow them) so these endpoints keep the internet path through the proxy")
