"""A plan as a bash script of Azure CLI commands, every value quoted with :func:`shlex.quote`."""

from __future__ import annotations

import shlex

from godwit import __version__
from godwit.checks.plan.regions import source
from godwit.checks.plan.steps import Arg, Command, Plan, Var

_INDENT = "    "


def comment(text: str) -> str:
    """One comment line; a line break in ``text`` could end the comment, so none survives."""
    return "# " + " ".join(text.split())


def _word(arg: Arg) -> str:
    # A captured value is expanded by the shell, always inside double quotes (one word, no globbing).
    return f'"${arg.name}"' if isinstance(arg, Var) else shlex.quote(arg)


def render_command(cmd: Command, indent: str = "") -> str:
    """``az …`` with each option on its own continued line, the way people read long commands."""
    lines: list[list[str]] = [["az"]]
    for arg in cmd.argv:
        if isinstance(arg, str) and arg.startswith("--"):
            lines.append([])
        lines[-1].append(_word(arg))
    text = f" \\\n{indent}{_INDENT}".join(" ".join(words) for words in lines)
    if cmd.capture is not None:
        text = f"{cmd.capture.name}=$({text})"
    if cmd.when is None:
        return indent + text
    test = "=" if cmd.when.equals else "!="
    inner = render_command(Command(cmd.argv, cmd.capture), indent + _INDENT)
    return (f'{indent}if [ "${cmd.when.var.name}" {test} {shlex.quote(cmd.when.value)} ]; then\n'
            f"{inner}\n{indent}fi")


def header(plan: Plan, how: str = "Review it, then run it with bash, logged in with az login.") -> list[str]:
    p = plan.inputs
    what = ("private endpoint" if p.mode == "private-endpoint" else "Microsoft peering")
    lines = [
        f"godwit network plan: {what} for cache account {p.account} ({p.blob_host})",
        f"Made by godwit {__version__}. {how}",
        f"Subscription {p.subscription}, resource group {p.resource_group}, location {p.location}.",
    ]
    lines += [f"Read: {o}." for o in p.origins]
    if p.peering is not None:
        lines.append(f"BGP communities: {source().line()}.")
    return [comment(line) for line in lines]


def render_az(plan: Plan) -> str:
    out = ["#!/usr/bin/env bash", *header(plan), "set -euo pipefail", ""]
    for n, step in enumerate(plan.steps):
        out.append(comment(f"Step {n}: {step.title}"))
        out += [comment(line) for line in step.why]
        if step.alone_with is None:
            out += [render_command(c) for c in step.commands]
        else:
            out.append(f'if [ "${{1:-}}" = {shlex.quote(step.alone_with)} ]; then')
            out += [render_command(c, _INDENT) for c in step.commands]
            out += [f"{_INDENT}exit 0", "fi"]
        out.append("")
    out.append(comment("Notes"))
    out += [comment(f"- {note}") for note in plan.notes]
    return "\n".join(out) + "\n"
