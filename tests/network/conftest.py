"""The network tests: the article's topology in namespaces (tests/netns.py), built once a session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.netns import Topology, netns_topology

__all__ = ["net", "netns_topology"]


@pytest.fixture
def net(netns_topology: Topology) -> Iterator[Topology]:
    """The topology in its default state: the private answer, the proxy up, no hosts entries."""
    netns_topology.reset()
    yield netns_topology
