"""Builds the configured replica disk for one disk of one server, from the `[replicas]` section.

A replica belongs to one server and one disk by uid, never by name: a server removed and added
again under the same name, or a state database restored from an older copy, must not pick up
recovery points and undo journals that describe other content (issue 8.1). Local replicas live in
``replicas/<name>-<server uid>/disk<idx>-<disk uid>.*`` and record both uids in their points file;
page blobs are named by both uids too (:func:`replica_name`); every kind is checked against the
recovery points the state database holds before it is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from godwit.config.model import ReplicaConfig
from godwit.errors import ConfigError, ReplicaError
from godwit.replicas.base import ReplicaDisk

if TYPE_CHECKING:
    from godwit.network.route import Router
    from godwit.state.db import Disk, Server


def replica_name(server: Server, disk: Disk) -> str:
    """A page blob's name: readable, and unique to this server's and disk's uids, so a server added
    again under an old name gets a new blob instead of the old one's snapshots."""
    return f"{server.name}-{server.uid[:12]}-disk{disk.idx}-{disk.uid[:12]}"


def local_replica_folder(replicas: ReplicaConfig, root: Path, server: Server) -> Path:
    return (root / replicas.path).resolve() / f"{server.name}-{server.uid}"


def open_replica(replicas: ReplicaConfig, root: Path, server: Server, disk: Disk, *,
                 state_points: list[int] | None = None, newest_cycle: int = 0,
                 router: Router | None = None) -> ReplicaDisk:
    """The replica of ``disk``; relative paths are taken from the project folder ``root``.
    ``router`` (the project's ``[network]`` plane) routes a page-blob replica's every request.

    With ``state_points`` (the state's live recovery points) the replica must agree with them
    (see :func:`check_points`); ``newest_cycle`` is the highest cycle number the state knows.
    """
    replica: ReplicaDisk
    if replicas.kind == "local":
        from godwit.replicas.local import LocalReplica

        replica = LocalReplica(local_replica_folder(replicas, root, server), f"disk{disk.idx}-{disk.uid}",
                               identity={"server_uid": server.uid, "disk_uid": disk.uid})
    elif replicas.kind == "azure":
        from godwit.replicas.pageblob import open_pageblob_replica

        replica = open_pageblob_replica(replicas.options, root, replica_name(server, disk), router)
    else:
        raise ConfigError(f"unknown replica kind {replicas.kind!r}")
    if state_points is not None:
        try:
            check_points(replica, server, disk, state_points, newest_cycle)
        except BaseException:
            replica.close()
            raise
    return replica


def check_points(replica: ReplicaDisk, server: Server, disk: Disk, state_points: list[int],
                 newest_cycle: int) -> None:
    """Refuse a replica whose sealed points do not match the state database.

    Tolerated, because the replica is sealed before the state records it: one point newer than
    the state's latest, provided the state knows a cycle of that number. Anything else means the
    replica holds another history (an old server of the same name, an older state database), and
    applying or exporting it would give wrong bytes with exit 0.
    """
    have = replica.points()
    latest = max(state_points, default=0)
    where = f"replica {replica.description} of {server.name} disk {disk.idx}"
    if latest and latest not in have:
        raise ReplicaError(f"{where} lacks recovery point {latest}, which the state database records "
                           f"(it has {', '.join(map(str, have)) or 'none'})",
                           hint="the replica was replaced or the state database belongs elsewhere; restore "
                                "the matching one, or remove and add the server again for a new replica")
    stray = [p for p in have if p > max(latest, newest_cycle)]
    if stray:
        raise ReplicaError(f"{where} holds recovery point(s) {', '.join(map(str, stray))} that the state "
                           f"database does not know (it is at {latest or 'none'})",
                           hint="the replica belongs to another server of that name or to a newer state "
                                "database; move it aside (or restore the matching state database)")
