"""Bring a database's schema to this server's version, once, whoever starts first.

Replicas starting together take a lock first (PostgreSQL: an advisory lock held by the migrating
connection; SQLite: an exclusive lock on a file beside the database), so one migrates and the
others find the work done. A database migrated by a newer server (a revision this one does not
know) is refused: running old code on a newer schema would corrupt it quietly.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

if TYPE_CHECKING:  # Alembic is imported when a database opens, not with the server
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock's key: "lingshu" in ASCII, so other applications' locks do not collide.
ADVISORY_LOCK_KEY = 0x6C696E67736875


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer server."""


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: sa.Connection) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    config = alembic_config()
    current = current_revision(connection)
    if current is not None:
        try:
            ScriptDirectory.from_config(config).get_revision(current)
        except CommandError:
            raise SchemaTooNewError(
                f"the database's schema is at revision {current}, which this server (schema "
                f"{head_revision()}) does not know: a newer lingshu-server migrated it. Run that "
                "version, or restore the backup taken before the upgrade."
            ) from None
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(engine: AsyncEngine, *, lock_file: Path | None) -> None:
    """Migrate to head under the lock; `lock_file` for SQLite, else an advisory lock."""
    async with _file_lock(lock_file), engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            key = {"key": ADVISORY_LOCK_KEY}
            await connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), key)
            try:
                await _upgrade_on(connection)
            finally:
                await connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), key)
                await connection.commit()
        else:
            await _upgrade_on(connection)


async def _upgrade_on(connection: AsyncConnection) -> None:
    await connection.run_sync(_upgrade)
    await connection.commit()


@asynccontextmanager
async def _file_lock(path: Path | None) -> AsyncIterator[None]:
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
