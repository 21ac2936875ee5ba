"""What one finding of ``godwit network check`` is, and the report they make.

Every check has a stable ``id`` (documented in docs/configuration.md, "network check"), a status
(``pass``, ``warn`` or ``fail``), what was seen (``message``) and, unless it passed, what to do
(``fix``). The report's JSON shape is ``{"ok", "data_plane", "checks": [{"id", "status",
"message", "fix"}]}``; ``ok`` is false when any check failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    id: str
    status: Status
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}


def passed(id_: str, message: str) -> Check:
    return Check(id_, "pass", message)


def warned(id_: str, message: str, fix: str) -> Check:
    return Check(id_, "warn", message, fix)


def failed(id_: str, message: str, fix: str) -> Check:
    return Check(id_, "fail", message, fix)


@dataclass
class NetworkReport:
    data_plane: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def get(self, id_: str) -> Check | None:
        return next((c for c in self.checks if c.id == id_), None)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "data_plane": self.data_plane, "checks": [c.as_dict() for c in self.checks]}
