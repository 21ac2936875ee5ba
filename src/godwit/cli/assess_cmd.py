"""`godwit assess`: is a server ready to boot in Azure?"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, out, print_json, project_from, styled

STYLE = {"ready": "green", "warning": "yellow", "not_ready": "bold red"}
LABEL = {"ready": "ready", "warning": "warning", "not_ready": "not ready"}


def register(app: typer.Typer) -> None:
    app.command("assess")(assess)
    app.command("prepare")(prepare)


@guarded
def assess(
    name: Annotated[str, typer.Argument(help="The server.")],
    recovery_point: Annotated[str, typer.Option("--recovery-point", "-r",
                                                help="A recovery point number or `latest`.")] = "latest",
    timeout: Annotated[float, typer.Option(help="Seconds before the assessment's appliance is stopped.")] = 300.0,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Assess NAME's replica at a recovery point for Azure, read-only: OS, boot mode and VM
    generation, disk sizes, Hyper-V drivers, fstab, network, VM agent. Each finding says what to do."""
    from godwit.assess.assessment import assess as run

    with project_from(project) as p:
        res = run(p, name, recovery_point=recovery_point, timeout=timeout)
    if json_:
        print_json(res.model_dump(mode="json"))
        return
    os_ = res.os
    what = "operating system unknown"
    if os_:
        what = f"{os_.distro} {os_.version}" + ("" if os_.product in (os_.version, "unknown") else f" ({os_.product})")
        what += f", {os_.arch}"
    gen = f"Gen{res.generation}" if res.generation else "generation unknown"
    out.print(styled(f"{res.server} at recovery point {res.recovery_point}: {what}, {gen} — ",
                     (LABEL[res.status], STYLE[res.status])))
    table = Table("status", "finding", "what to do")
    for f in res.findings:  # guest text: plain Text cells, never markup
        table.add_row(Text(LABEL[f.status], style=STYLE[f.status]), Text(f.title), Text(f.fix))
    out.print(table)


@guarded
def prepare(
    name: Annotated[str, typer.Argument(help="The server whose latest test migration to prepare.")],
    target: Annotated[str, typer.Option("--for", help="The cloud to prepare for.")] = "azure",
    timeout: Annotated[float, typer.Option(help="Seconds before the appliance is stopped.")] = 900.0,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Prepare NAME's latest test migration (its own files, never the replica) to boot in Azure:
    fstab by UUID, DHCP, the Hyper-V drivers in the initramfs. Refuses what it cannot fix."""
    from godwit.assess.preparation import prepare as run

    with project_from(project) as p:
        res = run(p, name, target=target, timeout=timeout)
    if json_:
        print_json(res.model_dump(mode="json"))
        return
    out.print(f"{res.server}: {len(res.changes)} change(s), {len(res.refused)} refused (report {res.report})")
    for c in res.changes:
        out.print(styled("  ", ("changed", "green"), f" {c.file}: {c.change}"))
    for r in res.refused:
        out.print(styled("  ", ("refused", "yellow"), f" {r.item}: {r.reason}"))
