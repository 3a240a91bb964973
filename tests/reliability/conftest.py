"""Reliability tests start real processes; on a loaded 2-core machine an interpreter start
alone can take seconds, so each gets a wider pytest-timeout bound than the default (the
tests themselves take a few seconds to ~20 s normally)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))
