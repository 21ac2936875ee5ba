"""The engine's side of the answer watch: a change of the cache account's answer is an event, and
the next cycle refuses until the change is acknowledged."""

from __future__ import annotations

from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.errors import NetworkPolicyError
from godwit.project.project import init, open_project
from tests.helpers import make_raw
from tests.unit.test_network_route import CACHE, FakeDNS


def test_a_changed_answer_is_an_event_and_stops_the_next_cycle(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    init(root).close()
    with open(root / "godwit.toml", "a") as f:
        f.write('\n[network]\ndata_plane = "private-endpoint"\n')
    project = open_project(root)
    try:
        router = project.router
        assert router is not None
        dns = FakeDNS("10.1.0.5")
        router.resolver, router.data_hosts, router.answer_cache_seconds = dns, frozenset({CACHE}), 0
        add_server(project, "s", [str(make_raw(tmp_path / "d.raw", 1 << 20, seed=3))])
        assert replication.start(project, "s") is not None
        router.route(f"https://{CACHE}/c/pack")
        dns.set("20.60.1.2")
        with pytest.raises(NetworkPolicyError):
            router.route(f"https://{CACHE}/c/pack")
        assert any("DNS for" in e.message and "20.60.1.2" in e.message and e.level == "error"
                   for e in project.db.events())
        with pytest.raises(NetworkPolicyError, match="changed while replicating"):
            replication.cycle(project, "s")
        router.acknowledge()
        replication.cycle(project, "s")
    finally:
        project.close()
