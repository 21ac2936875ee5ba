"""What kind of address an answer is, and whether a private endpoint's answer is acceptable.

A private endpoint's address lies in RFC 1918 space (10/8, 172.16/12, 192.168/16), RFC 6598
shared space (100.64/10) or, for IPv6, the unique local range fc00::/7; when ``[network]
private_cidrs`` is set it must also lie inside one of those subnets. :func:`answer_problems`
says, per address, why it fails.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from godwit.config.network import IPAddress, IPNetwork, is_private

__all__ = ["IPAddress", "IPNetwork", "answer_problems", "describe", "in_cidrs", "is_private", "parse_address"]

_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_RFC6598 = ipaddress.ip_network("100.64.0.0/10")
_ULA = ipaddress.ip_network("fc00::/7")


def parse_address(host: str) -> IPAddress | None:
    """The IP address that ``host`` spells (brackets allowed), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def describe(address: IPAddress) -> str:
    """A few words on what ``address`` is, for messages: "private (RFC 1918)", "public", ..."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        if any(address in n for n in _RFC1918):
            return "private (RFC 1918)"
        if address in _RFC6598:
            return "shared address space (RFC 6598)"
    elif address in _ULA:
        return "unique local (fc00::/7)"
    for flag, words in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                        ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                        ("is_reserved", "reserved")):
        if getattr(address, flag):
            return words
    return "public"


def in_cidrs(address: IPAddress, cidrs: Iterable[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in cidrs)


def answer_problems(addresses: Sequence[IPAddress], cidrs: Sequence[IPNetwork]) -> list[str]:
    """Why each failing address is unacceptable for a private endpoint; empty when all pass.

    No address at all is a problem too: there is nothing private to connect to.
    """
    if not addresses:
        return ["no address"]
    out: list[str] = []
    for a in addresses:
        if not is_private(a):
            out.append(f"{a} is {describe(a)}, not private")
        elif cidrs and not in_cidrs(a, cidrs):
            out.append(f"{a} is outside private_cidrs ({', '.join(map(str, cidrs))})")
    return out
