"""`godwit network plan`: the cloud-side steps of the data path, ready to run.

:func:`make_plan` turns the options and the project's configuration into checked inputs and
renders them as an Azure CLI script (``az``; run with ``--create-role`` it creates the custom role alone), a Bicep file
(``bicep``) or the custom role definition alone (``role``, with the deployment operations Bicep needs).
"""

from __future__ import annotations

from godwit.checks.plan.inputs import MODES, PlanOptions, ProjectView, project_view, resolve
from godwit.checks.plan.render_az import render_az
from godwit.checks.plan.render_bicep import render_bicep
from godwit.checks.plan.role import render_role
from godwit.checks.plan.steps import Plan, build_plan

FORMATS = ("az", "bicep", "role")


def make_plan(opts: PlanOptions, project: ProjectView, fmt: str = "az") -> str:
    """The plan's text in ``fmt``; raises UsageError/ConfigError for any value that breaks a rule."""
    inputs = resolve(opts, project)
    if fmt == "role":
        return render_role(inputs, bicep=True)  # the role alone goes with the Bicep file
    plan = build_plan(inputs, bicep=fmt == "bicep")
    return render_bicep(plan) if fmt == "bicep" else render_az(plan)


__all__ = ["FORMATS", "MODES", "Plan", "PlanOptions", "ProjectView", "build_plan", "make_plan", "project_view",
           "resolve"]
