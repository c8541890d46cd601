"""Small helpers for tests that run in either tier (tests/utils/tiers.py)."""

from __future__ import annotations

import os

import pytest

from tests.utils.in_process import InProcessServer
from tests.utils.server import RunningServer

# A test whose checks mean something on both engines: once on the fake (the server's own work,
# in the fast tier) and once on the real engine (e2e). Take the `tier` argument and ignore it.
IN_BOTH_TIERS = pytest.mark.parametrize(
    "tier", [pytest.param("fake"), pytest.param("engine", marks=pytest.mark.e2e)]
)


def server_pid(server: RunningServer | InProcessServer) -> int:
    """The process that serves `server`'s HTTP: its own, the shared engine's, or (in process,
    on the fake engine) this one."""
    process = getattr(server, "process", None)
    return process.pid if process is not None else os.getpid()
