"""The cloud-side steps of a plan as Azure CLI commands (argument vectors, never strings).

A step holds commands whose arguments are plain values or :class:`Var` references to a value an
earlier command captured (``VAR=$(az … --output tsv)``); a :class:`Guard` makes a command run only
when a captured value says it is needed. The shell renderer quotes every plain value; tests run
the same vectors through the Azure CLI's own parser.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from godwit.checks.plan.inputs import MICROSOFT_PEERING, PlanInputs
from godwit.checks.plan.role import role_definition, role_name, scopes

GPV2 = "StorageV2"
#: Whoever holds only the custom role cannot read role definitions: creating the role is a run of its own.
CREATE_ROLE = "--create-role"


@dataclass(frozen=True)
class Var:
    name: str  # upper-case shell variable


Arg = str | Var


@dataclass(frozen=True)
class Guard:
    var: Var
    equals: bool  # True: run when var == value; False: when var != value
    value: str


@dataclass(frozen=True)
class Command:
    argv: tuple[Arg, ...]  # without the leading "az"
    capture: Var | None = None
    when: Guard | None = None


@dataclass(frozen=True)
class Step:
    title: str
    why: tuple[str, ...]
    commands: tuple[Command, ...] = ()
    #: A script argument that runs this step alone (and only this step): steps for another person.
    alone_with: str | None = None


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = field(default=())


def _sub(p: PlanInputs) -> tuple[str, ...]:
    return ("--subscription", p.subscription)


def _account(p: PlanInputs) -> tuple[str, ...]:
    return (*_sub(p), "--resource-group", p.resource_group, "--name", p.account)


def role_step(p: PlanInputs, *, bicep: bool = False) -> Step:
    role = Var("ROLE_ID")
    doc = json.dumps(role_definition(p, bicep=bicep), ensure_ascii=False, separators=(",", ":"))
    return Step(f"Custom role with the article's permissions: an administrator runs `bash FILE {CREATE_ROLE}` once", (
        "Least privilege: only the operations the steps below need, on the resource groups they touch.",
        "Assign it to whoever runs the plan, on each scope: az role assignment create --assignee WHO "
        f"--role {shlex.quote(role_name(p))} " + " ".join(f"--scope {shlex.quote(s)}" for s in scopes(p)),
    ), (
        Command(("role", "definition", "list", *_sub(p), "--name", role_name(p), "--query", "[0].id",
                 "--output", "tsv"), capture=role),
        Command(("role", "definition", "create", *_sub(p), "--role-definition", doc), when=Guard(role, True, "")),
    ), alone_with=CREATE_ROLE)


def account_steps(p: PlanInputs) -> tuple[Step, ...]:
    kind, public = Var("CACHE_KIND"), Var("CACHE_PUBLIC")
    steps = []
    if p.mode == "private-endpoint":
        steps.append(Step("Upgrade the cache account to general-purpose v2, if it is not", (
            "Private endpoints exist only on general-purpose v2 accounts. The upgrade is one-way and needs",
            "Microsoft.Storage/storageAccounts/write (the account owner): the custom role leaves it out.",
        ), (
            Command(("storage", "account", "show", *_account(p), "--query", "kind", "--output", "tsv"),
                    capture=kind),
            Command(("storage", "account", "update", *_account(p), "--set", f"kind={GPV2}", "--access-tier", "Hot"),
                    when=Guard(kind, False, GPV2)),
        )))
    steps.append(Step("Keep the cache account's public endpoint enabled", (
        "The mover reads the cache over the account's public endpoint: never disable it.",
        "Enabled keeps any firewall rules the account has. Run only if someone disabled it (account owner).",
    ), (
        Command(("storage", "account", "show", *_account(p), "--query", "publicNetworkAccess", "--output", "tsv"),
                capture=public),
        Command(("storage", "account", "update", *_account(p), "--public-network-access", "Enabled"),
                when=Guard(public, True, "Disabled")),
    )))
    return tuple(steps)


def endpoint_steps(p: PlanInputs) -> tuple[Step, ...]:
    e = p.endpoint
    assert e is not None
    subnet_id = (f"{p.rg_id(e.network_resource_group)}/providers/Microsoft.Network/virtualNetworks/{e.vnet}"
                 f"/subnets/{e.subnet}")
    vnet_id = subnet_id.rsplit("/subnets/", 1)[0]
    zone_rg = (*_sub(p), "--resource-group", p.resource_group)
    steps = [
        Step(f"Private endpoint on the cache account's blob sub-resource, in {e.vnet}/{e.subnet}", (
            "The virtual network must hold the ExpressRoute gateway or be peered with the one that does.",
            "If you do not own the account, its owner approves the connection (Networking > Private endpoints).",
        ), (
            Command(("network", "private-endpoint", "create", *zone_rg, "--name", e.endpoint_name,
                     "--location", p.location, "--subnet", subnet_id,
                     "--private-connection-resource-id", p.account_id, "--group-id", "blob",
                     "--connection-name", e.endpoint_name)),
        )),
        Step(f"Private DNS zone {p.zone}", (
            "Skip this step if your hub already has the zone: link that zone instead (next step).",
        ), (
            Command(("network", "private-dns", "zone", "create", *zone_rg, "--name", p.zone)),
        )),
        Step(f"Link the zone to {e.vnet}", (
            "Resolvers in (or forwarding to) this virtual network then answer the privatelink name.",
        ), (
            Command(("network", "private-dns", "link", "vnet", "create", *zone_rg, "--zone-name", p.zone,
                     "--name", f"{e.vnet}-link", "--virtual-network", vnet_id, "--registration-enabled",
                     "false")),
        )),
    ]
    zone_id = f"{p.rg_id(p.resource_group)}/providers/Microsoft.Network/privateDnsZones/{p.zone}"
    if e.dns == "zone-group":
        steps.append(Step(f"DNS zone group: Azure keeps the A record {p.account} in the zone", (
            "The record follows the endpoint's address and goes when the endpoint goes.",
        ), (
            Command(("network", "private-endpoint", "dns-zone-group", "create", *zone_rg,
                     "--endpoint-name", e.endpoint_name, "--name", "default", "--private-dns-zone", zone_id,
                     "--zone-name", "blob")),
        )))
    else:
        ip = Var("PE_IP")
        steps.append(Step(f"A record {p.account} in the zone, to the endpoint's private address", (
            "Without a zone group the record is yours to keep: update it if the endpoint is recreated.",
        ), (
            Command(("network", "private-endpoint", "show", *zone_rg, "--name", e.endpoint_name,
                     "--query", "customDnsConfigs[0].ipAddresses[0]", "--output", "tsv"), capture=ip),
            Command(("network", "private-dns", "record-set", "a", "add-record", *zone_rg, "--zone-name", p.zone,
                     "--record-set-name", p.account, "--ipv4-address", ip)),
        )))
    return tuple(steps)


def peering_steps(p: PlanInputs) -> tuple[Step, ...]:
    m = p.peering
    assert m is not None
    rg = (*_sub(p), "--resource-group", p.resource_group)
    filter_id = f"{p.rg_id(p.resource_group)}/providers/Microsoft.Network/routeFilters/{m.route_filter}"
    return (
        Step(f"Route filter {m.route_filter}", (
            "A Microsoft peering without a route filter receives no routes at all.",
        ), (
            Command(("network", "route-filter", "create", *rg, "--name", m.route_filter, "--location", p.location)),
        )),
        Step("Allow the communities replication needs", tuple(f"{c}: {what}" for c, what in m.why), (
            Command(("network", "route-filter", "rule", "create", *rg, "--filter-name", m.route_filter,
                     "--name", "allow-godwit", "--access", "Allow", "--communities", *m.communities)),
        )),
        Step(f"Attach the filter to the Microsoft peering of circuit {m.circuit}", (
            "Routes of the allowed communities are then advertised to your edge over the circuit.",
        ), (
            Command(("network", "express-route", "peering", "update", *_sub(p), "--resource-group",
                     m.circuit_resource_group, "--circuit-name", m.circuit, "--name", MICROSOFT_PEERING,
                     "--route-filter", filter_id)),
        )),
    )


def notes(p: PlanInputs) -> tuple[str, ...]:
    out: list[str] = []
    if p.gateway_account == p.account:
        out.append(f"WARNING: [gateway] names the cache account {p.account} itself: its state traffic would take the "
                   "data path too. Give the gateway an account of its own (the article's gwsa… account).")
    elif p.gateway_account:
        out.append(f"The gateway account {p.gateway_account} gets NO private endpoint and NO route change: it holds "
                   "replication state and needs the internet path (through the proxy, if any).")
    if p.mode == "private-endpoint":
        e = p.endpoint
        assert e is not None
        forwarder = e.forwarder_ip or "<your DNS forwarder or resolver inbound endpoint in Azure>"
        out += [
            f"On-premises DNS: add a conditional forwarder for blob.{p.blob_suffix} to {forwarder}, which asks "
            "Azure DNS (168.63.129.16) from inside the linked virtual network; "
            f"{p.blob_host} then resolves through {p.account}.{p.zone} to the endpoint's private address. "
            f"For example dnsmasq: server=/blob.{p.blob_suffix}/{forwarder}; Windows DNS: "
            f"Add-DnsServerConditionalForwarderZone -Name blob.{p.blob_suffix} -MasterServers {forwarder}.",
            "A hosts-file entry for the account works for testing only.",
            f"Proxy bypass: {p.blob_host} only. Never bypass *.blob.{p.blob_suffix}: "
            "the gateway account needs the internet path.",
        ]
    else:
        m = p.peering
        assert m is not None
        out.append(f"Proxy bypass: .*.blob.{p.blob_suffix} (the article's rule for Microsoft peering), so that "
                   "the cache account's traffic leaves by the circuit.")
        if not any("Entra" in what for _, what in m.why):
            out.append(f"The {m.source.cloud} cloud publishes no Microsoft Entra ID community: sign-in stays on "
                       "the internet path.")
    out.append("The cache account's public endpoint stays enabled: the mover uses it.")
    out.append("Then run `godwit network check` on the appliance to see every request on its planned path.")
    return tuple(out)


def build_plan(p: PlanInputs, *, bicep: bool = False) -> Plan:
    body = endpoint_steps(p) if p.mode == "private-endpoint" else peering_steps(p)
    return Plan(p, (role_step(p, bicep=bicep), *account_steps(p), *body), notes(p))
