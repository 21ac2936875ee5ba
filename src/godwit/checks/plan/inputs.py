"""What a network plan is made from: the project's configuration plus the options a plan needs.

:func:`resolve` validates every value (Azure's naming rules, :mod:`.names`) and fills the defaults,
so that the renderers only ever see checked values. Where a value may come from godwit.toml or an
option, the option wins and the plan says where each came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from godwit.azure.settings import parse_account_url
from godwit.checks.plan import names
from godwit.checks.plan.regions import Cloud, Region, cloud, cloud_of_suffix, lookup
from godwit.errors import ConfigError, UsageError

MODES = ("private-endpoint", "microsoft-peering")
DNS_CHOICES = ("zone-group", "a-record")
MICROSOFT_PEERING = "MicrosoftPeering"  # the peering's fixed name on every circuit


@dataclass(frozen=True)
class ProjectView:
    """The parts of godwit.toml a plan reads (the account URLs as written, validated here)."""

    cache_account_url: str | None = None
    gateway_account_url: str | None = None
    #: from ``[network]`` when the configuration has one: data_plane, source_region, target_region
    network: dict[str, Any] = field(default_factory=dict)
    #: ``[network] route_filter_communities``: what the filter must carry (`network check` compares)
    route_filter_communities: tuple[str, ...] = ()


def project_view(config: Any) -> ProjectView:
    """Read a :class:`godwit.config.model.Config` (the ``[network]`` table is optional: read when present)."""
    cache_url = config.cache.options.get("account_url") if config.cache.kind == "azure" else None
    gateway = config.gateway or {}
    network: dict[str, Any] = {}
    section = getattr(config, "network", None)
    for key in ("data_plane", "source_region", "target_region"):
        value = section.get(key) if isinstance(section, dict) else getattr(section, key, None)
        if isinstance(value, str) and value:
            network[key] = value
    listed = (section.get("route_filter_communities") if isinstance(section, dict)
              else getattr(section, "route_filter_communities", None))
    communities = tuple(c for c in listed or () if isinstance(c, str))
    return ProjectView(cache_url if isinstance(cache_url, str) else None,
                       gateway.get("account_url") if isinstance(gateway.get("account_url"), str) else None,
                       network, communities)


@dataclass(frozen=True)
class PlanOptions:
    """The command line, as typed (unchecked)."""

    mode: str | None = None
    subscription: str | None = None
    resource_group: str | None = None
    location: str | None = None
    account: str | None = None
    gateway_account: str | None = None
    vnet: str | None = None
    subnet: str | None = None
    network_resource_group: str | None = None
    endpoint_name: str | None = None
    dns: str = "zone-group"
    forwarder_ip: str | None = None
    circuit: str | None = None
    circuit_resource_group: str | None = None
    route_filter: str | None = None
    source_region: str | None = None
    target_region: str | None = None
    communities: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndpointInputs:
    vnet: str
    subnet: str
    network_resource_group: str
    endpoint_name: str
    dns: str
    forwarder_ip: str | None


@dataclass(frozen=True)
class PeeringInputs:
    circuit: str
    circuit_resource_group: str
    route_filter: str
    source: Region
    target: Region
    communities: tuple[str, ...]  # in the filter's order, no repeats
    why: tuple[tuple[str, str], ...]  # (community, what it carries)


@dataclass(frozen=True)
class PlanInputs:
    mode: str
    subscription: str
    resource_group: str
    location: str
    account: str
    blob_suffix: str  # core.windows.net
    gateway_account: str | None
    endpoint: EndpointInputs | None
    peering: PeeringInputs | None
    origins: tuple[str, ...]  # where values came from, for the plan's header

    @property
    def blob_host(self) -> str:
        return f"{self.account}.blob.{self.blob_suffix}"

    @property
    def zone(self) -> str:
        return f"privatelink.blob.{self.blob_suffix}"

    def rg_id(self, group: str) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{group}"

    @property
    def account_id(self) -> str:
        return f"{self.rg_id(self.resource_group)}/providers/Microsoft.Storage/storageAccounts/{self.account}"


def _required(value: str | None, option: str, why: str) -> str:
    if not value:
        raise UsageError(f"{option} is required {why}", hint=f"pass {option}")
    return value


def _default(value: str | None, default: str) -> str:
    # An empty option is a value to check (and refuse), not a request for the default.
    return default if value is None else value


def _account_from_url(url: str, section: str) -> tuple[str, str | None]:
    """(account, blob suffix or None for an emulator address)."""
    try:
        normalised, account = parse_account_url(url, section)
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None
    host = normalised.split("://", 1)[1].split("/", 1)[0].split(":", 1)[0]
    if host.startswith(f"{account}.blob."):
        return account, host[len(f"{account}.blob."):]
    return account, None


def resolve(opts: PlanOptions, project: ProjectView) -> PlanInputs:
    origins: list[str] = []
    net = project.network
    mode = opts.mode
    if mode is None and net.get("data_plane") in MODES:
        mode = net["data_plane"]
        origins.append(f"mode {mode} from [network] data_plane")
    if mode not in MODES:
        raise UsageError("--mode is required" if mode is None else f"--mode {mode!r} is not a plan",
                         hint="use --mode private-endpoint or --mode microsoft-peering")
    subscription = names.SUBSCRIPTION.check("--subscription", _required(opts.subscription, "--subscription",
                                                                       "(the cache account's subscription id)"))
    rg = names.RESOURCE_GROUP.check("--resource-group", _required(
        opts.resource_group, "--resource-group", "(the cache account's resource group; the plan creates its "
                                                  "resources there)"))

    # The cache account: an option wins over [cache] account_url.
    suffix: str | None = None
    if opts.account is not None:
        account = names.STORAGE_ACCOUNT.check("--account", opts.account)
        origins.append(f"cache account {account} from --account")
    elif project.cache_account_url:
        account, suffix = _account_from_url(project.cache_account_url, "cache")
        if suffix is None:
            raise UsageError(f"[cache] account_url {project.cache_account_url!r} is an emulator address, "
                             "not an Azure account", hint="pass --account NAME of the real cache account")
        origins.append(f"cache account {account} from [cache] account_url")
    else:
        raise UsageError("no cache account: [cache] is not an Azure account and --account is not given",
                         hint='set [cache] kind = "azure" and account_url, or pass --account NAME')

    gateway: str | None = None
    if opts.gateway_account is not None:
        gateway = names.STORAGE_ACCOUNT.check("--gateway-account", opts.gateway_account)
    elif project.gateway_account_url:
        gateway, _ = _account_from_url(project.gateway_account_url, "gateway")
        origins.append(f"gateway account {gateway} from [gateway] account_url")

    source_name = opts.source_region or net.get("source_region")
    target_name = opts.target_region or net.get("target_region")
    location_option = "--location" if opts.location or not target_name else "--target-region"
    location = names.region(location_option, _required(opts.location or target_name, "--location",
                                                       "(the region of the virtual network / route filter)"))
    location_cloud: Cloud | None = None
    try:
        table_region = lookup(location_option, location)
        location = table_region.key
        location_cloud = cloud(table_region.cloud)
    except UsageError:
        if mode == "microsoft-peering":
            raise
    if suffix is None:
        suffix = (location_cloud or cloud("public")).blob_suffix
    suffix_cloud = cloud_of_suffix(suffix)
    if suffix_cloud is not None and location_cloud is not None and suffix_cloud.key != location_cloud.key:
        raise UsageError(f"--location {location} is in the {location_cloud.key} cloud but the cache account "
                         f"is in {suffix_cloud.key} (blob.{suffix})", hint="use a region of the account's cloud")

    endpoint: EndpointInputs | None = None
    peering: PeeringInputs | None = None
    if mode == "private-endpoint":
        endpoint = _endpoint(opts, rg, account)
    else:
        peering = _peering(opts, rg, account, source_name, target_name, project.route_filter_communities)
    return PlanInputs(mode, subscription, rg, location, account, suffix, gateway, endpoint, peering, tuple(origins))


def _endpoint(opts: PlanOptions, rg: str, account: str) -> EndpointInputs:
    why = "for a private endpoint (the VNet that reaches the ExpressRoute gateway)"
    vnet = names.VNET.check("--vnet", _required(opts.vnet, "--vnet", why))
    subnet = names.SUBNET.check("--subnet", _required(opts.subnet, "--subnet", why))
    net_rg = names.RESOURCE_GROUP.check("--network-resource-group", _default(opts.network_resource_group, rg))
    pe = names.ENDPOINT.check("--endpoint-name", _default(opts.endpoint_name, f"pe-{account}-blob"))
    if opts.dns not in DNS_CHOICES:
        raise UsageError(f"--dns {opts.dns!r} is unknown", hint="use --dns zone-group or --dns a-record")
    forwarder = names.ipv4("--forwarder-ip", opts.forwarder_ip) if opts.forwarder_ip is not None else None
    return EndpointInputs(vnet, subnet, net_rg, pe, opts.dns, forwarder)


def _peering(opts: PlanOptions, rg: str, account: str, source_name: str | None, target_name: str | None,
             configured: tuple[str, ...]) -> PeeringInputs:
    circuit = names.CIRCUIT.check("--circuit", _required(opts.circuit, "--circuit", "for Microsoft peering"))
    circuit_rg = names.RESOURCE_GROUP.check("--circuit-resource-group", _default(opts.circuit_resource_group, rg))
    route_filter = names.ROUTE_FILTER.check("--route-filter", _default(opts.route_filter, f"rf-godwit-{account}"))
    why_region = "(Microsoft peering needs the regional communities of both regions)"
    source = lookup("--source-region", names.region(
        "--source-region", _required(source_name, "--source-region", why_region)))
    target = lookup("--target-region", names.region(
        "--target-region", _required(target_name, "--target-region", why_region)))
    if source.cloud != target.cloud:
        raise UsageError(f"--source-region {source.key} ({source.cloud}) and --target-region {target.key} "
                         f"({target.cloud}) are in different clouds", hint="a circuit serves one cloud")
    entra = cloud(source.cloud).entra_id
    why: list[tuple[str, str]] = [(source.community, f"regional community of the source region {source.name}"),
                                  (target.community, f"regional community of the target region {target.name}")]
    if entra:
        why.append((entra, "Microsoft Entra ID (Azure Active Directory)"))
    why += [(names.community("[network] route_filter_communities", c), "listed in [network] route_filter_communities")
            for c in configured]
    why += [(names.community("--community", c), "given with --community") for c in opts.communities]
    seen: dict[str, str] = {}
    for value, what in why:
        seen.setdefault(value, what)
    return PeeringInputs(circuit, circuit_rg, route_filter, source, target, tuple(seen),
                         tuple(seen.items()))
