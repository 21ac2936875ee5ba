"""`godwit network`: the network plane — `plan`, `check` and `bench`."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from godwit.cli.common import JsonOpt, ProjectOpt, err, guarded, human_bytes, out, print_json, project_from
from godwit.errors import ConflictError, GodwitError, NetworkPolicyError, UsageError

if TYPE_CHECKING:
    from godwit.checks.plan import ProjectView

app = typer.Typer(help="The network plane: the data path to the cache account, planned and checked.",
                  no_args_is_help=True)


@app.callback()
def _network() -> None:
    """The network plane: the data path to the cache account, planned and checked."""


Str = str | None


@app.command("plan")
@guarded
def plan(
    mode: Annotated[Str, typer.Option(help="private-endpoint or microsoft-peering (default: \\[network] "
                                           "data_plane).", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="az (a bash script), bicep, or role (the custom role "
                                                      "definition for the Bicep deployer).")] = "az",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write to FILE (default: standard output).",
                                                  show_default=False)] = None,
    force: Annotated[bool, typer.Option(help="Replace FILE if it exists.")] = False,
    subscription: Annotated[Str, typer.Option(help="Subscription id of the cache account.",
                                              show_default=False)] = None,
    resource_group: Annotated[Str, typer.Option(help="Resource group of the cache account; new resources go "
                                                     "there.", show_default=False)] = None,
    location: Annotated[Str, typer.Option(help="Region of the virtual network / route filter (default: the "
                                               "target region).", show_default=False)] = None,
    account: Annotated[Str, typer.Option(help="Cache account name (default: from \\[cache] account_url).",
                                         show_default=False)] = None,
    gateway_account: Annotated[Str, typer.Option(help="Gateway account name (default: from \\[gateway] "
                                                      "account_url).", show_default=False)] = None,
    vnet: Annotated[Str, typer.Option(help="private-endpoint: the virtual network that reaches the "
                                           "ExpressRoute gateway.", show_default=False)] = None,
    subnet: Annotated[Str, typer.Option(help="private-endpoint: the subnet for the endpoint.",
                                        show_default=False)] = None,
    network_resource_group: Annotated[Str, typer.Option(help="private-endpoint: the virtual network's "
                                                             "resource group (default: --resource-group).",
                                                        show_default=False)] = None,
    endpoint_name: Annotated[Str, typer.Option(help="private-endpoint: its name (default: pe-ACCOUNT-blob).",
                                               show_default=False)] = None,
    dns: Annotated[str, typer.Option(help="private-endpoint: zone-group (Azure keeps the A record) or "
                                          "a-record.")] = "zone-group",
    forwarder_ip: Annotated[Str, typer.Option(help="private-endpoint: your DNS forwarder in Azure, for the "
                                                   "on-premises forwarding hint.", show_default=False)] = None,
    circuit: Annotated[Str, typer.Option(help="microsoft-peering: the ExpressRoute circuit.",
                                         show_default=False)] = None,
    circuit_resource_group: Annotated[Str, typer.Option(help="microsoft-peering: the circuit's resource group "
                                                             "(default: --resource-group).",
                                                        show_default=False)] = None,
    route_filter: Annotated[Str, typer.Option(help="microsoft-peering: the route filter's name (default: "
                                                   "rf-godwit-ACCOUNT).", show_default=False)] = None,
    source_region: Annotated[Str, typer.Option(help="microsoft-peering: the source region (default: \\[network] "
                                                    "source_region).", show_default=False)] = None,
    target_region: Annotated[Str, typer.Option(help="microsoft-peering: the target region (default: \\[network] "
                                                    "target_region).", show_default=False)] = None,
    community: Annotated[list[str] | None, typer.Option(help="microsoft-peering: one more community to allow "
                                                             "(repeatable).", show_default=False)] = None,
    project: ProjectOpt = None,
) -> None:
    """Print the cloud-side steps of the data path, ready to run: private endpoint or Microsoft peering.

    Nothing is changed in Azure: review the output, then run it (az) or deploy it (bicep).
    """
    from godwit.checks.plan import FORMATS, PlanOptions, make_plan

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is unknown", hint="use --format az, bicep or role")
    opts = PlanOptions(mode, subscription, resource_group, location, account, gateway_account, vnet, subnet,
                       network_resource_group, endpoint_name, dns, forwarder_ip, circuit, circuit_resource_group,
                       route_filter, source_region, target_region, tuple(community or ()))
    text = make_plan(opts, _project_view(project), fmt)
    if out_file is None:
        sys.stdout.write(text)
        return
    _write(out_file, text, force=force, executable=fmt == "az")
    err.print(f"wrote {out_file}", markup=False, highlight=False)


def _project_view(path: Path | None) -> ProjectView:
    """The project's configuration when there is one; a plan can also be made from options alone."""
    from godwit.checks.plan import ProjectView, project_view
    from godwit.config.model import load
    from godwit.project.project import CONFIG_NAME

    explicit = path is not None or bool(os.environ.get("GODWIT_PROJECT"))
    root = path if path is not None else Path(os.environ.get("GODWIT_PROJECT") or ".")
    config_path = root / CONFIG_NAME
    if not explicit and not config_path.exists():
        return ProjectView()
    return project_view(load(config_path))


