"""The storage tests' processes, started once for this folder: the launcher of fake-engine server
processes (tests/utils/fake_process), one PostgreSQL (tests/utils/postgres), and for each
database a server storing on it that tests share (started again after a test kills it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.utils.fake_process import Launcher
from tests.utils.server import Restartable, RunningServer
from tests.utils.stored_databases import PostgresState, SqliteState, StoredState

if TYPE_CHECKING:
    from tests.utils.postgres import PostgresServer


@pytest.fixture(scope="package")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    # it warms up in the background (while PostgreSQL starts, for one)
    running = Launcher(tmp_path_factory.mktemp("launcher") / "launcher.log")
    yield running
    running.close()


@pytest.fixture(scope="package")
def postgres(launcher: Launcher) -> Iterator[PostgresServer]:
    from tests.utils.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


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
