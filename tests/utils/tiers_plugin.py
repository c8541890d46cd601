"""The pytest hooks of the test tiers (see tests/utils/tiers.py): the markers, `ends_engine`
tests last, and which test may start a vLLM engine."""

from __future__ import annotations

import pytest
from _pytest.nodeid import NodeId

from tests.utils import server as server_module
from tests.utils.tiers import is_e2e

GROUP = "engine"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: uses the real vLLM engine (CPU build) through a real server process"
    )
    config.addinivalue_line(
        "markers", "ends_engine: ends the engine it uses (runs last, after every other test)"
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ends_engine") and not is_e2e(item):
            item.add_marker(pytest.mark.e2e)
        if is_e2e(item) and config.getvalue("loadgroup"):
            _in_engine_group(item)
    items.sort(key=lambda item: item.get_closest_marker("ends_engine") is not None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    server_module.ENGINE_ALLOWED_FOR = item.nodeid if is_e2e(item) else None
    server_module.CURRENT_TEST = item.nodeid


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # fixtures torn down after the last test of a scope may stop (never start) engines
    server_module.ENGINE_ALLOWED_FOR = None


def _in_engine_group(item: pytest.Item) -> None:
    """With pytest-xdist's `--dist loadgroup` (pyproject's addopts), every e2e test runs on one
    worker, in collection order: the session starts each engine once and engine death comes
    last. xdist's own `xdist_group` marker names the group by appending `@group` to the node id
    through `item._nodeid`, which pytest 9.2 no longer reads (node ids are `item._id`), so the
    marker alone silently spreads the group over every worker; the id is set here instead."""
    item.add_marker(pytest.mark.xdist_group(GROUP))
    if hasattr(item, "_id") and not item.nodeid.endswith(f"@{GROUP}"):
        item._id = NodeId.parse(f"{item.nodeid}@{GROUP}")
