"""The assessment rules, shipped as data (``rules/<target>.toml``), and the findings they make."""

from __future__ import annotations

import string
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel

Status = Literal["ready", "warning", "not_ready"]
ORDER: dict[str, int] = {"ready": 0, "warning": 1, "not_ready": 2}


class Finding(BaseModel):
    rule: str
    status: Status
    title: str
    fix: str
    source: str


@dataclass(frozen=True)
class Rule:
    id: str
    status: Status
    title: str
    fix: str
    source: str

    def finding(self, **values: Any) -> Finding:
        return Finding(rule=self.id, status=self.status, title=_fill(self.title, values),
                       fix=_fill(self.fix, values), source=self.source)


class _Safe(string.Formatter):
    """Fills {names} from the guest's facts; a name the code did not give stays as written."""

    def get_value(self, key: int | str, args: Any, kwargs: Any) -> Any:
        return kwargs.get(key, "{" + str(key) + "}") if isinstance(key, str) else "?"

    def format_field(self, value: Any, format_spec: str) -> str:
        return str(value)


def _fill(template: str, values: dict[str, Any]) -> str:
    # Only plain {name} fields; guest text goes in as values, never as a template.
    return _Safe().vformat(template, (), values)


@dataclass(frozen=True)
class RuleBook:
    target: str
    rules: dict[str, Rule]
    limits: dict[str, Any]
    endorsed: dict[str, Any]

    def __getitem__(self, rule_id: str) -> Rule:
        return self.rules[rule_id]


@cache
def load(target: str = "azure") -> RuleBook:
    text = resources.files("godwit.assess").joinpath("rules", f"{target}.toml").read_text()
    data = tomllib.loads(text)
    rules = {r["id"]: Rule(r["id"], r["status"], r["title"], r["fix"], r["source"]) for r in data["rule"]}
    return RuleBook(target, rules, data["limits"], data["endorsed"])


def worst(findings: list[Finding]) -> Status:
    top: Status = "ready"
    for f in findings:
        if ORDER[f.status] > ORDER[top]:
            top = f.status
    return top
