"""Builds the configured replica disk for one disk of one server, from the `[replicas]` section."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from godwit.config.model import ReplicaConfig
from godwit.errors import ConfigError
from godwit.replicas.base import ReplicaDisk

if TYPE_CHECKING:
    from godwit.state.db import Disk, Server


def replica_name(server: Server, disk: Disk) -> str:
    return f"{server.name}-disk{disk.idx}"


def open_replica(replicas: ReplicaConfig, root: Path, server: Server, disk: Disk) -> ReplicaDisk:
    """The replica of ``disk``; relative paths are taken from the project folder ``root``."""
    if replicas.kind == "local":
        from godwit.replicas.local import LocalReplica

        return LocalReplica((root / replicas.path).resolve() / server.name, f"disk{disk.idx}")
    if replicas.kind == "azure":
        from godwit.replicas.pageblob import open_pageblob_replica

        replica: ReplicaDisk = open_pageblob_replica(replicas.options, root, replica_name(server, disk))
        return replica
    raise ConfigError(f"unknown replica kind {replicas.kind!r}")
