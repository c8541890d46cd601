"""Files: uploads and the output and error files batches write, each owned by whoever made it.

A file's content is its chunks in `seq` order. An upload is written as it streams in, a chunk
of about a MiB per short transaction (SQLite has one writer: a long upload must not hold it),
under a row `uploading` that nothing lists or reads; the last step marks it `processed`. A
failed upload leaves nothing (its row and chunks are deleted; the sweeper takes what a killed
server left). Content is read back a few chunks per query, never whole.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lingshu_server.storage.blobs import insert_ignoring_duplicates
from lingshu_server.storage.database import Database
from lingshu_server.storage.paging import Order, Page
from lingshu_server.storage.tables import file_chunks, files

CHUNK_BYTES = 1024 * 1024
# Content is read about a MiB per query: one upload chunk, up to a thousand one-line chunks.
READ_BYTES = CHUNK_BYTES
MOST_READ_ROWS = 1024
UPLOADING = "uploading"
PROCESSED = "processed"


@dataclass(frozen=True)
class StoredFile:
    id: str
    owner: str
    purpose: str
    filename: str
    bytes: int
    line_count: int
    created_at: float
    expires_at: float | None
    batch_endpoint: str | None


@dataclass(frozen=True)
class FileFacts:
    """What is known of an upload once its content has streamed in (a multipart form may name
    the purpose after the file): asked for after the last chunk; raising refuses the file."""

    purpose: str
    filename: str
    batch_endpoint: str | None = None
    # the file's lines as its purpose counts them (a batch file: its requests, the non-blank
    # lines); None: every line
    line_count: int | None = None


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


class FileStore:
    def __init__(self, database: Database, ttl: float) -> None:
        self.database = database
        self.ttl = ttl

    async def create(
        self, *, owner: str, chunks: AsyncIterable[bytes], facts: Callable[[], FileFacts]
    ) -> StoredFile:
        """Store an upload as it streams in; on any exception the partial file is deleted and
        the exception raised again."""
        file_id = new_file_id()
        now = time.time()
        async with self.database.transaction() as connection:
            await connection.execute(
                sa.insert(files).values(
                    id=file_id,
                    owner=owner,
                    purpose="",
                    filename="",
                    bytes=0,
                    line_count=0,
                    created_at=now,
                    expires_at=now + self.ttl,
                    state=UPLOADING,
                    batch_endpoint=None,
                )
            )
        try:
            size, lines = await self._write_chunks(file_id, chunks)
            known = facts()
            if known.line_count is not None:
                lines = known.line_count
            async with self.database.transaction() as connection:
                await connection.execute(
                    sa.update(files)
                    .where(files.c.id == file_id)
                    .values(
                        purpose=known.purpose,
                        filename=known.filename,
                        bytes=size,
                        line_count=lines,
                        state=PROCESSED,
                        batch_endpoint=known.batch_endpoint,
                    )
                )
        except BaseException:
            try:
                await self._discard(file_id)
            except Exception:  # the database went away too: the sweeper takes it later
                pass
            raise
        return StoredFile(
            id=file_id,
            owner=owner,
            purpose=known.purpose,
            filename=known.filename,
            bytes=size,
            line_count=lines,
            created_at=now,
            expires_at=now + self.ttl,
            batch_endpoint=known.batch_endpoint,
        )

    async def _write_chunks(self, file_id: str, chunks: AsyncIterable[bytes]) -> tuple[int, int]:
        """Write the content in chunks of about CHUNK_BYTES; its size and number of lines."""
        pending = bytearray()
        seq = size = newlines = 0
        ends_with_newline = True
        async for data in chunks:
            if not data:
                continue
            size += len(data)
            newlines += data.count(b"\n")
            ends_with_newline = data.endswith(b"\n")
            pending += data
            if len(pending) >= CHUNK_BYTES:  # a chunk is a MiB and at most one read more
                await self._write_chunk(file_id, seq, pending)  # the buffer itself, no copy
                pending = bytearray()
                seq += 1
        if pending:
            await self._write_chunk(file_id, seq, pending)
        return size, newlines + (0 if ends_with_newline else 1)

    async def _write_chunk(self, file_id: str, seq: int, data: bytearray) -> None:
        async with self.database.transaction() as connection:
            await connection.execute(
                sa.insert(file_chunks).values(file_id=file_id, seq=seq, data=data)
            )

    async def _discard(self, file_id: str) -> None:
        async with self.database.transaction() as connection:
            await connection.execute(sa.delete(file_chunks).where(file_chunks.c.file_id == file_id))
            await connection.execute(sa.delete(files).where(files.c.id == file_id))

    async def create_output(
        self, connection: AsyncConnection, *, owner: str, purpose: str, filename: str
    ) -> StoredFile:
        """An empty file, `processed` at once, in the caller's transaction (a batch's output
        and error files, which `append_line` then fills)."""
        now = time.time()
        stored = StoredFile(
            id=new_file_id(),
            owner=owner,
            purpose=purpose,
            filename=filename,
            bytes=0,
            line_count=0,
            created_at=now,
            expires_at=now + self.ttl,
            batch_endpoint=None,
        )
        await connection.execute(
            sa.insert(files).values(**dataclasses.asdict(stored), state=PROCESSED)
        )
        return stored

    async def append_line(
        self, connection: AsyncConnection, file_id: str, seq: int, line: bytes
    ) -> bool:
        """One line (given without its newline, stored with one) at position `seq`, in the
        caller's transaction. False, and nothing changed, when that position is taken: a line
        is written once however often it is finished."""
        data = line + b"\n"
        inserted = await connection.execute(
            insert_ignoring_duplicates(connection, file_chunks).values(
                file_id=file_id, seq=seq, data=data
            )
        )
        if inserted.rowcount == 0:
            return False
        await connection.execute(
            sa.update(files)
            .where(files.c.id == file_id)
            .values(bytes=files.c.bytes + len(data), line_count=files.c.line_count + 1)
        )
        return True

    async def get(self, file_id: str, owner: str) -> StoredFile | None:
        """The file; None when it is another owner's, expired, still uploading or missing."""
        async with self.database.transaction() as connection:
            row = (
                await connection.execute(
                    sa.select(files).where(files.c.id == file_id, *_visible(owner))
                )
            ).one_or_none()
        return _stored(row) if row is not None else None

    async def list(
        self,
        owner: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        order: Order,
    ) -> Page:
        """A page of the owner's files by creation time, as dicts of StoredFile's fields; an
        unknown `after` gives an empty page."""
        conditions = list(_visible(owner))
        if purpose is not None:
            conditions.append(files.c.purpose == purpose)
        created, file_id = files.c.created_at, files.c.id
        async with self.database.transaction() as connection:
            if after is not None:
                cursor = (
                    await connection.execute(
                        sa.select(created).where(file_id == after, files.c.owner == owner)
                    )
                ).scalar()
                if cursor is None:
                    return Page([], has_more=False)
                later = sa.or_(created > cursor, sa.and_(created == cursor, file_id > after))
                earlier = sa.or_(created < cursor, sa.and_(created == cursor, file_id < after))
                conditions.append(later if order == "asc" else earlier)
            ordering = (created, file_id) if order == "asc" else (created.desc(), file_id.desc())
            rows = list(
                await connection.execute(
                    sa.select(files).where(*conditions).order_by(*ordering).limit(limit + 1)
                )
            )
        chosen = [dataclasses.asdict(_stored(row)) for row in rows[:limit]]
        return Page(chosen, has_more=len(rows) > limit)

    async def delete(self, file_id: str, owner: str) -> bool:
        async with self.database.transaction() as connection:
            found = (
                await connection.execute(
                    sa.select(files.c.id).where(files.c.id == file_id, *_visible(owner))
                )
            ).scalar()
            if found is None:
                return False
            await connection.execute(sa.delete(file_chunks).where(file_chunks.c.file_id == file_id))
            await connection.execute(sa.delete(files).where(files.c.id == file_id))
            return True

    async def content(self, file_id: str) -> AsyncIterator[bytes]:
        """The content in `seq` order, about READ_BYTES per query: an upload's chunk at a time,
        many of an output file's one-line chunks."""
        after = -1
        rows_wanted = 1
        while True:
            async with self.database.transaction() as connection:
                rows = list(
                    await connection.execute(
                        sa.select(file_chunks.c.seq, file_chunks.c.data)
                        .where(file_chunks.c.file_id == file_id, file_chunks.c.seq > after)
                        .order_by(file_chunks.c.seq)
                        .limit(rows_wanted)
                    )
                )
            if not rows:
                return
            after = rows[-1].seq
            read = sum(len(row.data) for row in rows)
            for row in rows:
                yield bytes(row.data)
            if len(rows) < rows_wanted:
                return
            if read < READ_BYTES // 2:
                rows_wanted = min(MOST_READ_ROWS, rows_wanted * 2)
            elif read > READ_BYTES * 2:
                rows_wanted = max(1, rows_wanted // 2)

    async def lines(self, file_id: str) -> AsyncIterator[tuple[int, bytes]]:
        """The non-blank lines (without their line ends) with their 1-based line numbers."""
        number = 0
        pending = b""
        async for data in self.content(file_id):
            pieces = (pending + data).split(b"\n")
            pending = pieces.pop()
            for piece in pieces:
                number += 1
                if piece.strip():
                    yield number, piece.removesuffix(b"\r")
        if pending.strip():
            yield number + 1, pending.removesuffix(b"\r")


def _visible(owner: str) -> tuple[Any, ...]:
    return (
        files.c.owner == owner,
        files.c.state == PROCESSED,
        sa.or_(files.c.expires_at.is_(None), files.c.expires_at > time.time()),
    )


def _stored(row: Any) -> StoredFile:
    return StoredFile(
        id=row.id,
        owner=row.owner,
        purpose=row.purpose,
        filename=row.filename,
        bytes=row.bytes,
        line_count=row.line_count,
        created_at=row.created_at,
        expires_at=row.expires_at,
        batch_endpoint=row.batch_endpoint,
    )
