"""Who is calling: a bearer token resolved to its role and, for an appliance, its servers.

Every bad token (missing, malformed, unknown, expired, revoked, another project's) gets the same
401 with the same body, so a caller learns nothing about which tokens or projects exist. A valid
token whose role is too low gets 403. An appliance asking about a server that is not its own
gets the very 404 an unknown server gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from godwit.errors import NotFoundError
from godwit.project.project import Project
from godwit.state.appliances import Appliances
from godwit.state.tokens import Tokens, TokenView

RANK = {"reader": 1, "operator": 2, "admin": 3}
bearer = HTTPBearer(auto_error=False, description="an API token (`godwit token create`) or an appliance's token")


class Unauthorized(HTTPException):
    def __init__(self) -> None:
        super().__init__(401, "not authenticated", headers={"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Principal:
    token: TokenView
    servers: frozenset[str] | None  # an appliance's servers; None: every server of the project

    @property
    def role(self) -> str:
        return self.token.role

    def sees(self, server: str) -> bool:
        return self.servers is None or server in self.servers

    def check_server(self, server: str) -> None:
        """Raise the unknown server's own 404 for a server this caller may not see."""
        if not self.sees(server):
            raise NotFoundError(f"no server named {server!r}", hint="`godwit server list` shows the servers")


def project_of(request: Request) -> Project:
    project: Project = request.app.state.project
    return project


def principal(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer":
        raise Unauthorized()
    project = project_of(request)
    with project.db.unit() as u:
        token = Tokens(u.connection).authenticate(creds.credentials, project.config.name)
        servers = None
        if token is not None and token.role == "appliance":
            aid = Tokens(u.connection).appliance_id(token.id)
            servers = frozenset(Appliances(u.connection).by_id(aid).servers) if aid is not None else frozenset()
    if token is None:
        raise Unauthorized()
    return Principal(token, servers)


def require(minimum: str, *, appliance: bool = False) -> Callable[..., Principal]:
    """A dependency: a caller of at least role ``minimum`` (appliances too when ``appliance``)."""
    def check(who: Principal = Depends(principal)) -> Principal:
        if who.role == "appliance":
            if appliance:
                return who
        elif RANK[who.role] >= RANK[minimum]:
            return who
        raise HTTPException(403, f"this needs the {minimum} role")

    return check


def appliance_only(who: Principal = Depends(principal)) -> Principal:
    if who.role != "appliance":
        raise HTTPException(403, "this is for appliances")
    return who
