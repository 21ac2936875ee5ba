"""`godwit appliance run`: replicate the servers a service assigns, reporting to it (out only)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from godwit.cli.common import JsonOpt, ProjectOpt, err, guarded, out, print_json, project_from, styled
from godwit.errors import ConflictError, UsageError

app = typer.Typer(help="The on-premises appliance: cycles into the cache store, reports to `godwit serve`.",
                  no_args_is_help=True)
log = logging.getLogger("godwit.appliance")


def _ago(t: float | None) -> str:
    import time

    return "never" if t is None else f"{max(0.0, time.time() - t):.0f} s ago"


@app.command("list")
@guarded
def list_(project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """The registered appliances, their servers and last contact (of `--service`, or this project)."""
    from godwit.cli.remote import service_client
    from godwit.state.appliances import Appliances

    if (remote := service_client()) is not None:
        with remote:
            views = remote.appliances()
    else:
        with project_from(project) as p, p.db.unit() as u:
            views = Appliances(u.connection).all()
    if json_:
        print_json([v.model_dump() for v in views])
        return
    if not views:
        out.print("no appliance registered: `godwit appliance run --service URL --key KEY` on one")
        return
    for v in views:
        out.print(f"{v.name}: {len(v.servers)} server(s) ({', '.join(v.servers) or 'none'}), "
                  f"last contact {_ago(v.last_seen)}")


@app.command("unregister")
@guarded
def unregister(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Forget an appliance: its token stops working, its servers are this project's again (their
    replication stopped) and can be removed or given to another appliance."""
    from godwit.cli.remote import service_client
    from godwit.state.appliances import Appliances

    if not yes and not json_ and not typer.confirm(f"unregister appliance {name}?", default=False):
        raise typer.Exit(1)
    if (remote := service_client()) is not None:
        with remote:
            a, stopped = remote.unregister_appliance(name)
    else:
        with project_from(project) as p:
            with p.db.unit() as u:
                found = Appliances(u.connection).find(name)
            _refuse_if_served(p.state_dir, found.servers if found else [])
            with p.db.unit() as u:
                a, stopped = Appliances(u.connection).unregister(name)
                u.events.add("warning", f"appliance {name} unregistered; its servers are this project's again")
    if json_:
        print_json({"appliance": a.model_dump(), "stopped": stopped})
        return
    out.print(f"appliance {a.name} unregistered; its servers: {', '.join(a.servers) or 'none'}")
    if stopped:
        out.print(f"replication stopped for {', '.join(stopped)}: `godwit replicate start NAME` resumes it here")


def _refuse_if_served(state_dir: Path, servers: list[str]) -> None:
    """A running `godwit serve` holds the cycle lock of every appliance's server (service/owned.py):
    then only the service can unregister (it also lets go of the locks)."""
    from godwit.state.locks import server_lock

    for s in servers:
        try:
            with server_lock(state_dir, s, "cycle"):
                pass
        except ConflictError as exc:
            raise ConflictError(f"server {s} is held by a running process ({exc.message})",
                                hint="unregister through the running service: "
                                     "`godwit --service URL appliance unregister NAME`") from None


def _print_errors(r: object) -> None:
    for srv, m in getattr(r, "errors", []):
        err.print(styled((f"{srv or 'appliance'}: {m}", "red")))


@app.command("run")
@guarded
def run(
    service: Annotated[str | None, typer.Option(
        "--service", envvar="GODWIT_SERVICE", help="The service's URL (https://HOST:PORT).",
        show_default=False)] = None,
    key: Annotated[str | None, typer.Option(
        "--key", envvar="GODWIT_REGISTRATION_KEY", show_default=False,
        help="The project's registration key (only until this appliance has its token).")] = None,
    name: Annotated[str | None, typer.Option(help="This appliance's name (default: the project's).")] = None,
    server: Annotated[list[str] | None, typer.Option(
        "--server", help="A server to replicate, asked for at registration (repeat).", show_default=False)] = None,
    ca_bundle: Annotated[Path | None, typer.Option(
        help="CA certificates (PEM) that sign the service's certificate, e.g. a private CA.")] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="A TOML file with an [appliance] table (service, name, servers, key_file…).")] = None,
    poll: Annotated[float | None, typer.Option(help="Seconds between pulls of the desired state.")] = None,
    once: Annotated[bool, typer.Option(help="One round (pull, report, due cycles), then exit.")] = False,
    project: ProjectOpt = None,
) -> None:
    """Register (once), then pull the desired state and commands, run the due cycles into the cache
    store and report them in order. The service is never connected to from outside; when it is
    away, replication goes on and the reports follow when it is back."""
    from godwit.appliance.agent import Appliance
    from godwit.appliance.link import ServiceLink
    from godwit.appliance.settings import ApplianceSettings, load

    with project_from(project) as p:
        if config is not None:
            s = load(config)
            if service or key or name or server or ca_bundle:
                raise UsageError("--config names the service, key, name, servers and CA itself",
                                 hint="give either --config or the options")
        elif service is None:
            raise UsageError("give --service URL (and --key KEY the first time), or --config FILE")
        else:
            s = ApplianceSettings(service=service, name=name or p.config.name, servers=tuple(server or ()), key=key,
                                  ca_bundle=ca_bundle)
        if poll is not None:
            s = ApplianceSettings(s.service, s.name, s.servers, s.key, s.ca_bundle, poll)
        link = ServiceLink(s.service, router=p.router, ca_bundle=str(s.ca_bundle) if s.ca_bundle else None)
        try:
            agent = Appliance(p, s, link)
            stop = threading.Event()
            if threading.current_thread() is threading.main_thread():
                def on_signal(*_: object) -> None:
                    # The running cycle finishes first (a second signal stops it; it resumes next time).
                    if stop.is_set():
                        raise KeyboardInterrupt
                    stop.set()

                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, on_signal)
            if once:
                agent.ensure_token()
                rounds = [agent.round()]
            else:
                err.print(styled(("appliance ", "bold"), s.name, " → ", s.service))
                agent.run(stop, on_round=_print_errors)
                rounds = []
            for r in rounds:
                for srv, n in r.cycles:
                    err.print(styled(f"{srv}: cycle {n} committed"))
                for srv, n in r.reported:
                    err.print(styled(f"{srv}: cycle {n} reported"))
                for srv, m in r.errors:
                    err.print(styled((f"{srv or 'appliance'}: {m}", "red")))
                if not r.online:
                    err.print(styled(("the service did not answer; the reports wait for it", "yellow")))
        finally:
            link.close()
