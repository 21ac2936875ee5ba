"""The network plane: which path every outbound connection takes, and the private path enforced.

* :mod:`~godwit.network.bypass` — the bypass matcher (direct or via the proxy, per host);
* :mod:`~godwit.network.addresses` — private (RFC 1918 / RFC 6598) and CIDR checks;
* :mod:`~godwit.network.resolve` — DNS with the CNAME chain, the hosts file flagged;
* :mod:`~godwit.network.route` — :class:`Router`, the one routing decision;
* :mod:`~godwit.network.pinned` — connections pinned to a checked address, TLS to the name;
* :mod:`~godwit.network.tlsprobe` — which certificate was presented, and by whom.

``godwit.azure.transport`` builds every outbound HTTP transport on a :class:`Router`.
"""

from godwit.network.bypass import BypassList, normalize_host
from godwit.network.resolve import Resolution, Resolver
from godwit.network.route import (
    AnswerChange,
    Plane,
    Route,
    Router,
    data_host_of,
    private_endpoint_fix,
    router_for,
)

__all__ = ["AnswerChange", "BypassList", "Plane", "Resolution", "Resolver", "Route", "Router", "data_host_of",
           "normalize_host", "private_endpoint_fix", "router_for"]
