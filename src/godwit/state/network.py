"""What the network plane leaves in the state database: the last ``network check`` and the
data-plane path of each cycle. Small JSON values in the ``meta`` table, one key each."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, select

from godwit.state import schema as t
from godwit.state.views import NetworkStatus

CHECK_KEY = "network.check"


def _cycle_key(cycle_id: int) -> str:
    return f"network.cycle.{cycle_id}"


class NetworkRecords:
    """The repository of network-plane records, on one unit's connection."""

    def __init__(self, c: Connection) -> None:
        self.c = c

    def _put(self, key: str, value: dict[str, Any]) -> None:
        self.c.execute(t.meta.delete().where(t.meta.c.key == key))
        self.c.execute(t.meta.insert().values(key=key, value=json.dumps(value)))

    def _get(self, key: str) -> dict[str, Any] | None:
        raw = self.c.execute(select(t.meta.c.value).where(t.meta.c.key == key)).scalar()
        try:
            value = json.loads(raw) if raw else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def record_check(self, *, ok: bool, data_plane: str, failed: list[str]) -> None:
        self._put(CHECK_KEY, {"at": time.time(), "ok": ok, "data_plane": data_plane, "failed": failed})

    def last_check(self) -> dict[str, Any] | None:
        """``{"at", "ok", "data_plane", "failed"}`` of the last ``network check``, or None."""
        return self._get(CHECK_KEY)

    def record_cycle_path(self, cycle_id: int, path: dict[str, Any]) -> None:
        self._put(_cycle_key(cycle_id), path)

    def cycle_path(self, cycle_id: int) -> dict[str, Any] | None:
        """The data-plane path a cycle took (godwit.engine.gateway_state), or None if unrecorded."""
        return self._get(_cycle_key(cycle_id))

    def status(self, cycle_id: int | None) -> NetworkStatus:
        """For ``replicate status``: the path of cycle ``cycle_id`` and the last network check."""
        path = (self.cycle_path(cycle_id) if cycle_id is not None else None) or {}
        check = self.last_check() or {}
        return NetworkStatus(path=path.get("path"), data_plane=path.get("data_plane"), proxied=path.get("proxied"),
                             bytes_sent=path.get("bytes_sent"), cycle=path.get("cycle"),
                             last_check=check.get("at"), last_check_ok=check.get("ok"))
