"""Shared fixtures: one real server process (demo model, vLLM CPU engine) per test session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.utils.server import RunningServer, start_demo_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    running = start_demo_server(log_path)
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        yield http
