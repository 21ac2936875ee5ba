"""Rich progress bars per disk: bytes, MB/s, ETA. Quiet when output is not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from godwit.cli.common import err
from godwit.engine.cycle import ProgressFn


@contextmanager
def disk_progress(label: str, enabled: bool = True) -> Iterator[ProgressFn]:
    if not enabled or not err.is_terminal:
        yield lambda _i, _d, _t: None
        return
    tasks: dict[int, TaskID] = {}
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(binary_units=True),
                  TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=False) as prog:

        def update(idx: int, done: int, total: int) -> None:
            if idx not in tasks:
                tasks[idx] = prog.add_task(f"{label} disk{idx}", total=total)
            prog.update(tasks[idx], completed=done, total=total)

        yield update
