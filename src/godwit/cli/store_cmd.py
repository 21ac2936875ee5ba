"""`godwit store`: check the cache store and the gateway account."""

from __future__ import annotations

import typer
from rich.table import Table

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, out, print_json, project_from, styled
from godwit.errors import StoreError

app = typer.Typer(help="The cache store (a folder or an Azure blob container) and the gateway account.",
                  no_args_is_help=True)


@app.callback()
def _store() -> None:
    """The cache store and the gateway account."""


@app.command("check")
@guarded
def check(project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """Try the configured storage for real: account kind, clock, container, and each permission.

    Exits non-zero (the store error code) if any check fails.
    """
    from godwit.azure.credentials import install_log_redaction
    from godwit.checks.storecheck import check_stores

    install_log_redaction()
    with project_from(project) as p:
        results = check_stores(p)
    failed = [r for r in results if not r.ok]
    if json_:
        print_json({"ok": not failed, "checks": [r.as_dict() for r in results]})
    else:
        table = Table("check", "result", "detail", "fix")
        for r in results:
            table.add_row(r.name, styled(("ok", "green")) if r.ok else styled(("FAIL", "bold red")), r.detail, r.fix)
        out.print(table)
        if failed:
            out.print(styled((f"{len(failed)} check(s) failed", "bold red"), ": see the fix column"))
        else:
            out.print(styled(("all checks passed", "green")))
    if failed:
        raise typer.Exit(StoreError.exit_code)
