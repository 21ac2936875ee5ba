"""One result of ``godwit doctor``: a check's name, pass / warn / fail, what was seen, the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def passed(name: str, detail: str) -> Finding:
    return Finding(name, "pass", detail)


def warned(name: str, detail: str, fix: str) -> Finding:
    return Finding(name, "warn", detail, fix)


def failed(name: str, detail: str, fix: str) -> Finding:
    return Finding(name, "fail", detail, fix)
