"""A server for the Files API, in process on the fake engine (files need no engine): two API
keys, an audit log, and an upload cap small enough to pass in a test (--max-file-bytes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.utils.in_process import InProcessServer, start_fake_server

KEYS = ("sk-files-alice-3f1a", "sk-files-bob-92cd")
MAX_FILE_BYTES = 16 * 1024 * 1024
# Below the uploads the tests make: the files route has a cap of its own.
MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass
class FilesServer:
    running: InProcessServer
    state_dir: Path
    audit_path: Path

    def client(self, key: str = KEYS[0]) -> httpx.Client:
        return httpx.Client(
            base_url=self.running.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )

    def sdk(self, key: str = KEYS[0]) -> OpenAI:
        return OpenAI(base_url=f"{self.running.base_url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="package")
def files_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilesServer]:
    root = tmp_path_factory.mktemp("files")
    running = start_fake_server(
        root / "server.log",
        "--state-dir",
        str(root / "state"),
        "--api-keys",
        ",".join(KEYS),
        "--audit-log-file",
        str(root / "audit.jsonl"),
        "--max-file-bytes",
        str(MAX_FILE_BYTES),
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
    )
    yield FilesServer(running, root / "state", root / "audit.jsonl")
    running.stop()


@pytest.fixture
def alice(files_server: FilesServer) -> Iterator[httpx.Client]:
    with files_server.client(KEYS[0]) as client:
        yield client


@pytest.fixture
def bob(files_server: FilesServer) -> Iterator[httpx.Client]:
    with files_server.client(KEYS[1]) as client:
        yield client
