"""The pytest hooks of the test tiers (see tests/utils/tiers.py): the markers, `ends_engine`
tests last, and which test may start a vLLM engine."""

from __future__ import annotations

from typing import Any

import pytest
from _pytest.nodeid import NodeId

from tests.utils import server as server_module
from tests.utils.tiers import is_e2e

GROUP = "engine"
GROUP_BESIDE = "beside-engine"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: uses the real vLLM engine (CPU build) through a real server process"
    )
    config.addinivalue_line(
        "markers", "ends_engine: ends the engine it uses (runs last, after every other test)"
    )
    config.addinivalue_line(
        "markers",
        "beside_engine: an e2e test that starts no vLLM engine of the suite's (its own "
        "processes); under pytest-xdist it may run on another worker, beside the engine tests",
    )


# Fixtures of servers with an engine of their own (another checkpoint, LoRA and engine knobs):
# their tests run first, each folder's together, so that engine is gone before the session's
# shared engine starts (one engine at a time keeps the suite's memory down).
OWN_ENGINE_FIXTURES = ("knobs", "small_server")


def _engine_order(item: pytest.Item) -> tuple[int, int]:
    if item.get_closest_marker("ends_engine") is not None:
        return (2, 0)
    fixtures = getattr(item, "fixturenames", ())
    for rank, name in enumerate(OWN_ENGINE_FIXTURES):
        if is_e2e(item) and name in fixtures:
            return (0, rank)
    return (1, 0)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ends_engine") and not is_e2e(item):
            item.add_marker(pytest.mark.e2e)
        if is_e2e(item) and getattr(config.option, "loadgroup", False):  # an xdist worker
            _in_group(item, GROUP_BESIDE if item.get_closest_marker("beside_engine") else GROUP)
    items.sort(key=_engine_order)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    server_module.ENGINE_ALLOWED_FOR = item.nodeid if is_e2e(item) else None
    server_module.CURRENT_TEST = item.nodeid


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # fixtures torn down after the last test of a scope may stop (never start) engines
    server_module.ENGINE_ALLOWED_FOR = None


def _in_group(item: pytest.Item, group: str) -> None:
    """With pytest-xdist's `--dist loadgroup` (pyproject's addopts), every e2e test runs on one
    worker, in collection order: the session starts each engine once and engine death comes
    last. xdist's own `xdist_group` marker names the group by appending `@group` to the node id
    through `item._nodeid`, which pytest 9.2 no longer reads (node ids are `item._id`), so the
    marker alone silently spreads the group over every worker; the id is set here instead."""
    item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(item, "_id") and not item.nodeid.endswith(f"@{group}"):
        item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's loadgroup scheduler, reading the group wherever the node id carries it: pytest
    9.2 may print a parametrized id's group inside its brackets, where xdist's own reading
    (after the last "]") misses it and would spread the group over the workers."""
    if getattr(config.option, "dist", None) != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class EngineGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            for group in (GROUP_BESIDE, GROUP):
                if f"@{group}" in nodeid:
                    return group
            return nodeid

    return EngineGroups(config, log)
