"""The pytest hooks of the test tiers (see tests/utils/tiers.py): the markers, `ends_engine`
tests last, and which test may start a vLLM engine."""

from __future__ import annotations

import pytest

from tests.utils import server as server_module
from tests.utils.tiers import is_e2e


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: uses the real vLLM engine (CPU build) through a real server process"
    )
    config.addinivalue_line(
        "markers", "ends_engine: ends the engine it uses (runs last, after every other test)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ends_engine") and not is_e2e(item):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: item.get_closest_marker("ends_engine") is not None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    server_module.ENGINE_ALLOWED_FOR = item.nodeid if is_e2e(item) else None
    server_module.CURRENT_TEST = item.nodeid


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # fixtures torn down after the last test of a scope may stop (never start) engines
    server_module.ENGINE_ALLOWED_FOR = None