def _write(path: Path, text: str, *, force: bool, executable: bool) -> None:
    """Whole or nothing: a temporary file beside ``path``, renamed over it."""
    if path.exists() and not force:
        raise ConflictError(f"{path} exists", hint="pass --force to replace it, or choose another --out")
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise GodwitError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o755 if executable else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_MARK = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


@app.command("check")
@guarded
def check(
    json_: JsonOpt = False,
    skip: Annotated[list[str] | None, typer.Option(help="Do not run the check with this id (repeatable); it is "
                                                        "reported as warn.", show_default=False)] = None,
    control_endpoint: Annotated[list[str] | None, typer.Option(
        help="A control-plane endpoint HOST[:PORT] to reach on its route (repeatable; default: "
             "login.microsoftonline.com and management.azure.com).", show_default=False)] = None,
    timeout: Annotated[float, typer.Option(help="Seconds per connection attempt.")] = 5.0,
    project: ProjectOpt = None,
) -> None:
    """Check the network plane for real: DNS of the cache account, the bypass list, routes, reachability.

    Each check passes, warns or fails with what was seen and the fix; the exit code is non-zero
    when any check fails. The ids are stable (see docs/configuration.md).
    """
    from godwit.checks.network_check import CONTROL_ENDPOINTS, record, run_network_check

    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    with project_from(project) as p:
        report = run_network_check(p, control_endpoints=tuple(control_endpoint or CONTROL_ENDPOINTS),
                                   skip=tuple(skip or ()), timeout=timeout)
        record(p, report)
    if json_:
        print_json(report.as_dict())
    else:
        for c in report.checks:
            out.print(f"{_MARK[c.status]} {escape(c.id)}: {escape(c.message)}", markup=True, highlight=False)
            if c.fix and c.status != "pass":
                out.print(f"     fix: {c.fix}", markup=False, highlight=False)
        verdict = "passed" if report.ok else "FAILED"
        out.print(f"network check {verdict} (data_plane = {report.data_plane})", markup=False, highlight=False)
    if not report.ok:
        raise typer.Exit(NetworkPolicyError.exit_code)


@app.command("bench")
@guarded
def bench(
    json_: JsonOpt = False,
    size_mib: Annotated[float, typer.Option(help="Size of each scratch object in MiB (at most 256).")] = 8.0,
    count: Annotated[int, typer.Option(help="Number of scratch objects (at most 100).")] = 8,
    concurrency: Annotated[int, typer.Option(help="Requests in flight (at most 16).")] = 2,
    project: ProjectOpt = None,
) -> None:
    """Measure the data plane to the cache store on replication's path: throughput and latency.

    Writes scratch objects under godwit-bench/, reads them back, times small requests, and
    removes them; prints which path the requests took.
    """
    from godwit.checks.network_bench import bench as run_bench
    from godwit.checks.network_bench import check_bounds

    check_bounds(size_mib, count, concurrency)
    with project_from(project) as p:
        res = run_bench(p, size_mib=size_mib, count=count, concurrency=concurrency)
    data = res.as_dict()
    if json_:
        print_json(data)
        return
    out.print(f"path: {res.path}", markup=False, highlight=False)
    out.print(f"store: {res.store}; {res.count} object(s) of {human_bytes(res.size_bytes)}, "
              f"{res.concurrency} in flight", markup=False, highlight=False)
    for name in ("upload", "download", "small"):
        s = data[name]
        lat = s["latency_ms"]
        rate = f"{s['mb_per_s']:.1f} MB/s, " if s["mb_per_s"] else ""
        out.print(f"{name:>8}: {rate}latency p50 {lat['p50']:.1f} ms, p95 {lat['p95']:.1f} ms, "
                  f"max {lat['max']:.1f} ms ({s['requests']} requests)", markup=False, highlight=False)
    out.print(f"removed {res.removed} scratch object(s)", markup=False, highlight=False)
