"""Fixtures for the operator-facing tests: a real transmitter (SQLite) and a push sink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import free_port
from tests.transmitter.conftest import Server, make_settings, running, sink  # noqa: F401 (fixture)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    settings = make_settings(tmp_path, {"database_url": f"sqlite:///{tmp_path / 'tx.db'}"}, port)
    with running(settings, port) as srv:
        yield srv
