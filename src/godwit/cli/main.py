"""The `godwit` command."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import godwit.cli.replicate_cmd as replicate_cmd
import godwit.cli.server_cmd as server_cmd
from godwit import __version__
from godwit.cli.common import JsonOpt, ProjectOpt, bounded, err, fail, guarded, out, print_json, project_from, styled
from godwit.errors import GodwitError, UsageError
from godwit.stores import throttle

app = typer.Typer(
    name="godwit",
    help="Replicate servers' disks into a cache store, keep replica disks, and migrate them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(server_cmd.app, name="server")
app.add_typer(replicate_cmd.app, name="replicate")


def _optional_subapps() -> None:
    """Sub-commands whose modules may be absent in a partial install are added when present."""
    from importlib import import_module

    for module, name in (("godwit.cli.store_cmd", "store"), ("godwit.cli.mover_cmd", "mover"),
                         ("godwit.cli.migrate_cmd", "migrate"), ("godwit.cli.network_cmd", "network"),
                         ("godwit.cli.doctor_cmd", "doctor"), ("godwit.cli.sources_cmd", "sources"),
                         ("godwit.cli.serve_cmd", "serve"), ("godwit.cli.token_cmd", "token"),
                         ("godwit.cli.wave_cmd", "wave"), ("godwit.cli.plan_cmd", "plan"),
                         ("godwit.cli.windows_cmd", "windows"),
                         ("godwit.cli.assess_cmd", "assess"), ("godwit.cli.appliance_cmd", "appliance")):
        try:
            mod = import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        if hasattr(mod, "app"):
            app.add_typer(mod.app, name=name)
        register = getattr(mod, "register", None)
        if register is not None:
            register(app)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens, per server and disk.")] = False,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", envvar="GODWIT_DATABASE_URL", show_default=False,
        help="State database (postgresql+psycopg://USER@HOST/DB or sqlite:///PATH); "
             "overrides the url of the state table in godwit.toml.")] = None,
    service: Annotated[str | None, typer.Option(
        "--service", envvar="GODWIT_SERVICE", show_default=False,
        help="Act through a running `godwit serve` at this URL instead of a local project (replicate "
             "status|start|cycle|stop, migrate, events); the token is read from $GODWIT_TOKEN.")] = None,
) -> None:
    if database_url:  # open_project reads it from the environment, for this process and its children
        os.environ["GODWIT_DATABASE_URL"] = database_url
    if service:  # cli.remote reads it from the environment
        os.environ["GODWIT_SERVICE"] = service
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from godwit.azure.credentials import install_log_redaction

        install_log_redaction()
    except ImportError:
        pass


@app.command()
@guarded
def version() -> None:
    """Print godwit's version."""
    out.print(__version__)


@app.command()
@guarded
def init(
    path: Annotated[str, typer.Argument(help="Folder for the new project (created if missing).")],
    name: Annotated[str | None, typer.Option(help="Project name (default: the folder's name).")] = None,
) -> None:
    """Create a project: godwit.toml, the state database, cache/ and replicas/."""
    from godwit.project.project import init as init_project

    if not path.strip():  # Path("") is the current folder: never a project by accident
        raise UsageError("the project folder is empty", hint="godwit init PATH (`godwit init .` for this folder)")
    project = init_project(Path(path), name)
    project.close()
    out.print(styled("created project ", (project.config.name, "bold"), f" in {project.root}"))


@app.command()
@guarded
def events(
    server: Annotated[str | None, typer.Argument(help="Only this server's events.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 30,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the event log (cycles committed, errors, warnings)."""
    from datetime import datetime

    bounded(limit, "--limit", 1, 1_000_000)
    from godwit.cli.remote import service_client

    if (remote := service_client()) is not None:
        rows = remote.events(server, limit)
    else:
        with project_from(project) as p:
            rows = p.db.events(server, limit)
    if json_:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table("time", "level", "server", "cycle", "message")
    for r in rows:
        table.add_row(datetime.fromtimestamp(r.ts).strftime("%Y-%m-%d %H:%M:%S"), r.level,
                      r.server or "", str(r.cycle or ""), r.message)
    out.print(table)


@app.command()
@guarded
def demo(
    path: Annotated[Path, typer.Option(help="Folder for the demo project and its sample server.")] = Path(
        "demo-project"),
    cycles: Annotated[int, typer.Option(help="Delta cycles with file changes between them.")] = 4,
) -> None:
    """Run the whole story on a generated sample server, with a summary at the end."""
    bounded(cycles, "--cycles", 0, 1000)
    from godwit.cli.progress import disk_progress
    from godwit.demo.walkthrough import run_demo

    raise typer.Exit(run_demo(path, cycles=cycles, progress=disk_progress))


_optional_subapps()


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl-C: Python's KeyboardInterrupt, and every upload the throttle holds ends with it (else
    the process waits for those bytes at the cap before it exits)."""
    throttle.interrupt()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """The entry point. Click's own usage errors get godwit's one-line form, its exit code 2, and
    the JSON error document under --json, like every other error."""
    from typer import _click as click  # typer raises its own vendored click's exceptions

    args = list(sys.argv[1:] if argv is None else argv)
    json_ = "--json" in args
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupted) if main_thread else None
    try:
        code = app(args=args, prog_name="godwit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.ClickException as exc:
        where = exc.ctx.command_path if isinstance(exc, click.exceptions.UsageError) and exc.ctx else "godwit"
        code = fail(UsageError(exc.format_message(), hint=f"see `{where} --help`"), json_=json_).exit_code
    except typer.Abort:
        err.print("godwit: interrupted")
        code = 130
    except GodwitError as exc:  # raised outside a command's own handler
        code = fail(exc, json_=json_).exit_code
    except KeyboardInterrupt:
        err.print("godwit: interrupted")
        code = 130
    finally:
        if main_thread and previous is not None:  # in-process callers (tests) keep their handler
            signal.signal(signal.SIGINT, previous)
    sys.exit(code if isinstance(code, int) else 0)
