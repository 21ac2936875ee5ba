"""What every command shares: the project option, the consoles, error printing, JSON output.

The consoles never parse markup: names, paths and messages are user text, and Rich would read
``[/]`` in a disk path as a closing tag (and fail). Styled output is built with :func:`styled`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from godwit.errors import GodwitError, UsageError
from godwit.project.project import Project, open_project

out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

ProjectOpt = Annotated[
    Path | None,
    typer.Option("--project", "-p", help="Project folder (default: $GODWIT_PROJECT or the current folder).",
                 show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

F = TypeVar("F", bound=Callable[..., Any])


def styled(*parts: str | tuple[str, str]) -> Text:
    """Plain strings and (text, style) pairs as one line; no part is ever read as markup."""
    return Text.assemble(*parts)


def error_json(exc: GodwitError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}}


def fail(exc: GodwitError, *, json_: bool = False) -> typer.Exit:
    """Print ``exc`` as one line and its hint (and as JSON on stdout under --json); the exit."""
    err.print(styled(("godwit: error: ", "bold red"), exc.message.replace("\n", "\\n")))
    if exc.hint:
        err.print(styled(("hint: ", "yellow"), exc.hint))
    if json_:
        print_json(error_json(exc))
    return typer.Exit(exc.exit_code)


def bounded(value: float, option: str, low: float, high: float) -> float:
    """A finite number within [low, high], or a usage error naming the option (one validator for
    every numeric option: huge integers overflow SQLite, tiny rates sleep forever, NaN is no cap)."""
    if value != value or not low <= value <= high:  # NaN fails every comparison
        raise UsageError(f"{option} must be between {low:g} and {high:g}, got {value!r}")
    return value


@contextmanager
def project_from(path: Path | None) -> Iterator[Project]:
    p = open_project(path if path is not None else Path(os.environ.get("GODWIT_PROJECT") or "."))
    try:
        yield p
    finally:
        p.close()


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d"


def guarded(fn: F) -> F:
    """Turn a GodwitError from a command into its message, hint and exit code (no traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GodwitError as exc:
            raise fail(exc, json_=bool(kwargs.get("json_"))) from None

    return wrapper  # type: ignore[return-value]
