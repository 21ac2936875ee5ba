"""Shared fixtures. One Azurite per session comes from tests/azurite.py, one PostgreSQL per session
from tests/postgres.py.

Tests marked ``both_databases`` run twice, once on SQLite and once on a fresh PostgreSQL database:
the ``project`` fixture writes the URL into ``[state] url``, and ``database_env`` exports it as
$GODWIT_DATABASE_URL for tests that drive the CLI in subprocesses.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.project.project import Project, init

pytest_plugins = [*(["tests.azurite"] if importlib.util.find_spec("tests.azurite") else []), "tests.postgres"]

DATABASES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "state_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_databases"):
        metafunc.parametrize("state_url", DATABASES, indirect=True)


@pytest.fixture
def state_url(request: pytest.FixtureRequest) -> str | None:
    """None for the default SQLite file of the project, else a fresh PostgreSQL database's URL."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        return None
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def database_env(state_url: str | None, monkeypatch: pytest.MonkeyPatch) -> str | None:
    if state_url is not None:
        monkeypatch.setenv("GODWIT_DATABASE_URL", state_url)
    return state_url


@pytest.fixture
def project(tmp_path: Path, state_url: str | None) -> Iterator[Project]:
    p = init(tmp_path / "proj", state_url=state_url)
    yield p
    p.close()
