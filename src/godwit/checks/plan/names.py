"""Azure's naming rules for the values a plan puts into commands and templates.

Every value a person supplies is checked here before it reaches a shell script, a Bicep file or a
role definition; the renderers still quote and escape (defence in depth), but a value that breaks
Azure's rules is refused with the rule, so hostile input never gets as far as the output.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from godwit.errors import UsageError


@dataclass(frozen=True)
class NameRule:
    what: str
    pattern: re.Pattern[str]
    rule: str

    def check(self, option: str, value: str) -> str:
        # fullmatch: `$` alone would accept a trailing newline.
        if not isinstance(value, str) or not self.pattern.fullmatch(value):
            raise UsageError(f"{option} {value!r} is not a valid {self.what}", hint=self.rule)
        return value


_ALNUM = "A-Za-z0-9"
# Networking resources (virtual networks, subnets, private endpoints, route filters, circuits, links):
# letters, digits, underscores, periods and hyphens; begin with a letter or digit; end with a
# letter, digit or underscore.
_NETWORK_RULE = ("{n}-{m} characters: letters, digits, '_', '.', '-'; starting with a letter or digit "
                 "and ending with a letter, digit or '_'")


def _network(what: str, low: int, high: int) -> NameRule:
    body = f"[{_ALNUM}_.-]{{{low - 2},{high - 2}}}" if low >= 2 else f"(?:[{_ALNUM}_.-]{{0,{high - 2}}}[{_ALNUM}_])?"
    pattern = (f"[{_ALNUM}]{body}[{_ALNUM}_]" if low >= 2 else f"[{_ALNUM}]{body}")
    return NameRule(what, re.compile(pattern, re.ASCII), _NETWORK_RULE.format(n=low, m=high))


SUBSCRIPTION = NameRule("subscription id", re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}"),
                        "a subscription id is a GUID: az account show --query id --output tsv")
# Resource groups: 1-90 letters (Unicode too), digits, '_', '(', ')', '-', '.'; not ending in '.'.
RESOURCE_GROUP = NameRule("resource group name", re.compile(r"[\w().-]{0,89}[\w()-]"),
                          "1-90 characters: letters, digits, '_', '(', ')', '-', '.'; not ending in '.'")
VNET = _network("virtual network name", 2, 64)
SUBNET = _network("subnet name", 1, 80)
ENDPOINT = _network("private endpoint name", 2, 64)
ROUTE_FILTER = _network("route filter name", 1, 80)
CIRCUIT = _network("ExpressRoute circuit name", 1, 80)
STORAGE_ACCOUNT = NameRule("storage account name", re.compile(r"[a-z0-9]{3,24}", re.ASCII),
                           "3-24 lowercase letters and digits")
REGION = NameRule("Azure region name", re.compile(r"[a-z][a-z0-9]{2,39}", re.ASCII),
                  "an Azure region name such as westeurope: az account list-locations --query [].name")
_COMMUNITY = re.compile(r"([0-9]{1,5}):([0-9]{1,5})", re.ASCII)


def region(option: str, value: str) -> str:
    """A region as Azure names it; "West Europe" is accepted and becomes westeurope."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9 ]{3,48}", value, re.ASCII):
        value = value.replace(" ", "").lower()
    return REGION.check(option, value)


def community(option: str, value: str) -> str:
    """A standard BGP community, ASN:VALUE, each a 16-bit number."""
    m = _COMMUNITY.fullmatch(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) > 65535 or int(m.group(2)) > 65535:
        raise UsageError(f"{option} {value!r} is not a BGP community",
                         hint="write ASN:VALUE with two numbers up to 65535, such as 12076:5070")
    return f"{int(m.group(1))}:{int(m.group(2))}"


def ipv4(option: str, value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise UsageError(f"{option} {value!r} is not an IPv4 address",
                         hint="the address of your DNS forwarder or resolver inbound endpoint in Azure") from None
