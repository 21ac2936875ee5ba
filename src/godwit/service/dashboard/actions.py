"""The dashboard's actions: each is asked for on a confirmation page, then started by a POST that
carries a form key derived from the session's token (a cross-site page cannot know it); the POST
leads to the operation's page, which server-sent events keep current until it ends."""

from __future__ import annotations

import hashlib
import hmac
from html import escape

from godwit.service.dashboard.page import page
from godwit.service.models import CleanupResult, CycleResultView, MigrationResultView, OperationView

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


def message(op: OperationView) -> str:
    """What to tell the user about an operation, as it stands."""
    label = ACTIONS[op.kind if op.kind != "cycle" else "enable"][0]
    if op.state in ("queued", "running"):
        done = f" ({round(op.progress * 100)}%)" if op.progress else ""
        return f"{label} of {op.server}: {op.state}{done}…"
    if op.error is not None:
        return f"{label} of {op.server} failed: {op.error.error}" + (f" ({op.error.hint})" if op.error.hint else "")
    res = op.result
    if isinstance(res, MigrationResultView) and op.kind == "test":
        return f"Test migration of {op.server} at recovery point {res.recovery_point} written: {', '.join(res.files)}"
    if isinstance(res, MigrationResultView):
        return f"{op.server} is migrated at recovery point {res.recovery_point}: {', '.join(res.files)}"
    if isinstance(res, CleanupResult):
        return f"Removed {len(res.removed)} file(s) of {op.server}'s test migrations."
    if op.kind == "cycle" and isinstance(res, CycleResultView):
        return f"Cycle {res.number} of {op.server} committed."
    return f"Replication of {op.server} is enabled."


OPERATION_SCRIPT = """
const box = document.getElementById("op-status");
const stream = new EventSource(box.dataset.stream);
stream.addEventListener("operation", (ev) => {
  const op = JSON.parse(ev.data);
  box.textContent = op.text;
  box.className = op.failed ? "error" : "";
  document.getElementById("op-state").textContent = op.state;
  if (op.done) { stream.close(); }
});
"""


def operation_page(project: str, op: OperationView) -> str:
    """The page an action leads to: the operation's state, kept current by server-sent events."""
    label = ACTIONS[op.kind if op.kind != "cycle" else "enable"][0]
    failed = ' class="error"' if op.state == "failed" else ""
    return page(f"godwit {project}: {label}", f"""<h1>{escape(label)}: {escape(op.server)}</h1>
<p>Operation {op.id}: <span id="op-state">{escape(op.state)}</span></p>
<p id="op-status" role="status"{failed} data-stream="/ui/operations/{op.id}/stream">{escape(message(op))}</p>
<p><a href="/ui">Back to the servers</a></p><script>{OPERATION_SCRIPT}</script>""")


def result_page(project: str, title: str, message: str, *, failed: bool = False) -> str:
    role = ' role="alert" class="error"' if failed else ' role="status"'
    return page(f"godwit {project}: {title}", f"""<h1>{escape(title)}</h1><p{role}>{escape(message)}</p>
<p><a href="/ui">Back to the servers</a></p>""")
