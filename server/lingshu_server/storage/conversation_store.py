"""Conversations: a list of items (messages, function calls and their outputs) a client appends
to, directly or by naming the conversation in a response; each owned by whoever created it."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lingshu_server.storage.blobs import get_blobs, put_blobs, release_blobs
from lingshu_server.storage.database import Database
from lingshu_server.storage.paging import Order, Page
from lingshu_server.storage.tables import conversation_items, conversations


@dataclass
class Conversation:
    id: str
    owner: str
    created_at: float
    metadata: dict[str, str]


class ConversationStore:
    def __init__(self, database: Database, ttl_s: float):
        self.database = database
        self.ttl_s = ttl_s

    async def create(
        self,
        conversation: Conversation,
        items: list[dict[str, Any]],
        contents: Mapping[str, bytes],
    ) -> None:
        async with self.database.transaction() as connection:
            await connection.execute(
                sa.insert(conversations).values(
                    id=conversation.id,
                    owner=conversation.owner,
                    created_at=conversation.created_at,
                    expires_at=time.time() + self.ttl_s,
                    metadata=conversation.metadata,
                )
            )
            await self._append(connection, conversation.id, items, contents)

    async def get(self, owner: str, conversation_id: str) -> Conversation | None:
        async with self.database.transaction() as connection:
            return await _owned(connection, owner, conversation_id)

    async def update(
        self, owner: str, conversation_id: str, metadata: dict[str, str]
    ) -> Conversation | None:
        async with self.database.transaction() as connection:
            found = await _owned(connection, owner, conversation_id)
            if found is None:
                return None
            await connection.execute(
                sa.update(conversations)
                .where(conversations.c.id == conversation_id)
                .values(metadata=metadata, expires_at=time.time() + self.ttl_s)
            )
            found.metadata = metadata
            return found

    async def delete(self, owner: str, conversation_id: str) -> list[str] | None:
        async with self.database.transaction() as connection:
            if await _owned(connection, owner, conversation_id) is None:
                return None
            item_ids = list(
                (
                    await connection.execute(
                        sa.select(conversation_items.c.id).where(
                            conversation_items.c.conversation_id == conversation_id
                        )
                    )
                ).scalars()
            )
            await connection.execute(
                sa.delete(conversation_items).where(
                    conversation_items.c.conversation_id == conversation_id
                )
            )
            await connection.execute(
                sa.delete(conversations).where(conversations.c.id == conversation_id)
            )
            return await release_blobs(connection, item_ids)

    async def append(
        self,
        owner: str,
        conversation_id: str,
        items: list[dict[str, Any]],
        contents: Mapping[str, bytes],
    ) -> bool:
        """Add items at the end; False when the conversation is not this owner's."""
        async with self.database.transaction() as connection:
            if await _owned(connection, owner, conversation_id, for_update=True) is None:
                return False
            await self._append(connection, conversation_id, items, contents)
            return True

    async def _append(
        self,
        connection: AsyncConnection,
        conversation_id: str,
        items: list[dict[str, Any]],
        contents: Mapping[str, bytes],
    ) -> None:
        last = (
            await connection.execute(
                sa.select(sa.func.max(conversation_items.c.position)).where(
                    conversation_items.c.conversation_id == conversation_id
                )
            )
        ).scalar()
        start = 0 if last is None else last + 1
        for offset, item in enumerate(items):
            await connection.execute(
                sa.insert(conversation_items).values(
                    id=item["id"],
                    conversation_id=conversation_id,
                    position=start + offset,
                    item=item,
                )
            )
            used = {sha: contents[sha] for sha in item_blobs(item) if sha in contents}
            await put_blobs(connection, item["id"], used)
        await connection.execute(
            sa.update(conversations)
            .where(conversations.c.id == conversation_id)
            .values(expires_at=time.time() + self.ttl_s)
        )

    async def items(self, owner: str, conversation_id: str) -> list[dict[str, Any]] | None:
        """Every item, oldest first."""
        async with self.database.transaction() as connection:
            if await _owned(connection, owner, conversation_id) is None:
                return None
            rows = await connection.execute(
                sa.select(conversation_items.c.item)
                .where(conversation_items.c.conversation_id == conversation_id)
                .order_by(conversation_items.c.position)
            )
            return [dict(item) for item in rows.scalars()]

    async def page(
        self,
        owner: str,
        conversation_id: str,
        *,
        after: str | None,
        limit: int,
        order: Order,
    ) -> Page | None:
        async with self.database.transaction() as connection:
            if await _owned(connection, owner, conversation_id) is None:
                return None
            position = conversation_items.c.position
            query = sa.select(conversation_items.c.item).where(
                conversation_items.c.conversation_id == conversation_id
            )
            if after is not None:
                cursor = (
                    await connection.execute(
                        sa.select(position).where(
                            conversation_items.c.id == after,
                            conversation_items.c.conversation_id == conversation_id,
                        )
                    )
                ).scalar()
                if cursor is None:
                    return Page([], has_more=False)
                query = query.where(position > cursor if order == "asc" else position < cursor)
            query = query.order_by(position if order == "asc" else position.desc())
            rows = list((await connection.execute(query.limit(limit + 1))).scalars())
            return Page([dict(item) for item in rows[:limit]], has_more=len(rows) > limit)

    async def item(self, owner: str, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        async with self.database.transaction() as connection:
            if await _owned(connection, owner, conversation_id) is None:
                return None
            found = (
                await connection.execute(
                    sa.select(conversation_items.c.item).where(
                        conversation_items.c.id == item_id,
                        conversation_items.c.conversation_id == conversation_id,
                    )
                )
            ).scalar()
            return dict(found) if found is not None else None

    async def delete_item(self, owner: str, conversation_id: str, item_id: str) -> bool:
        async with self.database.transaction() as connection:
            if await _owned(connection, owner, conversation_id) is None:
                return False
            deleted = await connection.execute(
                sa.delete(conversation_items).where(
                    conversation_items.c.id == item_id,
                    conversation_items.c.conversation_id == conversation_id,
                )
            )
            if deleted.rowcount == 0:
                return False
            await release_blobs(connection, [item_id])
            return True

    async def blobs(self, hashes: list[str]) -> dict[str, bytes]:
        async with self.database.transaction() as connection:
            return await get_blobs(connection, hashes)


def item_blobs(item: dict[str, Any]) -> list[str]:
    """The hashes of the images an item holds by reference."""
    content = item.get("content")
    if not isinstance(content, list):
        return []
    return [part["blob"]["sha256"] for part in content if isinstance(part.get("blob"), dict)]


async def _owned(
    connection: AsyncConnection, owner: str, conversation_id: str, *, for_update: bool = False
) -> Conversation | None:
    query = sa.select(conversations).where(
        conversations.c.id == conversation_id,
        conversations.c.owner == owner,
        conversations.c.expires_at > time.time(),
    )
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()  # appends to one conversation queue up, not clash
    row = (await connection.execute(query)).one_or_none()
    if row is None:
        return None
    return Conversation(
        id=row.id, owner=row.owner, created_at=row.created_at, metadata=dict(row.metadata)
    )
