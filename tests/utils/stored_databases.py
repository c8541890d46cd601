"""The test's own view of a server's database: read what is stored, and hold the server's
commits where the test wants them (a write lock the test takes first).

SQLite: `BEGIN EXCLUSIVE` on the database file (in WAL mode the write lock: the server's readers
go on, its writers wait in SQLite's busy handler). PostgreSQL: `LOCK TABLE responses IN ACCESS
EXCLUSIVE MODE` in an open transaction (a stored response's INSERT waits; its blobs, written
first in the same transaction, wait uncommitted with it, and so does another request storing
the same blob).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from tests.utils.stored_responses import in_flight
from tests.utils.waiting import wait_for

# SQLite says nothing to another process about a writer waiting for its lock: once the requests
# are in flight and the last one has streamed its last token, this long more lets any other
# reach its INSERT (each is milliseconds away; the server's busy timeout is 30 s).
SQLITE_SETTLE_S = 0.3
HOLD_TIMEOUT_S = 20


class CommitHold(Protocol):
    def wait_blocked(self, base_url: str, count: int) -> None:
        """Until `count` of the server's requests wait on the hold to store."""

    def release(self) -> None: ...


class StoredState(Protocol):
    """A database as a test sees it; `rows` takes `?` placeholders on either."""

    kind: str

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]: ...

    def hold_commits(self) -> CommitHold: ...


class SqliteState:
    kind = "sqlite"

    def __init__(self, state_dir: Path):
        self.path = state_dir / "lingshu.db"

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as connection:
            return connection.execute(sql, params).fetchall()

    def hold_commits(self) -> SqliteHold:
        return SqliteHold(self.path)


class SqliteHold:
    def __init__(self, path: Path):
        self._connection = sqlite3.connect(path, timeout=HOLD_TIMEOUT_S, isolation_level=None)
        self._connection.execute("BEGIN EXCLUSIVE")

    def wait_blocked(self, base_url: str, count: int) -> None:
        assert wait_for(lambda: in_flight(base_url) >= count, HOLD_TIMEOUT_S)
        time.sleep(SQLITE_SETTLE_S)

    def release(self) -> None:
        self._connection.execute("ROLLBACK")
        self._connection.close()


def dsn_of(url: str) -> str:
    """asyncpg's address of a database from the SQLAlchemy URL a server is given."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class PostgresState:
    kind = "postgresql"

    def __init__(self, dsn: str):
        self.dsn = dsn

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        numbered = itertools.count(1)
        query = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)  # asyncpg's placeholders

        async def fetch() -> list[tuple[Any, ...]]:
            connection = await asyncpg.connect(self.dsn)
            try:
                return [tuple(row) for row in await connection.fetch(query, *params)]
            finally:
                await connection.close()

        return asyncio.run(fetch())

    def hold_commits(self) -> PostgresHold:
        return PostgresHold(self)

    def waiting_on_locks(self) -> int:
        """The database's sessions waiting for a lock: on the held table, or on a row another
        waiting one wrote (two requests storing the same image)."""
        [(waiting,)] = self.rows(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(waiting)


class PostgresHold:
    """The lock, held by a connection of a thread of its own until `release`; a database that
    goes away under it ends it too."""

    def __init__(self, state: PostgresState):
        self._state = state
        self._held = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._hold(),), daemon=True)
        self._thread.start()
        assert self._held.wait(HOLD_TIMEOUT_S), "could not lock the responses table"

    async def _hold(self) -> None:
        connection = await asyncpg.connect(self._state.dsn)
        try:
            transaction = connection.transaction()
            await transaction.start()
            await connection.execute("LOCK TABLE responses IN ACCESS EXCLUSIVE MODE")
            self._held.set()
            while not self._release.is_set():
                await asyncio.sleep(0.01)
            await transaction.rollback()
            await connection.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            connection.terminate()  # the database went away: nothing is held any more

    def wait_blocked(self, base_url: str, count: int) -> None:
        assert wait_for(lambda: self._state.waiting_on_locks() >= count, HOLD_TIMEOUT_S)

    def release(self) -> None:
        self._release.set()
        self._thread.join(HOLD_TIMEOUT_S)
