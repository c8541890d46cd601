"""The storage tests' PostgreSQL: one server per worker for the whole folder (tests that need a
clean database take `postgres.create_database(name)`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils.postgres import PostgresServer


@pytest.fixture(scope="package")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server
