"""The dashboard's actions: each is asked for on a confirmation page, then done by a POST that
carries a form key derived from the session's token (a cross-site page cannot know it)."""

from __future__ import annotations

import hashlib
import hmac
from html import escape

from godwit.engine import lifecycle
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.service.dashboard.page import page
from godwit.service.progress import LiveProgress

#: action -> (button label, the question the confirmation page asks)
ACTIONS: dict[str, tuple[str, str]] = {
    "enable": ("Enable replication", "Enable replication of {name}? The initial cycle runs now if none is committed."),
    "test": ("Test migrate", "Write {name}'s disks at its latest recovery point under the export folder? "
                             "Replication goes on."),
    "cleanup": ("Clean up", "Remove the files of {name}'s test migrations?"),
    "planned": ("Planned migrate", "Migrate {name} now: a final cycle, apply, write its disks, and stop "
                                   "replicating it for good?"),
}


def form_key(secret: str) -> str:
    return hmac.new(secret.encode(), b"godwit-dashboard-form", hashlib.sha256).hexdigest()


def buttons(name: str) -> str:
    return "".join(f'<form method="get" action="/ui/servers/{escape(name)}/confirm" class="inline">'
                   f'<input type="hidden" name="action" value="{a}">'
                   f'<button type="submit" aria-label="{escape(label)}: {escape(name)}">{escape(label)}</button></form>'
                   for a, (label, _q) in ACTIONS.items())


def confirm_page(project: str, name: str, action: str, key: str) -> str:
    label, question = ACTIONS[action]
    return page(f"godwit {project}: {label}", f"""<h1>{escape(label)}: {escape(name)}</h1>
<p>{escape(question.format(name=name))}</p>
<form method="post" action="/ui/servers/{escape(name)}/{action}">
<input type="hidden" name="key" value="{key}">
<button type="submit">Confirm: {escape(label)}</button> <a href="/ui">Cancel</a></form>""")


def run(project: Project, name: str, action: str, export_dir_for: str, progress: LiveProgress) -> str:
    """Do the action; what to tell the user (a GodwitError propagates to the caller)."""
    from pathlib import Path

    if action == "enable":
        with progress.tracking(name) as report:
            lifecycle.start(project, name, progress=report)
        return f"Replication of {name} is enabled."
    if action == "test":
        res = migration.test_migration(project, name, out_dir=Path(export_dir_for))
        return f"Test migration of {name} at recovery point {res.recovery_point} written: {', '.join(res.files)}"
    if action == "cleanup":
        removed = migration.cleanup(project, name)
        return f"Removed {len(removed)} file(s) of {name}'s test migrations."
    res = migration.planned_migration(project, name, out_dir=Path(export_dir_for))
    return f"{name} is migrated at recovery point {res.recovery_point}: {', '.join(res.files)}"


def result_page(project: str, title: str, message: str, *, failed: bool = False) -> str:
    role = ' role="alert" class="error"' if failed else ' role="status"'
    return page(f"godwit {project}: {title}", f"""<h1>{escape(title)}</h1><p{role}>{escape(message)}</p>
<p><a href="/ui">Back to the servers</a></p>""")
