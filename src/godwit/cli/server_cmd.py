"""`godwit server`: add, list and remove servers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, human_bytes, out, print_json, project_from, styled

app = typer.Typer(help="Servers to replicate and their disks.", no_args_is_help=True)


@app.command("add")
@guarded
def add(
    name: Annotated[str, typer.Argument(help="Server name (letters, digits, '.', '_', '-').")],
    disk: Annotated[list[str], typer.Option("--disk", "-d", help="A disk: raw image, block device, qcow2, "
                                                                  "VMDK, VHD or VHDX file, or a running QEMU's "
                                                                  "qemu+unix:///QMP.sock?node=NODE. Repeat in "
                                                                  "disk order.")],
    disk_format: Annotated[list[str] | None, typer.Option(
        "--disk-format", help="raw, qcow2, vmdk, vpc (VHD) or vhdx: once for every disk, or once per --disk "
                              "in order. Without it the format is probed, and an image whose backing file "
                              "lies outside its folder is refused.")] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Add a server with its disks (disk 0, 1, … in the order given)."""
    from godwit.engine.inventory import add_server

    with project_from(project) as p:
        server, disks = add_server(p, name, disk, disk_format)
    if json_:
        print_json({"server": server.name, "disks": [{"index": d.idx, "spec": d.spec, "format": d.format,
                                                      "size": d.size} for d in disks]})
        return
    out.print(styled("added server ", (server.name, "bold"), f" with {len(disks)} disk(s):"))
    for d in disks:
        out.print(f"  disk{d.idx}: {d.spec} ({d.format}, {human_bytes(d.size)})")


@app.command("list")
@guarded
def list_(project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """List servers, their state and disks."""
    with project_from(project) as p:
        rows = [(s, p.db.disks(s.id)) for s in p.db.servers()]
    if json_:
        print_json([{"server": s.name, "state": s.state, "error": s.error,
                     "disks": [{"index": d.idx, "spec": d.spec, "format": d.format, "size": d.size}
                               for d in disks]} for s, disks in rows])
        return
    if not rows:
        out.print("no servers yet: `godwit server add NAME --disk PATH`")
        return
    table = Table("server", "state", "disk", "format", "size", "source")
    for s, disks in rows:
        for d in disks:
            table.add_row(s.name if d.idx == 0 else "", s.state if d.idx == 0 else "", str(d.idx), d.format,
                          human_bytes(d.size), d.spec)
    out.print(table)


@app.command("remove")
@guarded
def remove(
    name: str,
    force: Annotated[bool, typer.Option(help="Remove even while replicating.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Remove a server and its cache objects (its replica disks are kept)."""
    from godwit.engine.inventory import remove_server

    with project_from(project) as p:
        remove_server(p, name, force=force)
    out.print(f"removed server {name}")
