"""What the network plane leaves in the state database: the last ``network check`` and the
data-plane path of each cycle. Small JSON values in the ``meta`` table, one key each."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from godwit.state import schema as t
from godwit.state.db import StateDB

CHECK_KEY = "network.check"


def _cycle_key(cycle_id: int) -> str:
    return f"network.cycle.{cycle_id}"


def _put(db: StateDB, key: str, value: dict[str, Any]) -> None:
    with db.tx() as c:
        c.execute(t.meta.delete().where(t.meta.c.key == key))
        c.execute(t.meta.insert().values(key=key, value=json.dumps(value)))


def _get(db: StateDB, key: str) -> dict[str, Any] | None:
    with db.tx() as c:
        raw = c.execute(select(t.meta.c.value).where(t.meta.c.key == key)).scalar()
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def record_check(db: StateDB, *, ok: bool, data_plane: str, failed: list[str]) -> None:
    _put(db, CHECK_KEY, {"at": time.time(), "ok": ok, "data_plane": data_plane, "failed": failed})


def last_check(db: StateDB) -> dict[str, Any] | None:
    """``{"at", "ok", "data_plane", "failed"}`` of the last ``network check``, or None."""
    return _get(db, CHECK_KEY)


def record_cycle_path(db: StateDB, cycle_id: int, path: dict[str, Any]) -> None:
    _put(db, _cycle_key(cycle_id), path)


def cycle_path(db: StateDB, cycle_id: int) -> dict[str, Any] | None:
    """The data-plane path a cycle took (see godwit.engine.gateway_state), or None if unrecorded."""
    return _get(db, _cycle_key(cycle_id))
