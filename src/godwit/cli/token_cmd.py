"""`godwit token`: API tokens of the service, and the appliances' registration key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from godwit.cli.common import JsonOpt, ProjectOpt, guarded, out, print_json, project_from
from godwit.errors import UsageError

app = typer.Typer(help="API tokens for `godwit serve` (stored hashed; a secret is shown once).",
                  no_args_is_help=True)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


@app.command("create")
@guarded
def create(
    name: Annotated[str, typer.Argument(help="What the token is for (shown in lists).")],
    role: Annotated[str, typer.Option(help="reader, operator or admin.")] = "reader",
    expires_in_days: Annotated[float | None, typer.Option(help="Lifetime in days (default: no expiry).")] = None,
    project: ProjectOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a token; its secret is printed this once (only a digest is kept)."""
    from godwit.state.tokens import Tokens

    if expires_in_days is not None and expires_in_days <= 0:
        raise UsageError("--expires-in-days must be positive")
    with project_from(project) as p, p.db.unit() as u:
        new = Tokens(u.connection).create(p.config.name, role, name,
                                          expires_in=expires_in_days * 86400 if expires_in_days else None)
    if json_:
        print_json(new.model_dump(mode="json"))
        return
    out.print(f"token {new.token.id} ({new.token.role}) for project {new.token.project}:")
    out.print(new.secret, markup=False)
    out.print("keep it now: it cannot be shown again")


@app.command("list")
@guarded
def list_(project: ProjectOpt = None, json_: JsonOpt = False) -> None:
    """List the tokens (never their secrets)."""
    from godwit.state.tokens import Tokens

    with project_from(project) as p, p.db.unit() as u:
        rows = Tokens(u.connection).all()
    if json_:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table("id", "name", "role", "appliance", "created", "expires", "revoked")
    for r in rows:
        table.add_row(str(r.id), r.name, r.role, r.appliance or "", _when(r.created), _when(r.expires),
                      _when(r.revoked))
    out.print(table)


@app.command("revoke")
@guarded
def revoke(token_id: Annotated[int, typer.Argument(help="The token's id (`godwit token list`).")],
           project: ProjectOpt = None) -> None:
    """Revoke a token: every later request with it gets 401."""
    from godwit.state.tokens import Tokens

    with project_from(project) as p, p.db.unit() as u:
        t = Tokens(u.connection).revoke(token_id)
    out.print(f"revoked token {t.id} ({t.name})", markup=False)


@app.command("registration-key")
@guarded
def registration_key(project: ProjectOpt = None) -> None:
    """Make a new registration key for appliances (the old one stops working); printed once."""
    from godwit.state.tokens import Tokens

    with project_from(project) as p, p.db.unit() as u:
        key = Tokens(u.connection).new_registration_key()
    out.print(key, markup=False)
