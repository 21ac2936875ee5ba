"""A changed answer for the cache account stops replication until a person checked it: a
`godwit network check` that passed after the change lets the next cycle go on (in the same long
`replicate run`), one that failed, or ran before the change, does not."""

from __future__ import annotations

import time

import pytest

from godwit.engine.cycle.runner import _acknowledge_if_checked
from godwit.errors import NetworkPolicyError
from godwit.project.project import Project
from godwit.state.network import NetworkRecords
from tests.unit.test_network_route import CACHE, FakeDNS, router


def _changed(project: Project) -> FakeDNS:
    dns = FakeDNS("10.1.0.5")
    project._router = router(dns)
    project._router.route(f"https://{CACHE}/x")
    dns.set("10.1.0.7")
    project._router.route(f"https://{CACHE}/x")
    assert project._router.changes()
    return dns


def _check(project: Project, ok: bool) -> None:
    with project.db.unit() as u:
        NetworkRecords(u.connection).record_check(ok=ok, data_plane="private-endpoint", failed=[] if ok else ["x"])


def test_a_passing_check_after_the_change_acknowledges_it(project: Project) -> None:
    _changed(project)
    time.sleep(0.01)
    _check(project, ok=True)
    _acknowledge_if_checked(project)
    assert project._router is not None
    project._router.refuse_if_changed()  # no longer refuses


@pytest.mark.parametrize("ok", [False, True])
def test_a_failed_or_earlier_check_does_not(project: Project, ok: bool) -> None:
    if ok:
        _check(project, ok=True)  # before the change
        time.sleep(0.01)
    dns = _changed(project)
    if not ok:
        _check(project, ok=False)
    _acknowledge_if_checked(project)
    assert project._router is not None and dns.addresses
    with pytest.raises(NetworkPolicyError, match="changed while replicating"):
        project._router.refuse_if_changed()
