"""The file store on SQLite and a real PostgreSQL: an upload is written in chunks and hidden
until its last one, a failed one leaves nothing, a batch's output lines land once per position
(in position order, however they arrive), pages and owners hold, and the sweeper takes expired
files and uploads a stopped server left half-written."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lingshu_server.storage.database import Database
from lingshu_server.storage.file_store import CHUNK_BYTES, FileFacts, FileStore
from lingshu_server.storage.sweeper import ABANDONED_UPLOAD_S, sweep
from lingshu_server.storage.tables import file_chunks, files


async def rows(database: Database, table: sa.Table) -> int:
    async with database.transaction() as connection:
        return (await connection.execute(sa.select(sa.func.count()).select_from(table))).scalar()


async def collected(iterator) -> list:
    return [item async for item in iterator]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_files_are_stored_in_chunks_read_back_in_order_and_swept(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    url = (
        request.getfixturevalue("postgres").create_database("files")
        if backend == "postgresql"
        else None
    )

    async def scenario() -> None:
        database = Database.from_settings(url, tmp_path)
        store = FileStore(database, ttl=7200)
        pieces = [b"a" * (CHUNK_BYTES - 3) + b"\n\n", b"x\r\n" * 4, b"\n  \nlast"]
        hidden: list[object] = []

        async def upload():
            for piece in pieces:
                yield piece
                hidden.append(
                    await store.list("key:a", purpose=None, after=None, limit=10, order="asc")
                )

        facts = FileFacts("batch", "in.jsonl", "/v1/chat/completions")
        made = await store.create(owner="key:a", chunks=upload(), facts=lambda: facts)
        assert all(page.data == [] for page in hidden)  # nothing listed while uploading
        assert (made.bytes, made.line_count) == (sum(map(len, pieces)), 9)
        assert await store.get(made.id, "key:a") == made
        assert await store.get(made.id, "key:b") is None
        assert b"".join(await collected(store.content(made.id))) == b"".join(pieces)
        assert await rows(database, file_chunks) == 2  # a MiB, then the rest
        numbered = await collected(store.lines(made.id))
        assert [number for number, _ in numbered] == [1, 3, 4, 5, 6, 9]
        assert numbered[1] == (3, b"x") and numbered[-1] == (9, b"last")

        def refused() -> FileFacts:
            raise ValueError("a bad line")

        with pytest.raises(ValueError):
            await store.create(owner="key:a", chunks=upload(), facts=refused)
        assert (await rows(database, files), await rows(database, file_chunks)) == (1, 2)

        async with database.transaction() as connection:
            output = await store.create_output(
                connection, owner="key:a", purpose="batch_output", filename="out.jsonl"
            )
            for seq in (2, 0, 1):
                assert await store.append_line(connection, output.id, seq, b'{"n": %d}' % seq)
        async with database.transaction() as connection:
            assert not await store.append_line(connection, output.id, 1, b'{"again": 1}')
        written = await store.get(output.id, "key:a")
        assert (written.bytes, written.line_count) == (3 * len(b'{"n": 0}\n'), 3)
        assert b"".join(await collected(store.content(output.id))) == (
            b'{"n": 0}\n{"n": 1}\n{"n": 2}\n'
        )

        newest_first = await store.list("key:a", purpose=None, after=None, limit=1, order="desc")
        assert [f["id"] for f in newest_first.data] == [output.id] and newest_first.has_more
        rest = await store.list("key:a", purpose=None, after=output.id, limit=5, order="desc")
        assert [f["id"] for f in rest.data] == [made.id] and not rest.has_more
        batch = await store.list("key:a", purpose="batch", after=None, limit=5, order="asc")
        assert [f["id"] for f in batch.data] == [made.id]
        assert (
            await store.list("key:b", purpose=None, after=None, limit=5, order="asc")
        ).data == []
        assert not await store.delete(output.id, "key:b")
        assert await store.delete(output.id, "key:a")
        assert await store.get(output.id, "key:a") is None

        async def stalled():  # a server killed mid-upload leaves a row `uploading`
            yield b"half a line"
            await asyncio.Event().wait()

        task = asyncio.create_task(
            store.create(owner="key:a", chunks=stalled(), facts=lambda: facts)
        )
        while await rows(database, files) < 2:
            await asyncio.sleep(0.01)
        assert await sweep(database, now=time.time() + 60) == 0  # an upload under way stays
        assert await sweep(database, now=time.time() + ABANDONED_UPLOAD_S + 60) == 1
        assert await sweep(database, now=time.time() + 7200 + 60) == 1  # expired: `made`
        assert (await rows(database, files), await rows(database, file_chunks)) == (0, 0)
        task.cancel()
        await database.close()

    asyncio.run(scenario())
