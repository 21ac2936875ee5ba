"""`godwit serve`: the REST API, metrics and the in-process mover of one project."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from godwit.cli.common import ProjectOpt, guarded, project_from


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


@guarded
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one; the address is printed).")
                    ] = 8443,
    cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); with --key, serve HTTPS.")] = None,
    key: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    export_dir: Annotated[Path | None, typer.Option(
        help="Where migrations requested over the API write (default: PROJECT/exports).")] = None,
    mover_interval: Annotated[float, typer.Option(
        min=0, help="Seconds between in-process mover rounds (0: no mover here).")] = 5.0,
    project: ProjectOpt = None,
) -> None:
    """Serve the project's API (OpenAPI at /openapi.json, /healthz, /metrics) and dashboard (/ui).

    The state is the project's (SQLite by default; --database-url for PostgreSQL). Callers need a
    token from `godwit token create`.
    """
    from godwit.service.app import ServiceSettings
    from godwit.service.run import serve as run

    def ready(url: str) -> None:
        sys.stdout.write(f"godwit serve: listening on {url}\n")
        sys.stdout.flush()

    with project_from(project) as p:
        settings = ServiceSettings(export_dir=(export_dir or p.root / "exports").resolve(),
                                   mover_interval=mover_interval)
        run(p, settings, host=host, port=port, cert=cert, key=key, on_ready=ready)
