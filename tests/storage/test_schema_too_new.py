"""A database migrated by a newer server (an alembic_version this code does not know) is refused
at start-up, with a message that says so and what to do; the server exits non-zero, and the
database is left as it was."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.utils.fake_process import Launcher
from tests.utils.stored_databases import PostgresState, SqliteState, StoredState, dsn_of

pytestmark = [pytest.mark.e2e, pytest.mark.beside_engine]

NEWER = "f00dfacef00d"  # a revision of some later release
VERSION_TABLE = "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"


def newer_sqlite(folder: Path) -> tuple[StoredState, list[str]]:
    state_dir = folder / "state"
    state_dir.mkdir(mode=0o700)
    with closing(sqlite3.connect(state_dir / "lingshu.db")) as connection, connection:
        connection.execute(VERSION_TABLE)
        connection.execute("INSERT INTO alembic_version VALUES (?)", (NEWER,))
    return SqliteState(state_dir), ["--state-dir", str(state_dir)]


def newer_postgres(request: pytest.FixtureRequest) -> tuple[StoredState, list[str]]:
    url = request.getfixturevalue("postgres").create_database("newer")
    state = PostgresState(dsn_of(url))
    state.rows(VERSION_TABLE)
    state.rows("INSERT INTO alembic_version VALUES (?)", NEWER)
    return state, ["--database-url", url]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_of_a_newer_server_is_refused_at_start_up(
    kind: str,
    launcher: Launcher,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp(f"newer-{kind}")
    state, args = newer_sqlite(folder) if kind == "sqlite" else newer_postgres(request)
    server = launcher.start(folder / "server.log", "--store-responses", *args, wait=False)
    assert server.process.wait(60) == 1
    log = server.log_text()
    assert f"the database's schema is at revision {NEWER}" in log
    assert "a newer lingshu-server migrated it" in log
    assert "start-up failed" in log
    assert state.rows("SELECT version_num FROM alembic_version") == [(NEWER,)]
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if kind == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert state.rows(tables) == [("alembic_version",)]
