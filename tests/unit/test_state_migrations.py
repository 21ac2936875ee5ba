"""The Alembic revisions and schema.py must describe the same database."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from godwit.errors import ProjectError
from godwit.state import StateDB
from godwit.state.schema import metadata


def test_migrations_match_the_models(tmp_path: Path) -> None:
    db = StateDB(f"sqlite:///{tmp_path / 's.db'}")
    with db.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    db.close()
    assert diff == [], f"schema.py and the migrations disagree: {diff}"


def test_reopening_is_a_no_op_and_keeps_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    db = StateDB(url)
    db.event("info", "kept")
    db.close()
    db = StateDB(url)
    assert [e.message for e in db.events()] == ["kept"]
    db.close()


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    StateDB(url).close()
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("update alembic_version set version_num = '9999_future'"))
    engine.dispose()
    with pytest.raises(ProjectError, match="newer godwit"):
        StateDB(url)


def test_head_revision_constant_is_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import godwit.state.db as dbmod

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(dbmod.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == dbmod.HEAD_REVISION
