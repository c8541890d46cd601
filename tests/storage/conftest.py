"""A server that stores responses by default and runs batches (two lines at a time), with two API
keys and an audit log, in process on the fake engine: what is stored, who may read it, pages,
retention, batches and audit are the server's own work (what the engine answers is checked in
tests/responses/test_stored_responses.py and tests/batches). And the folder's PostgreSQL: one
server per worker for the whole folder (tests that need a clean database take
`postgres.create_database(name)`).

For the fault and load tests, servers in processes of their own (they are killed, run as two
replicas, or given a disk of their own): the launcher of fake-engine server processes
(tests/utils/fake_process), and for each database a server storing on it that those tests
share (started again after a test kills it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.utils.fake_process import Launcher
from tests.utils.in_process import InProcessServer, start_fake_server
from tests.utils.postgres import PostgresServer
from tests.utils.server import Restartable, RunningServer
from tests.utils.stored_databases import PostgresState, SqliteState, StoredState

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
        "--batch-max-in-flight",
        "2",
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


@pytest.fixture(scope="package")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    # it warms up in the background (while PostgreSQL starts, for one)
    running = Launcher(tmp_path_factory.mktemp("launcher") / "launcher.log")
    yield running
    running.close()


@dataclass
class Backend:
    """A database and the shared server that stores on it."""

    state: StoredState
    args: tuple[str, ...]  # the server's flags naming the database
    servers: Restartable
    started: list[RunningServer]

    @property
    def kind(self) -> str:
        return self.state.kind

    def server(self) -> RunningServer:
        """The shared server, started again if a test killed it."""
        return self.servers.get()

    def kill(self) -> None:
        """The tests are done with its servers: no drain."""
        for running in self.started:
            running.process.kill()


def start_backend(
    launcher: Launcher, state: StoredState, args: tuple[str, ...], folder: Path
) -> Backend:
    started: list[RunningServer] = []

    def start() -> RunningServer:
        log = folder / f"server-{len(started)}.log"
        started.append(launcher.start(log, "--store-responses", *args))
        return started[-1]

    return Backend(state, args, Restartable(start), started)


@pytest.fixture(scope="package", params=["postgresql", "sqlite"])
def backend(
    request: pytest.FixtureRequest,
    launcher: Launcher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Backend]:
    """Each test that takes it runs on SQLite (a state folder) and on PostgreSQL."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        state_dir = folder / "state"
        running = start_backend(
            launcher, SqliteState(state_dir), ("--state-dir", str(state_dir)), folder
        )
    else:
        postgres: PostgresServer = request.getfixturevalue("postgres")
        running = start_backend(
            launcher, PostgresState(postgres.dsn), ("--database-url", postgres.url), folder
        )
    yield running
    running.kill()
