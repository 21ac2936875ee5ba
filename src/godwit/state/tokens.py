"""API tokens of the service: created with a role, stored as a digest, revoked, never shown again.

A token is ``gw_`` + 43 URL-safe characters (256 random bits). Only its SHA-256 digest is stored:
a stolen database or log gives nobody a usable token. Because the secret is random and long, a
plain digest is as strong as a slow password hash would be, and a lookup by digest is one indexed
query. ``authenticate`` answers None for every kind of bad token alike (missing, unknown, expired,
revoked, another project's): the caller must not tell them apart either.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, select

from godwit.errors import NotFoundError, UsageError
from godwit.state import schema as t
from godwit.state.models import fits_int64

Role = Literal["reader", "operator", "admin", "appliance"]
ROLES: tuple[str, ...] = ("reader", "operator", "admin")  # what people may create; appliances register
PREFIX = "gw_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")  # as the API's NAME: plain text in any table
REGISTRATION_KEY = "service/registration-key-digest"  # the `meta` row holding the key's digest


class TokenView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    name: str
    project: str
    role: Role
    appliance: str | None
    created: float
    expires: float | None
    revoked: float | None


class NewToken(BaseModel):
    """What creating a token returns: the secret, shown this once and never stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: TokenView
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def _view(r: Any) -> TokenView:
    return TokenView(id=r.id, name=r.name, project=r.project, role=r.role, appliance=r.appliance,
                     created=r.created, expires=r.expires, revoked=r.revoked)


class Tokens:
    """The tokens table, on one unit of work's connection."""

    def __init__(self, c: Connection) -> None:
        self.c = c

    def _select(self) -> Any:
        return (select(t.tokens, t.appliances.c.name.label("appliance"))
                .select_from(t.tokens.outerjoin(t.appliances, t.tokens.c.appliance_id == t.appliances.c.id)))

    def create(self, project: str, role: str, name: str, *, expires_in: float | None = None,
               appliance_id: int | None = None) -> NewToken:
        if role not in ROLES and not (role == "appliance" and appliance_id is not None):
            raise UsageError(f"unknown role {role!r}", hint="one of: " + ", ".join(ROLES))
        if not NAME_RE.match(name):
            raise UsageError(f"a token's name must be 1 to 63 letters, digits, '.', '_' or '-', not {name!r}")
        if expires_in is not None and not 0 < expires_in < 100 * 365 * 86400:
            raise UsageError("a token's lifetime must be positive and under 100 years")
        secret = new_secret()
        now = time.time()
        tid = self.c.execute(t.tokens.insert().values(
            name=name, project=project, role=role, digest=digest(secret), appliance_id=appliance_id,
            created=now, expires=(now + expires_in) if expires_in else None)).inserted_primary_key[0]  # type: ignore[index]
        return NewToken(token=self.get(int(tid)), secret=secret)

    def all(self) -> list[TokenView]:
        return [_view(r) for r in self.c.execute(self._select().order_by(t.tokens.c.id))]

    def get(self, token_id: int) -> TokenView:
        r = self.c.execute(self._select().where(t.tokens.c.id == token_id)).first() if fits_int64(token_id) else None
        if r is None:
            raise NotFoundError(f"no token with id {token_id}", hint="`godwit token list` shows them")
        return _view(r)

    def revoke(self, token_id: int) -> TokenView:
        self.get(token_id)
        self.c.execute(t.tokens.update().where(t.tokens.c.id == token_id, t.tokens.c.revoked.is_(None))
                       .values(revoked=time.time()))
        return self.get(token_id)

    def revoke_appliance(self, appliance_id: int) -> None:
        self.c.execute(t.tokens.update().where(t.tokens.c.appliance_id == appliance_id, t.tokens.c.revoked.is_(None))
                       .values(revoked=time.time()))

    def authenticate(self, secret: str | None, project: str) -> TokenView | None:
        """The live token of ``project`` with this secret, or None for any other case."""
        if not secret or not secret.startswith(PREFIX) or len(secret) > 128:
            return None
        d = digest(secret)
        r = self.c.execute(self._select().where(t.tokens.c.digest == d)).first()
        if r is None or not hmac.compare_digest(r.digest, d):
            return None
        now = time.time()
        if r.project != project or r.revoked is not None or (r.expires is not None and r.expires <= now):
            return None
        return _view(r)

    def appliance_id(self, token_id: int) -> int | None:
        r = self.c.execute(select(t.tokens.c.appliance_id).where(t.tokens.c.id == token_id)).scalar()
        return int(r) if r is not None else None

    # -- the project's registration key (appliances present it once to get a token) -------------

    def new_registration_key(self) -> str:
        """A fresh key (the old one stops working); only its digest is kept."""
        key = "gwreg_" + secrets.token_urlsafe(32)
        self.c.execute(t.meta.delete().where(t.meta.c.key == REGISTRATION_KEY))
        self.c.execute(t.meta.insert().values(key=REGISTRATION_KEY, value=digest(key)))
        return key

    def registration_key_matches(self, key: str) -> bool:
        stored = self.c.execute(select(t.meta.c.value).where(t.meta.c.key == REGISTRATION_KEY)).scalar()
        return stored is not None and bool(key) and len(key) <= 128 and hmac.compare_digest(str(stored), digest(key))
