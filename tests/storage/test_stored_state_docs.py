"""The stored-state page's backups and restores, run as written: the SQLite backup script on a
database another connection is writing, pg_dump and pg_restore against the tests' PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.utils.docs import fenced_blocks, only_block, page, run_bash
from tests.utils.postgres import BIN, PostgresServer

PAGE = "operations/stored-state.md"
EXAMPLE_URL = "postgresql://lingshu@db.example.internal:5432/lingshu"


def shell_block(containing: str) -> str:
    (block,) = [b for b in fenced_blocks("shell", page(PAGE)) if containing in b]
    return block


def test_sqlite_backup_script_copies_what_a_live_server_committed(tmp_path: Path) -> None:
    script = only_block("python", page(PAGE))
    assert "python3 - \\\n  /var/lib/lingshu-server/lingshu.db" in shell_block("sqlite-backup.py")
    live = tmp_path / "lingshu.db"
    server = sqlite3.connect(live, isolation_level=None)
    server.execute("PRAGMA journal_mode=WAL")
    server.execute("PRAGMA wal_autocheckpoint=0")  # what it commits stays in lingshu.db-wal
    server.execute("BEGIN")
    server.execute("CREATE TABLE responses (id TEXT)")
    server.executemany("INSERT INTO responses VALUES (?)", [(f"r{i}",) for i in range(500)])
    server.execute("COMMIT")
    server.execute("BEGIN")
    server.execute("INSERT INTO responses VALUES ('uncommitted')")  # the server is mid-write
    backup = tmp_path / "backup.db"
    result = subprocess.run(
        [sys.executable, "-", str(live), str(backup)],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    server.execute("ROLLBACK")
    server.close()
    copy = sqlite3.connect(backup)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute("SELECT count(*) FROM responses").fetchone() == (500,)
    assert not copy.execute("SELECT 1 FROM responses WHERE id = 'uncommitted'").fetchall()


async def execute(dsn: str, statement: str) -> list[tuple]:
    connection = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await connection.fetch(statement)]
    finally:
        await connection.close()


def test_pg_dump_and_pg_restore_bring_back_the_backup(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    postgres.create_database("backups")
    dsn = postgres.url_for("backups").replace("postgresql+asyncpg://", "postgresql://")
    asyncio.run(execute(dsn, "CREATE TABLE responses (id text PRIMARY KEY)"))
    asyncio.run(execute(dsn, "INSERT INTO responses VALUES ('resp_before')"))
    # The examples' server is db.example.internal; the password comes from PGPASSWORD.
    here = f"postgresql://{postgres.user}@127.0.0.1:{postgres.port}/backups"
    # PostgreSQL 15's own pg_dump and pg_restore (not Debian's version-picking wrapper).
    environment = {"PGPASSWORD": postgres.password, "PATH": f"{BIN}:{os.environ['PATH']}"}
    dump = shell_block("pg_dump --format=custom --file")
    assert EXAMPLE_URL in dump
    run_bash(dump.replace(EXAMPLE_URL, here), tmp_path, environment)
    (written,) = tmp_path.glob("lingshu-*.dump")
    written.rename(tmp_path / "lingshu-2026-12-01.dump")  # the name the restore example uses
    asyncio.run(execute(dsn, "DELETE FROM responses"))
    asyncio.run(execute(dsn, "INSERT INTO responses VALUES ('resp_after')"))
    restore = shell_block("pg_restore")
    assert EXAMPLE_URL in restore
    run_bash(restore.replace(EXAMPLE_URL, here), tmp_path, environment)
    assert asyncio.run(execute(dsn, "SELECT id FROM responses")) == [("resp_before",)]
    owner = "SELECT tableowner FROM pg_tables WHERE tablename = 'responses'"
    assert asyncio.run(execute(dsn, owner)) == [(postgres.user,)]
