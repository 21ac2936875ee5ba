"""The operations store and its pool, on a project without HTTP: one at a time per server, results
and errors as stored, interrupted rows marked at start, old rows forgotten."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from godwit.engine.cycle import ProgressFn
from godwit.errors import ConflictError, NotFoundError, ReplicaError
from godwit.project.project import Project, init
from godwit.service.models import CleanupResult, OperationView
from godwit.service.operations import KEEP_SECONDS, Operations
from godwit.service.progress import LiveProgress
from godwit.state import schema as t


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = init(tmp_path / "proj")
    yield p
    p.close()


def _ended(ops: Operations, op: OperationView) -> OperationView:
    deadline = time.monotonic() + 10
    while (op := ops.get(op.id)).state in ("queued", "running"):
        assert time.monotonic() < deadline, op
        time.sleep(0.02)
    return op


def test_one_at_a_time_per_server_results_and_errors(project: Project) -> None:
    ops = Operations(project, LiveProgress(), workers=2)
    ops.start()
    release = threading.Event()

    def slow(report: ProgressFn) -> CleanupResult:
        report(0, 1, 4)
        release.wait(10)
        return CleanupResult(removed=["a"])

    def broken(_report: ProgressFn) -> None:
        raise ReplicaError("the replica is gone", hint="resync it")

    def bug(_report: ProgressFn) -> None:
        raise RuntimeError("secret detail")

    try:
        first = ops.submit("cleanup", "web", {}, slow)
        deadline = time.monotonic() + 10
        while ops.get(first.id).progress != 0.25:  # live, from the running work's reports
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(ConflictError, match=f"busy with operation {first.id} \\(cleanup, running\\)"):
            ops.submit("cycle", "web", {}, slow)
        other = _ended(ops, ops.submit("cycle", "db", {}, broken))  # another server is not held up
        assert other.state == "failed" and other.result is None and other.error is not None
        assert (other.error.error, other.error.hint, other.error.type, other.error.exit_code) == \
            ("the replica is gone", "resync it", "ReplicaError", ReplicaError.exit_code)
        release.set()
        done = _ended(ops, first)
        assert done.state == "succeeded" and done.result == CleanupResult(removed=["a"]) and done.progress == 1.0
        crashed = _ended(ops, ops.submit("cycle", "web", {}, bug))  # the server is free again
        assert crashed.error is not None and crashed.error.type == "InternalError"
        assert "secret detail" not in crashed.error.error
        assert [o.id for o in ops.list()] == [crashed.id, other.id, first.id]
        assert [o.id for o in ops.list("db")] == [other.id]
        with pytest.raises(NotFoundError):
            ops.get(999)
    finally:
        release.set()
        ops.shutdown(5)


def test_start_marks_interrupted_rows_and_forgets_old_ones(project: Project) -> None:
    now = time.time()
    with project.db.unit() as u:
        for state, finished in (("running", None), ("queued", None), ("succeeded", now - KEEP_SECONDS - 1),
                                ("failed", now - 60)):
            u.connection.execute(insert(t.operations).values(kind="cycle", server="web", state=state, params="{}",
                                                             created=now - KEEP_SECONDS - 10, finished=finished))
    ops = Operations(project, LiveProgress(), workers=1)
    assert ops.start() == 2
    ops.shutdown(1)
    with project.db.unit() as u:
        rows = u.connection.execute(select(t.operations.c.id, t.operations.c.state)).all()
    assert [(r.id, r.state) for r in rows] == [(1, "failed"), (2, "failed"), (4, "failed")]
    marked = ops.get(1)
    assert marked.error is not None and marked.error.type == "Interrupted" and marked.finished is not None
    assert [e.message for e in project.db.events("web")][:2] == [
        "operation 2 (cycle) was interrupted: the service stopped while it ran",
        "operation 1 (cycle) was interrupted: the service stopped while it ran"]
