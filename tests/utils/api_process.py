"""Which process serves a test's API, in either tier (tests/utils/tiers.py)."""

from __future__ import annotations

import os

from tests.utils.in_process import InProcessServer
from tests.utils.server import RunningServer


def api_pid(server: RunningServer | InProcessServer) -> int:
    """The server process (for a front end of the shared engine, the engine's process, which
    serves every front end); in process on the fake engine, this test process."""
    return os.getpid() if isinstance(server, InProcessServer) else server.process.pid
