"""A server for the Batch API at the HTTP edge, in process on the fake engine: what a batch
stores, who may see it, its statuses and files, cancelling and expiry are the server's own work
(what the engine answers in a batch is checked in test_batches_engine.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from openai import OpenAI

from tests.utils.in_process import InProcessServer, start_fake_server

KEYS = ("sk-batch-alice-71f0", "sk-batch-bob-2c9e")


@dataclass
class BatchingServer:
    running: InProcessServer
    audit_path: Path

    def client(self, key: str = KEYS[0]) -> OpenAI:
        return OpenAI(base_url=f"{self.running.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="package")
def batching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BatchingServer]:
    root = tmp_path_factory.mktemp("batching")
    running = start_fake_server(
        root / "server.log",
        "--state-dir",
        str(root / "state"),
        "--api-keys",
        ",".join(KEYS),
        "--audit-log-file",
        str(root / "audit.jsonl"),
        "--batch-max-in-flight",
        "2",
    )
    yield BatchingServer(running, root / "audit.jsonl")
    running.stop()


@pytest.fixture
def alice(batching: BatchingServer) -> Iterator[OpenAI]:
    with batching.client(KEYS[0]) as client:
        yield client


@pytest.fixture
def bob(batching: BatchingServer) -> Iterator[OpenAI]:
    with batching.client(KEYS[1]) as client:
        yield client
