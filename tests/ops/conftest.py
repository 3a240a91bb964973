"""Fixtures for the operator-facing tests: a real transmitter (SQLite) and a push sink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import free_port
from tests.transmitter.conftest import (  # noqa: F401 (fixtures)
    Server,
    db_config,
    db_kind,
    make_settings,
    running,
    sink,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    settings = make_settings(tmp_path, {"database_url": f"sqlite:///{tmp_path / 'tx.db'}"}, port)
    with running(settings, port) as srv:
        yield srv


@pytest.fixture
def any_db_server(tmp_path: Path, db_config: dict[str, Any]) -> Iterator[Server]:  # noqa: F811
    """The transmitter on SQLite and on PostgreSQL (a schema of its own)."""
    port = free_port()
    with running(make_settings(tmp_path, db_config, port), port) as srv:
        yield srv
