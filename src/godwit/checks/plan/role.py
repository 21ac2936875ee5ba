"""The reference article's permission table as a least-privilege Azure custom role definition.

The table (data/role_permissions.json) maps each use the article lists to the operations Azure
publishes; a plan's role takes the rows of its mode (and the deployment rows for Bicep), scoped to
the resource groups the plan touches and nothing wider.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from godwit.checks.plan.inputs import PlanInputs


@cache
def _table() -> dict[str, Any]:
    raw = resources.files("godwit.checks.plan").joinpath("data", "role_permissions.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(raw)
    return data


def role_name(plan: PlanInputs) -> str:
    # Role names are unique in a tenant: one per cache account and mode.
    return f"godwit network {plan.mode} {plan.account}"


def scopes(plan: PlanInputs) -> list[str]:
    groups = [plan.resource_group]
    if plan.endpoint is not None:
        groups.append(plan.endpoint.network_resource_group)
    if plan.peering is not None:
        groups.append(plan.peering.circuit_resource_group)
    return [plan.rg_id(g) for g in dict.fromkeys(groups)]


def actions(mode: str, *, bicep: bool) -> list[str]:
    wanted = {mode, "bicep"} if bicep else {mode}
    out: list[str] = []
    for row in _table()["rows"]:
        if wanted & set(row["modes"]):
            out += row["actions"]
    return list(dict.fromkeys(out))


def role_definition(plan: PlanInputs, *, bicep: bool = False) -> dict[str, Any]:
    """The JSON document ``az role definition create --role-definition`` takes."""
    src = _table()["source"]
    return {
        "Name": role_name(plan),
        "IsCustom": True,
        "Description": (f"godwit: set up the {plan.mode} data path of cache account {plan.account} "
                        f"(from the permission table of {src['url']})"),
        "Actions": actions(plan.mode, bicep=bicep),
        "NotActions": [],
        "DataActions": [],
        "NotDataActions": [],
        "AssignableScopes": scopes(plan),
    }


def render_role(plan: PlanInputs, *, bicep: bool = False) -> str:
    return json.dumps(role_definition(plan, bicep=bicep), indent=2, ensure_ascii=False) + "\n"
