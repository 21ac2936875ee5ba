"""Appliances: register with the project's registration key (rate-limited), heartbeat, list."""

from __future__ import annotations

import math

from fastapi import APIRouter, Depends, HTTPException, Request

from godwit.project.project import Project
from godwit.service.auth import Principal, Unauthorized, appliance_only, project_of, require
from godwit.service.models import Registration, RegistrationRequest
from godwit.service.routers import API, AUTHED, errors
from godwit.state.appliances import Appliances, ApplianceView
from godwit.state.tokens import Tokens

router = APIRouter(prefix=f"{API}/appliances", tags=["appliances"])


@router.post("/register", status_code=201, responses=errors(401, 404, 429))
def register(request: Request, body: RegistrationRequest, project: Project = Depends(project_of)) -> Registration:
    """Trade the registration key for the appliance's own token, limited to ``servers``.

    Registering again under the same name revokes the appliance's earlier tokens.
    """
    client = request.client.host if request.client else "?"
    wait = request.app.state.registrations.retry_after(client)
    if wait > 0:
        raise HTTPException(429, "too many registration attempts", headers={"Retry-After": str(math.ceil(wait))})
    with project.db.unit() as u:
        tokens = Tokens(u.connection)
        if not tokens.registration_key_matches(body.key):
            raise Unauthorized()
        server_ids = [u.servers.get(name).id for name in body.servers]  # a wrong name: 404, nothing kept
        appliance = Appliances(u.connection).register(body.name, server_ids)
        tokens.revoke_appliance(appliance.id)
        new = tokens.create(project.config.name, "appliance", body.name, appliance_id=appliance.id)
        u.events.add("info", f"appliance {body.name} registered for {len(server_ids)} server(s)")
    return Registration(appliance=appliance, token=new.token, secret=new.secret)


@router.post("/heartbeat", responses=AUTHED)
def heartbeat(who: Principal = Depends(appliance_only), project: Project = Depends(project_of)) -> ApplianceView:
    with project.db.unit() as u:
        aid = Tokens(u.connection).appliance_id(who.token.id)
        assert aid is not None  # an appliance token always names its appliance
        return Appliances(u.connection).heartbeat(aid)


@router.get("", responses=AUTHED)
def list_appliances(_who: Principal = Depends(require("reader")),
                    project: Project = Depends(project_of)) -> list[ApplianceView]:
    with project.db.unit() as u:
        return Appliances(u.connection).all()
