"""Test tiers: `e2e` tests use the real vLLM engine; every other test runs without one.

- A test (or module, with `pytestmark`) marked `e2e` gets the real engine behind its server
  fixtures: one shared engine process (tests/utils/shared_engine.py) for every front-end
  configuration with the same engine arguments.
- Any other test gets the same fixtures served in process on the fake engine
  (tests/utils/fake_engine.py, tests/utils/in_process.py), and may not start a vLLM engine:
  `tests.utils.server` refuses to, naming the test, so `pytest -m "not e2e"` never waits for one.
- Tests marked `ends_engine` end the engine they use (engine death); they run last, so no
  other test pays for a restart.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def is_e2e(node: pytest.Item | pytest.Collector) -> bool:
    return node.get_closest_marker("e2e") is not None


def pick(request: pytest.FixtureRequest, real: str, fake: str) -> Any:
    """The fixture `real` for an e2e test, `fake` for any other."""
    return request.getfixturevalue(real if is_e2e(request.node) else fake)


# A test whose checks mean something on both engines: once on the fake (the server's own work,
# in the fast tier) and once on the real engine (e2e). Take the `tier` argument and ignore it.
IN_BOTH_TIERS = pytest.mark.parametrize(
    "tier", [pytest.param("fake"), pytest.param("engine", marks=pytest.mark.e2e)]
)


def api_pid(server: Any) -> int:
    """The process serving a test server's API: its own process, or for a front end of the
    shared engine the engine's process (which serves every front end); in process on the fake
    engine, this test process."""
    process = getattr(server, "process", None)
    return process.pid if process is not None else os.getpid()
