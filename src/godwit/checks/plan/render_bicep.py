"""A plan as a Bicep file for the plan's resource group (``az deployment group create -f FILE``).

Only what Bicep can declare safely is declared: the private endpoint, the zone, its link and the
record (or zone group); or the route filter. Steps that would rewrite a resource godwit does not
own (the storage account's kind, a circuit's peering) stay Azure CLI commands, written as comments.
Every value is a Bicep string literal made by :func:`literal`.
"""

from __future__ import annotations

import shlex

from godwit.checks.plan.inputs import PlanInputs
from godwit.checks.plan.render_az import comment, header
from godwit.checks.plan.steps import Command, Plan, Step, Var, account_steps, peering_steps

NETWORK_API = "2023-11-01"
DNS_API = "2020-06-01"
STORAGE_API = "2023-01-01"

_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "$": "\\$"}


def literal(value: str) -> str:
    """A single-quoted Bicep string: quotes, backslashes, ``${`` and control characters escaped."""
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):X}}}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def _slashed(text: str) -> str:
    return "// " + " ".join(text.split())


def one_line(cmd: Command) -> str:
    words = ["az", *(f'"${a.name}"' if isinstance(a, Var) else shlex.quote(a) for a in cmd.argv)]
    return " ".join(words)


def _commented_steps(steps: tuple[Step, ...], when: str) -> list[str]:
    out: list[str] = []
    for step in steps:
        out.append(_slashed(f"{when}: {step.title}"))
        out += [_slashed(line) for line in step.why]
        for c in step.commands:
            line = one_line(c)
            if c.capture is not None:
                line = f"{c.capture.name}=$({line})"
            if c.when is not None:
                test = "=" if c.when.equals else "!="
                line = f'if [ "${c.when.var.name}" {test} {shlex.quote(c.when.value)} ]; then {line}; fi'
            out.append(_slashed(line))
        out.append("")
    return out


def _endpoint(p: PlanInputs) -> list[str]:
    e = p.endpoint
    assert e is not None
    lines = f"""resource cache 'Microsoft.Storage/storageAccounts@{STORAGE_API}' existing = {{
  name: {literal(p.account)}
}}

resource vnet 'Microsoft.Network/virtualNetworks@{NETWORK_API}' existing = {{
  name: {literal(e.vnet)}
  scope: resourceGroup({literal(e.network_resource_group)})
}}

resource subnet 'Microsoft.Network/virtualNetworks/subnets@{NETWORK_API}' existing = {{
  parent: vnet
  name: {literal(e.subnet)}
}}

// The private endpoint on the cache account's blob sub-resource. The virtual network must hold the
// ExpressRoute gateway or be peered with the one that does.
resource endpoint 'Microsoft.Network/privateEndpoints@{NETWORK_API}' = {{
  name: {literal(e.endpoint_name)}
  location: location
  properties: {{
    subnet: {{
      id: subnet.id
    }}
    privateLinkServiceConnections: [
      {{
        name: {literal(e.endpoint_name)}
        properties: {{
          privateLinkServiceId: cache.id
          groupIds: [
            'blob'
          ]
        }}
      }}
    ]
  }}
}}

resource zone 'Microsoft.Network/privateDnsZones@{DNS_API}' = {{
  name: {literal(p.zone)}
  location: 'global'
}}

resource link 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@{DNS_API}' = {{
  parent: zone
  name: {literal(f"{e.vnet}-link")}
  location: 'global'
  properties: {{
    registrationEnabled: false
    virtualNetwork: {{
      id: vnet.id
    }}
  }}
}}
"""
    if e.dns == "zone-group":
        lines += f"""
// Azure keeps the account's A record in the zone while the endpoint exists.
resource zoneGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@{NETWORK_API}' = {{
  parent: endpoint
  name: 'default'
  properties: {{
    privateDnsZoneConfigs: [
      {{
        name: 'blob'
        properties: {{
          privateDnsZoneId: zone.id
        }}
      }}
    ]
  }}
}}
"""
    else:
        lines += f"""
// The account's A record, to the endpoint's private address (yours to keep up to date).
resource record 'Microsoft.Network/privateDnsZones/A@{DNS_API}' = {{
  parent: zone
  name: {literal(p.account)}
  properties: {{
    ttl: 10
    aRecords: [
      {{
        ipv4Address: endpoint.properties.customDnsConfigs[0].ipAddresses[0]
      }}
    ]
  }}
}}
"""
    lines += "\noutput privateEndpointId string = endpoint.id\n"
    return lines.splitlines()


def _peering(p: PlanInputs) -> list[str]:
    m = p.peering
    assert m is not None
    communities = "\n".join(f"            {literal(c)} // {' '.join(what.split())}" for c, what in m.why)
    return f"""resource filter 'Microsoft.Network/routeFilters@{NETWORK_API}' = {{
  name: {literal(m.route_filter)}
  location: location
  properties: {{
    rules: [
      {{
        name: 'allow-godwit'
        properties: {{
          access: 'Allow'
          routeFilterRuleType: 'Community'
          communities: [
{communities}
          ]
        }}
      }}
    ]
  }}
}}

output routeFilterId string = filter.id
""".splitlines()


def render_bicep(plan: Plan) -> str:
    p = plan.inputs
    how = (f"Review it, then deploy it: az deployment group create --subscription {p.subscription} "
           f"--resource-group {shlex.quote(p.resource_group)} --template-file FILE. "
           "The custom role for whoever deploys it: godwit network plan --format role.")
    out = [_slashed(line[2:]) for line in header(plan, how)]
    out.append("")
    out += _commented_steps(account_steps(p), "Before deploying")
    out += ["targetScope = 'resourceGroup'", "", "@description('Region of the new resources')",
            f"param location string = {literal(p.location)}", ""]
    out += _endpoint(p) if p.mode == "private-endpoint" else _peering(p)
    if p.mode == "microsoft-peering":
        out.append("")
        # Declaring the peering in Bicep would rewrite all of it (addresses, VLAN, ASN): az updates one field.
        out += _commented_steps(peering_steps(p)[-1:], "After deploying")[:-1]
    out += ["", _slashed("Notes")]
    out += [_slashed(f"- {note}") for note in plan.notes]
    return "\n".join(out) + "\n"


__all__ = ["comment", "literal", "render_bicep"]
