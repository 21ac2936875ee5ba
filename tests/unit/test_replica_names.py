"""Replicas are named by uid, not only by server name (issue 8.1): a server removed and added again
under the same name must never be handed the old one's page blob and its snapshots."""

from __future__ import annotations

from godwit.replicas.open import replica_name
from godwit.state.models import Disk, Server


def _server(uid: str) -> Server:
    return Server(id=1, uid=uid, name="web01", state="replicating", error=None)


def _disk(uid: str, idx: int = 0) -> Disk:
    return Disk(id=1, server_id=1, idx=idx, uid=uid, spec="/d.img", format="raw", size=1 << 20, state="ok",
                error=None)


def test_a_re_added_server_gets_another_blob() -> None:
    old = replica_name(_server("a" * 32), _disk("b" * 32))
    new = replica_name(_server("c" * 32), _disk("d" * 32))
    assert old != new
    assert old.startswith("web01-") and new.startswith("web01-")  # still readable in the portal


def test_disks_of_one_server_differ() -> None:
    s = _server("a" * 32)
    assert replica_name(s, _disk("b" * 32, 0)) != replica_name(s, _disk("e" * 32, 1))
