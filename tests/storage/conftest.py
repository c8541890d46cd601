"""A server that stores responses by default, with two API keys and an audit log, in process on
the fake engine: what is stored, who may read it, pages, retention and audit are the server's
own work (what the engine answers is checked in tests/responses/test_stored_responses.py). And
the folder's PostgreSQL: one server per worker for the whole folder (tests that need a clean
database take `postgres.create_database(name)`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.utils.in_process import InProcessServer, start_fake_server
from tests.utils.postgres import PostgresServer

KEYS = ("sk-store-alice-51c2", "sk-store-bob-8e07")


@dataclass
class StoringServer:
    running: InProcessServer
    state_dir: Path
    audit_path: Path

    def client(self, key: str = KEYS[0]) -> httpx.Client:
        return httpx.Client(
            base_url=self.running.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )


@pytest.fixture(scope="package")
def storing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoringServer]:
    root = tmp_path_factory.mktemp("storing")
    running = start_fake_server(
        root / "server.log",
        "--store-responses",
        "--state-dir",
        str(root / "state"),
        "--api-keys",
        ",".join(KEYS),
        "--audit-log-file",
        str(root / "audit.jsonl"),
    )
    yield StoringServer(running, root / "state", root / "audit.jsonl")
    running.stop()


@pytest.fixture
def alice(storing: StoringServer) -> Iterator[httpx.Client]:
    with storing.client(KEYS[0]) as client:
        yield client


@pytest.fixture
def bob(storing: StoringServer) -> Iterator[httpx.Client]:
    with storing.client(KEYS[1]) as client:
        yield client


@pytest.fixture(scope="package")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
