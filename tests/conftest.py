"""Shared fixtures. One Azurite per session comes from tests/azurite.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.project.project import Project, init

pytest_plugins = ["tests.azurite"] if importlib.util.find_spec("tests.azurite") else []


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = init(tmp_path / "proj")
    yield p
    p.close()
