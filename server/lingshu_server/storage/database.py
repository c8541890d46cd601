"""The database of stored state: SQLite in the state folder by default, PostgreSQL for replicas.

Opened once (migrations run then, under their lock); every use goes through `transaction()`,
which turns the driver's failures into the API's errors: a database that cannot be reached is a
503 with Retry-After, a full disk a 507. The URL holds a password: it is never logged, and what
is said about the database names only its kind and host.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from lingshu_server.core.errors import StorageFullError, StorageUnavailableError
from lingshu_server.storage.migrate import upgrade

logger = logging.getLogger(__name__)

SQLITE_FILE = "lingshu.db"
# The drivers of an async engine, for URLs that name none (`postgresql://...`).
ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
CONNECT_TIMEOUT_S = 5.0
# What a full disk says: SQLite's SQLITE_FULL, PostgreSQL's disk_full (SQLSTATE 53100) and the
# OS's ENOSPC/EFBIG as a driver words them.
FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_FULL = ("database or disk is full", "no space left on device", "could not extend file", "53100")


class Database:
    def __init__(
        self, url: str, *, lock_file: Path | None = None, private_folder: Path | None = None
    ):
        self.url = url
        self._private_folder = private_folder
        self.kind = make_url(url).get_backend_name()
        self._lock_file = lock_file
        self._engine: AsyncEngine | None = None
        self._opening = asyncio.Lock()
        self.last_error: str | None = None

    @classmethod
    def from_settings(cls, database_url: str | None, state_dir: Path) -> Database:
        """`database_url` as given (`postgresql://` and `sqlite://` take the async drivers),
        else SQLite in `state_dir`, a folder of the server's own (made private)."""
        if database_url:
            url = make_url(database_url)
            driver = ASYNC_DRIVERS.get(url.get_backend_name())
            if driver is not None:
                url = url.set(drivername=f"{url.get_backend_name()}+{driver}")
            database = url.database if url.get_backend_name() == "sqlite" else None
            lock = Path(f"{database}.migrate-lock") if database and database != ":memory:" else None
            return cls(url.render_as_string(hide_password=False), lock_file=lock)
        folder = state_dir.expanduser()
        return cls(
            f"sqlite+aiosqlite:///{folder / SQLITE_FILE}",
            lock_file=folder / f"{SQLITE_FILE}.migrate-lock",
            private_folder=folder,
        )

    @property
    def described(self) -> str:
        """Kind and place, never the credentials: `sqlite:/path/lingshu.db`, `postgresql:host`."""
        url = make_url(self.url)
        place = url.database if self.kind == "sqlite" else f"{url.host}:{url.port or 5432}"
        return f"{self.kind}:{place}"

    @property
    def opened(self) -> bool:
        return self._engine is not None

    def has_state(self) -> bool:
        """Whether there may be stored state to read: the database is open, is a server, or
        is an embedded file that exists (one made on first use is not made to look)."""
        if self._engine is not None or self.kind != "sqlite":
            return True
        database = make_url(self.url).database
        return database is not None and database != ":memory:" and Path(database).exists()

    async def open(self) -> None:
        """Connect and migrate; idempotent, and safe to call from concurrent requests."""
        async with self._opening:
            if self._engine is not None:
                return
            engine = self._create_engine()
            try:
                with _storage_errors(self):
                    await upgrade(engine, lock_file=self._lock_file)
            except BaseException:
                await engine.dispose()
                raise
            self._engine = engine
            logger.info("stored state", extra={"fields": {"database": self.described}})

    def _create_engine(self) -> AsyncEngine:
        if self.kind == "sqlite":
            folder = self._private_folder
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(folder, 0o700)  # patient data: the owner only
            engine = create_async_engine(self.url, connect_args={"timeout": 30})
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
            return engine
        return create_async_engine(
            self.url,
            pool_pre_ping=True,
            pool_timeout=CONNECT_TIMEOUT_S * 2,
            connect_args={"timeout": CONNECT_TIMEOUT_S, "command_timeout": 60},
        )

    @asynccontextmanager
    async def transaction(self, *, quiet: bool = False) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed at the end; the driver's failures as API errors (logged
        unless `quiet`: for a caller that logs an outage once itself)."""
        await self.open()
        assert self._engine is not None
        with _storage_errors(self, log=not quiet):
            async with self._engine.begin() as connection:
                yield connection
        self.last_error = None

    async def check(self) -> str | None:
        """None when the database answers, else why not (for /health)."""
        try:
            async with self.transaction() as connection:
                await connection.execute(sa.text("SELECT 1"))
        except (StorageUnavailableError, StorageFullError) as exc:
            return self.last_error or exc.message
        return None

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    connection.isolation_level = None  # transactions begin as _sqlite_begin_immediate says
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers beside the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    """Each transaction takes SQLite's write lock at its start: two requests appending to one
    conversation queue up instead of both reading the same last position (a deferred
    transaction would fail with SQLITE_BUSY when it came to write)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def _storage_errors(database: Database, *, log: bool = True) -> Iterator[None]:
    """Translate what a driver raises into StorageUnavailableError or StorageFullError."""
    try:
        yield
    except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.DataError):
        raise  # a bug in a query, not the database being away
    except (sa.exc.SQLAlchemyError, OSError, TimeoutError) as exc:
        text = str(exc).lower()
        if any(marker in text for marker in _FULL) or getattr(exc, "errno", None) in FULL_ERRNOS:
            database.last_error = "the database has no space left"
            raise StorageFullError(
                "the server's database has no space left to store this; nothing was stored"
            ) from None
        database.last_error = f"the database ({database.kind}) cannot be reached"
        if log:
            logger.warning(
                "database error",
                extra={"fields": {"database": database.described, "error": type(exc).__name__}},
            )
        raise StorageUnavailableError(
            "the server's database is unavailable; try again shortly"
        ) from None
