"""The acting commands through a service: start an operation, follow it on a Rich bar, and hand
back the same result types as the local command, so printing and `--json` are one code path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from godwit.cli.common import err
from godwit.cli.remote import ServiceClient, segment
from godwit.engine.cycle import CycleResult
from godwit.errors import UsageError

if TYPE_CHECKING:
    from godwit.migrate.migration import MigrationResult
    from godwit.service.models import OperationView

API = "/api/v1"
FORMATS = ("raw", "vhd", "qcow2")


@contextmanager
def fraction_bar(label: str, enabled: bool) -> Iterator[Callable[[float], None]]:
    """One bar for the operation (the service reports one fraction, not bytes per disk)."""
    if not enabled or not err.is_terminal:
        yield lambda _f: None
        return
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as prog:
        task = prog.add_task(label, total=1.0)
        yield lambda f: prog.update(task, completed=f)


def run(remote: ServiceClient, method: str, path: str, body: dict[str, Any] | None, label: str,
        show: bool) -> OperationView:
    """Start the operation and follow it to its end (its error raised as it was)."""
    op = remote.start(method, path, body)
    with fraction_bar(f"{label} (operation {op.id})", show) as bar:
        return remote.follow(op, bar)


def no_mbps(max_mbps: float | None) -> None:
    if max_mbps is not None:
        raise UsageError("--max-mbps is not taken through --service",
                         hint="the service's own schedule applies (replication.max_mbps of its project)")


def enable(remote: ServiceClient, name: str, show: bool) -> CycleResult | None:
    op = run(remote, "PUT", f"{API}/replications/{segment(name)}", {"enabled": True}, f"{name} initial", show)
    return CycleResult(**op.result.model_dump()) if op.result is not None else None


def cycle(remote: ServiceClient, name: str, show: bool) -> CycleResult:
    op = run(remote, "POST", f"{API}/replications/{segment(name)}/cycles", None, f"{name} delta", show)
    assert op.result is not None
    return CycleResult(**op.result.model_dump())


def folder(out_dir: Path | None) -> str | None:
    """`--out` through a service names a folder under the service's export directory, not a path."""
    from godwit.service.models import FOLDER

    if out_dir is None:
        return None
    import re

    text = str(out_dir)
    if not re.fullmatch(FOLDER, text):
        raise UsageError(f"through --service, --out names a folder under the service's export directory, "
                         f"got {text[:60]!r}", hint="give one plain name such as web-test1, or leave --out out")
    return text


def migrate(remote: ServiceClient, name: str, *, test: bool, recovery_point: str, fmt: str,
            out_dir: Path | None, json_: bool) -> MigrationResult:
    from godwit.migrate.migration import MigrationResult

    if fmt not in FORMATS:
        raise UsageError(f"through --service the format is one of {', '.join(FORMATS)}, got {fmt[:20]!r}")
    body: dict[str, Any] = {"format": fmt, "folder": folder(out_dir)}
    if test:
        body["recovery_point"] = recovery_point
    kind = "test" if test else "planned"
    op = run(remote, "POST", f"{API}/migrations/{segment(name)}/{kind}", body, f"{name} {kind} migration", not json_)
    assert op.result is not None
    return MigrationResult(**op.result.model_dump())


def cleanup(remote: ServiceClient, name: str) -> list[str]:
    op = run(remote, "POST", f"{API}/migrations/{segment(name)}/cleanup", None, f"{name} cleanup", False)
    assert op.result is not None
    removed: list[str] = op.result.model_dump()["removed"]
    return removed


def refuse(option: str, given: object) -> None:
    """An option the API does not offer (a shutdown command would be remote shell execution)."""
    if given not in (None, False):
        raise UsageError(f"{option} is not offered through --service", hint="run this command where the project is")
