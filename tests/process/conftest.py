"""Tests that start real processes (servers, the CLI) and kill them: every one is marked
`process`, so CI runs them alone, after the in-process tests, where their heartbeats, timeouts
and throttling windows see an unloaded machine (.ci/run)."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.process)
