"""Servers and their disks: add, list, remove."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path

from godwit.errors import ConflictError, SourceError, UsageError
from godwit.project.project import NAME_RE, Project
from godwit.sources import open_source, record_format
from godwit.sources.live_spec import is_live_spec, probe_live
from godwit.state.db import Disk, Server
from godwit.state.locks import server_lock
from godwit.state.servers import NewDisk

log = logging.getLogger(__name__)


def add_server(project: Project, name: str, specs: list[str],
               formats: list[str] | None = None) -> tuple[Server, list[Disk]]:
    """``formats``: none (probe each disk safely), one for every disk, or one per disk in order."""
    if not NAME_RE.match(name):
        raise UsageError(f"server name {name!r} is not valid",
                         hint="use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if not specs:
        raise UsageError(f"server {name} needs at least one --disk")
    formats = formats or []
    if len(formats) not in (0, 1, len(specs)):
        raise UsageError(f"{len(formats)} --disk-format for {len(specs)} --disk",
                         hint="give one --disk-format for all disks, or one per disk in --disk order")
    seen: set[Path] = set()
    probed: list[tuple[str, str, int]] = []
    notes: list[str] = []
    for i, spec in enumerate(specs):
        if is_live_spec(spec):  # a running QEMU's disk: no file to resolve or probe
            live, size = probe_live(spec)
            probed.append((live, "qemu-live", size))
            continue
        # Links are resolved here, once: later opens refuse a link at the stored path.
        path = Path(spec).expanduser().resolve()
        if path in seen:
            raise UsageError(f"disk {spec} is given twice")
        seen.add(path)
        recorded = record_format(path, formats[i if len(formats) > 1 else 0] if formats else None)
        fmt = recorded.format
        notes.extend(recorded.warnings)
        with open_source(path, fmt) as src:
            size = src.size
        if size == 0:
            raise SourceError(f"disk {spec} is empty (0 bytes)")
        probed.append((str(path), fmt, size))
    with project.db.unit() as u:
        server = u.servers.add(name, [NewDisk(spec, fmt, size) for spec, fmt, size in probed])
        u.events.add("info", f"server added with {len(probed)} disk(s)", server=name)
        for note in notes:
            log.warning("%s", note)
            u.events.add("warning", note, server=name)
        return server, u.servers.disks(server.id)


def remove_server(project: Project, name: str, *, force: bool = False) -> None:
    server = project.db.server(name)
    if server.state == "replicating" and not force:
        raise ConflictError(f"server {name} is replicating",
                            hint=f"`godwit replicate stop {name}` first, or pass --force")
    # A running cycle or apply would find its rows gone under it: refuse while either is held.
    with ExitStack() as held:
        try:
            for role in ("cycle", "apply"):
                held.enter_context(server_lock(project.state_dir, name, role))
        except ConflictError as exc:
            raise ConflictError(f"cannot remove server {name} now: {exc.message}",
                                hint="wait for it to finish, or stop it (Ctrl-C; a cycle resumes later), "
                                     "then remove the server again") from None
        # Cache objects of the server go with it, packs before manifests (the order every release
        # follows); replicas stay (they may be someone's only copy).
        keys = list(project.store.list(f"servers/{server.uid}/"))
        for key in sorted(keys, key=lambda k: k.endswith(".manifest")):
            project.store.delete(key)
        with project.db.unit() as u:
            u.servers.remove(server.id)
            u.events.add("info", "server removed", server=name)
