"""Microsoft peering: the kernel's route to the cache account, and the route filter's communities.

The route is asked of the kernel itself (``ip -j route get ADDRESS``, which sends nothing): it
must leave by ``[network] expressroute_interface`` or ``expressroute_next_hop``, not by the
internet default route. The communities come from godwit's shipped region table
(:mod:`godwit.checks.plan.regions`, the same one ``network plan`` uses).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from godwit.checks.netcheck_model import Check, failed, passed, warned
from godwit.checks.plan import regions
from godwit.config.network import IPAddress, NetworkConfig
from godwit.errors import GodwitError


def _ip(argv: Sequence[str], *args: str) -> list[dict[str, Any]]:
    proc = subprocess.run([*argv, "-j", *args], capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise OSError(proc.stderr.strip() or f"{' '.join(argv)} exited with {proc.returncode}")
    data = json.loads(proc.stdout or "[]")
    return data if isinstance(data, list) else []


def _hop(route: dict[str, Any]) -> str:
    via = f"via {route['gateway']} " if route.get("gateway") else ""
    return f"{via}dev {route.get('dev', '?')}"


def expressroute_route(network: NetworkConfig, addresses: Sequence[IPAddress], ip_argv: Sequence[str]) -> Check:
    iface, hop = network.expressroute_interface, network.expressroute_next_hop
    if iface is None and hop is None:
        return warned("route.expressroute", "neither expressroute_interface nor expressroute_next_hop is set: "
                      "the route to the cache account cannot be compared with the circuit's",
                      "set [network] expressroute_interface (or expressroute_next_hop) to the edge toward the circuit")
    if not addresses:
        return warned("route.expressroute", "the cache account has no address to ask the kernel about",
                      "fix DNS for the cache account first (see dns.cache)")
    want = " and ".join(w for w in (f"dev {iface}" if iface else "", f"via {hop}" if hop else "") if w)
    try:
        default = _ip(ip_argv, "route", "show", "default")
        wrong: list[str] = []
        seen: list[str] = []
        for address in addresses:
            got = (_ip(ip_argv, "route", "get", str(address)) or [{}])[0]
            ok = (iface is None or got.get("dev") == iface) and (hop is None or got.get("gateway") == str(hop))
            (seen if ok else wrong).append(f"{address} {_hop(got)}")
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return warned("route.expressroute", f"could not ask the kernel for the route (`ip route get`): {exc}",
                      "install iproute2, and run the check on the appliance itself")
    if wrong:
        by_default = any(d.get("dev") and f"dev {d['dev']}" in w for d in default for w in wrong)
        tail = " — the internet default route" if by_default else ""
        return failed("route.expressroute", f"the kernel routes {'; '.join(wrong)}{tail}, not {want}",
                      "advertise the Microsoft peering prefixes to this appliance (the route filter's communities "
                      "reach your edge over BGP) or add a route for them toward the circuit; check "
                      "expressroute_interface / expressroute_next_hop")
    return passed("route.expressroute", f"the kernel routes {'; '.join(seen)}: {want}, the circuit")


def communities(network: NetworkConfig) -> Check:
    if not network.source_region or not network.target_region:
        return warned("route.communities", "source_region and target_region are not both set: the communities "
                      "the route filter needs cannot be named",
                      "set [network] source_region and target_region (Azure region names such as westeurope)")
    try:
        src = regions.lookup("[network] source_region", network.source_region)
        dst = regions.lookup("[network] target_region", network.target_region)
    except GodwitError as exc:
        return failed("route.communities", exc.message, exc.hint or "use an Azure region name")
    need = [(src.community, f"regional community of {src.name}"), (dst.community, f"regional community of {dst.name}")]
    entra = regions.cloud(src.cloud).entra_id
    if entra:
        need.append((entra, "Azure Active Directory (Microsoft Entra ID)"))
    source = regions.source().line()
    have = set(network.route_filter_communities)
    if not have:
        return warned("route.communities", "[network] route_filter_communities is empty: what the circuit's route "
                      f"filter carries is unknown; it needs {', '.join(c for c, _ in need)}",
                      "list the filter's communities there (az network route-filter rule show); "
                      f"`godwit network plan --mode microsoft-peering` makes the filter. Table: {source}")
    missing = [(c, why) for c, why in dict(need).items() if c not in have]
    if missing:
        return failed("route.communities", "the route filter lacks " + ", ".join(f"{c} ({why})" for c, why in missing),
                      f"allow {', '.join(c for c, _ in missing)} in the route filter (`godwit network plan --mode "
                      f"microsoft-peering` writes the command), then list them in route_filter_communities. "
                      f"Table: {source}")
    return passed("route.communities", "the route filter carries " + ", ".join(f"{c} ({why})" for c, why in need))
