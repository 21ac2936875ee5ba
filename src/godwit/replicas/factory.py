"""Builds the configured replica disk for one disk of one server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from godwit.errors import ConfigError
from godwit.replicas.base import ReplicaDisk

if TYPE_CHECKING:
    from godwit.project import Project
    from godwit.state.db import Disk, Server


def replica_name(server: Server, disk: Disk) -> str:
    return f"{server.name}-disk{disk.idx}"


def open_replica(project: Project, server: Server, disk: Disk) -> ReplicaDisk:
    kind = project.config.replicas.kind
    if kind == "local":
        from godwit.replicas.local import LocalReplica

        return LocalReplica(project.replicas_dir / server.name, f"disk{disk.idx}")
    if kind == "azure":
        from godwit.replicas.pageblob import open_pageblob_replica

        replica: ReplicaDisk = open_pageblob_replica(project.config.replicas.options, project.root,
                                                     replica_name(server, disk))
        return replica
    raise ConfigError(f"unknown replica kind {kind!r}")
