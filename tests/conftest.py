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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules with slow end-to-end tests, and the network tests (tests/netns.py), run first.

    ``make test`` runs ``-n auto --dist loadscope --no-loadscope-reorder`` (pytest-xdist, Makefile):
    a module's tests stay together on one worker, in their order (some share a module-scoped
    project and build on each other), and modules are handed out in this order, so that the longest
    do not start last and hold the session's end. Without xdist only the order of modules changes."""
    def module(item: pytest.Item) -> str:
        return item.nodeid.split("::", 1)[0]

    first = {module(item) for item in items if item.get_closest_marker("slow") or item.get_closest_marker("network")}
    items.sort(key=lambda item: module(item) not in first)  # stable: the order within a module stays


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
