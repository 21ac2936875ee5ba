"""Every test here runs against a real `godwit serve`, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.harness import Service, create_token, make_project, running


@pytest.fixture
def service_project(tmp_path: Path, state_url: str | None) -> Path:
    return make_project(tmp_path, state_url, servers=("web", "db"))


@pytest.fixture
def service(service_project: Path) -> Iterator[Service]:
    with running(service_project, "--mover-interval", "0.3") as svc:
        yield svc


@pytest.fixture
def admin(service_project: Path) -> str:
    return create_token(service_project, "admin", "admin")
