"""API tokens (admin only): list, create (the secret is in this one answer), revoke."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from godwit.project.project import Project
from godwit.service.auth import Principal, project_of, require
from godwit.service.models import TokenRequest
from godwit.service.routers import API, AUTHED, errors
from godwit.state.tokens import NewToken, Tokens, TokenView

router = APIRouter(prefix=f"{API}/tokens", tags=["tokens"], responses=AUTHED)


@router.get("")
def list_tokens(_who: Principal = Depends(require("admin")), project: Project = Depends(project_of)) -> list[TokenView]:
    with project.db.unit() as u:
        return Tokens(u.connection).all()


@router.post("", status_code=201)
def create_token(body: TokenRequest, _who: Principal = Depends(require("admin")),
                 project: Project = Depends(project_of)) -> NewToken:
    with project.db.unit() as u:
        return Tokens(u.connection).create(project.config.name, body.role, body.name,
                                           expires_in=body.expires_in_days * 86400 if body.expires_in_days else None)


@router.delete("/{token_id}", responses=errors(404))
def revoke_token(token_id: int = Path(ge=1), _who: Principal = Depends(require("admin")),
                 project: Project = Depends(project_of)) -> TokenView:
    with project.db.unit() as u:
        return Tokens(u.connection).revoke(token_id)
