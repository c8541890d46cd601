"""The PostgreSQL the storage tests run against (tests/utils/postgres.py): it signs a client in
only with the right password, over the SQLAlchemy URL the server is given, and keeps what was
committed when it is stopped or killed and started again on the same port."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.utils.postgres import PostgresServer


async def query(url: str, *statements: str) -> list[tuple]:
    """Run statements through SQLAlchemy's asyncpg dialect, as the server connects; the last
    one's rows."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


def test_signs_in_the_server_role_only_with_its_password(postgres: PostgresServer) -> None:
    assert postgres.url.startswith(f"postgresql+asyncpg://lingshu:{postgres.password}@127.0.0.1:")
    [(user, database, superuser, address)] = asyncio.run(
        query(
            postgres.url,
            "SELECT current_user, current_database(), rolsuper, inet_server_addr()::text "
            "FROM pg_roles WHERE rolname = current_user",
        )
    )
    assert (user, database, superuser, address) == ("lingshu", "lingshu", False, "127.0.0.1/32")
    wrong = postgres.dsn.replace(postgres.password, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(asyncpg.connect(wrong))


def test_keeps_committed_rows_through_a_stop_and_a_kill(postgres: PostgresServer) -> None:
    url = postgres.create_database("restarts")
    asyncio.run(query(url, "CREATE TABLE notes (body text)", "INSERT INTO notes VALUES ('kept')"))
    port = postgres.port
    for halt in (postgres.stop, postgres.kill):
        halt()
        assert not postgres.running
        with pytest.raises(OSError):  # refused: nothing listens on the port
            asyncio.run(asyncpg.connect(postgres.dsn))
        postgres.start()
        assert postgres.port == port and postgres.url_for("restarts") == url
        assert asyncio.run(query(url, "SELECT body FROM notes")) == [("kept",)], halt.__name__
