"""Stored responses: one row per response, the request's own input items and the answer, each
owned by whoever created it. A chain (`previous_response_id`) is read back oldest first."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lingshu_server.storage.blobs import get_blobs, put_blobs, release_blobs
from lingshu_server.storage.database import Database
from lingshu_server.storage.tables import responses

# A chain longer than this is refused rather than read back (each link is a query).
MAX_CHAIN = 1000


@dataclass
class StoredResponse:
    id: str
    owner: str
    created_at: float
    previous_response_id: str | None
    conversation_id: str | None
    input_items: list[dict[str, Any]]
    body: dict[str, Any]


class ChainTooLongError(Exception):
    pass


class ResponseStore:
    def __init__(self, database: Database, ttl_s: float):
        self.database = database
        self.ttl_s = ttl_s

    async def save(self, record: StoredResponse, contents: Mapping[str, bytes]) -> None:
        async with self.database.transaction() as connection:
            await put_blobs(connection, record.id, contents)
            await connection.execute(
                sa.insert(responses).values(
                    id=record.id,
                    owner=record.owner,
                    created_at=record.created_at,
                    expires_at=time.time() + self.ttl_s,
                    previous_response_id=record.previous_response_id,
                    conversation_id=record.conversation_id,
                    input_items=record.input_items,
                    body=record.body,
                )
            )

    async def get(self, owner: str, response_id: str) -> StoredResponse | None:
        async with self.database.transaction() as connection:
            row = (
                await connection.execute(
                    sa.select(responses).where(
                        responses.c.id == response_id,
                        responses.c.owner == owner,
                        responses.c.expires_at > time.time(),
                    )
                )
            ).one_or_none()
        return _record(row) if row is not None else None

    async def chain(self, owner: str, response_id: str) -> list[StoredResponse] | None:
        """The response and every earlier one it follows, oldest first; None when any link is
        missing (deleted, expired, or someone else's)."""
        links: list[StoredResponse] = []
        next_id: str | None = response_id
        while next_id is not None:
            if len(links) >= MAX_CHAIN:
                raise ChainTooLongError(response_id)
            record = await self.get(owner, next_id)
            if record is None:
                return None
            links.append(record)
            next_id = record.previous_response_id
        links.reverse()
        return links

    async def delete(self, owner: str, response_id: str) -> list[str] | None:
        """Delete the response; returns the hashes of the blobs deleted with it (None when
        there was no such response of this owner)."""
        async with self.database.transaction() as connection:
            deleted = await connection.execute(
                sa.delete(responses).where(
                    responses.c.id == response_id, responses.c.owner == owner
                )
            )
            if deleted.rowcount == 0:
                return None
            return await release_blobs(connection, [response_id])

    async def blobs(self, hashes: list[str]) -> dict[str, bytes]:
        async with self.database.transaction() as connection:
            return await get_blobs(connection, hashes)


def _record(row: Any) -> StoredResponse:
    return StoredResponse(
        id=row.id,
        owner=row.owner,
        created_at=row.created_at,
        previous_response_id=row.previous_response_id,
        conversation_id=row.conversation_id,
        input_items=list(row.input_items),
        body=dict(row.body),
    )
