"""The key layout of a cache store (docs/format.md, "Keys")."""

from __future__ import annotations


def pack_key(server_uid: str, pack_id: str) -> str:
    return f"servers/{server_uid}/packs/{pack_id}.pack"


def manifest_key(server_uid: str, cycle: int) -> str:
    return f"servers/{server_uid}/cycles/{cycle:010d}.manifest"


def hashes_key(server_uid: str, disk_uid: str, cycle: int) -> str:
    """A disk's block hashes as of a cycle, put by an appliance for the service (docs/format.md)."""
    return f"servers/{server_uid}/hashes/{disk_uid}/{cycle:010d}.bin"
