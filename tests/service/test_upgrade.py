"""Revision 0011 upgrades a database of the first schema in place and keeps its rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from godwit.state import StateDB
from godwit.state.tokens import Tokens
from godwit.state.upgrade import _alembic_config


@pytest.mark.both_databases
def test_an_0001_database_upgrades_and_keeps_its_servers(tmp_path: Path, state_url: str | None) -> None:
    url = state_url or f"sqlite:///{tmp_path}/old.db"
    engine = create_engine(url)
    with engine.begin() as c:
        command.upgrade(_alembic_config(c), "0001")
        c.execute(text("INSERT INTO servers (uid, name, state, created) VALUES ('u1', 'old', 'replicating', 1)"))
    engine.dispose()
    db = StateDB(url)
    try:
        assert [s.name for s in db.servers()] == ["old"]
        with db.unit() as u:
            assert {"tokens", "appliances", "appliance_servers"} <= set(inspect(u.connection).get_table_names())
            secret = Tokens(u.connection).create("p", "reader", "after-upgrade").secret
        with db.unit() as u:
            assert Tokens(u.connection).authenticate(secret, "p") is not None
    finally:
        db.close()
