"""Servers and their disks: add, list, remove."""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from godwit.errors import ConflictError, SourceError, UsageError
from godwit.project.project import NAME_RE, Project
from godwit.sources import open_source, record_format
from godwit.state import schema as t
from godwit.state.db import Disk, Server

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
    try:
        with project.db.tx() as c:
            if c.execute(select(t.servers.c.id).where(t.servers.c.name == name)).first():
                raise ConflictError(f"a server named {name!r} already exists",
                                    hint="pick another name, or `godwit server remove` the old one")
            sid = c.execute(t.servers.insert().values(
                uid=secrets.token_hex(8), name=name, state="added", created=time.time())).inserted_primary_key[0]  # type: ignore[index]
            for idx, (spec, fmt, size) in enumerate(probed):
                c.execute(t.disks.insert().values(server_id=sid, idx=idx, uid=secrets.token_hex(8), spec=spec,
                                                  format=fmt, size=size, state="ok"))
    except IntegrityError:
        raise ConflictError(f"a server named {name!r} already exists") from None
    server = project.db.server(name)
    project.db.event("info", f"server added with {len(probed)} disk(s)", server=name)
    for note in notes:
        log.warning("%s", note)
        project.db.event("warning", note, server=name)
    return server, project.db.disks(server.id)


def remove_server(project: Project, name: str, *, force: bool = False) -> None:
    server = project.db.server(name)
    if server.state == "replicating" and not force:
        raise ConflictError(f"server {name} is replicating",
                            hint=f"`godwit replicate stop {name}` first, or pass --force")
    # Cache objects of the server go with it, packs before manifests (the order every release
    # follows); replicas stay (they may be someone's only copy).
    keys = list(project.store.list(f"servers/{server.uid}/"))
    for key in sorted(keys, key=lambda k: k.endswith(".manifest")):
        project.store.delete(key)
    with project.db.tx() as c:
        c.execute(t.servers.delete().where(t.servers.c.id == server.id))
    project.db.event("info", "server removed", server=name)
