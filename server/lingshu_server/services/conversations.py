"""The Conversations API: create, read, update and delete conversations and their items, each
owned by whoever created it (another owner's is not found)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from lingshu_server.core.errors import NotFoundError
from lingshu_server.protocol.conversations import (
    ConversationCreateRequest,
    ConversationObject,
    Deleted,
    ItemList,
)
from lingshu_server.protocol.responses import InputItem
from lingshu_server.services.request_records import current_owner, note_stored
from lingshu_server.services.stored_items import blob_hashes, for_client, to_stored
from lingshu_server.storage.conversation_store import Conversation, ConversationStore
from lingshu_server.storage.paging import Order


class ConversationService:
    def __init__(self, store: ConversationStore):
        self._store = store

    async def create(self, request: ConversationCreateRequest) -> ConversationObject:
        conversation = Conversation(
            id=f"conv_{uuid.uuid4().hex}",
            owner=current_owner(),
            created_at=time.time(),
            metadata=request.metadata or {},
        )
        items, contents = await asyncio.to_thread(to_stored, request.items or [])
        await self._store.create(conversation, items, contents)
        note_stored("create", conversation.id, contents)
        return _object(conversation)

    async def retrieve(self, conversation_id: str) -> ConversationObject:
        conversation = await self._store.get(current_owner(), conversation_id)
        if conversation is None:
            raise _missing(conversation_id)
        note_stored("read", conversation_id)
        return _object(conversation)

    async def update(self, conversation_id: str, metadata: dict[str, str]) -> ConversationObject:
        conversation = await self._store.update(current_owner(), conversation_id, metadata)
        if conversation is None:
            raise _missing(conversation_id)
        note_stored("update", conversation_id)
        return _object(conversation)

    async def delete(self, conversation_id: str) -> Deleted:
        deleted = await self._store.delete(current_owner(), conversation_id)
        if deleted is None:
            raise _missing(conversation_id)
        note_stored("delete", conversation_id, deleted)
        return Deleted(id=conversation_id, object="conversation.deleted")

    async def add_items(self, conversation_id: str, items: list[InputItem]) -> ItemList:
        stored, contents = await asyncio.to_thread(to_stored, items)
        if not await self._store.append(current_owner(), conversation_id, stored, contents):
            raise _missing(conversation_id)
        note_stored("update", conversation_id, contents)
        return ItemList.of(await asyncio.to_thread(for_client, stored, contents), has_more=False)

    async def list_items(
        self, conversation_id: str, *, after: str | None, limit: int, order: Order
    ) -> ItemList:
        owner = current_owner()
        page = await self._store.page(owner, conversation_id, after=after, limit=limit, order=order)
        if page is None:
            raise _missing(conversation_id)
        hashes = blob_hashes(page.data)
        note_stored("read", conversation_id, hashes)
        contents = await self._store.blobs(hashes)
        return ItemList.of(
            await asyncio.to_thread(for_client, page.data, contents), has_more=page.has_more
        )

    async def item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        found = await self._store.item(current_owner(), conversation_id, item_id)
        if found is None:
            raise _missing(conversation_id, item_id)
        hashes = blob_hashes([found])
        note_stored("read", conversation_id, hashes)
        contents = await self._store.blobs(hashes)
        return (await asyncio.to_thread(for_client, [found], contents))[0]

    async def delete_item(self, conversation_id: str, item_id: str) -> ConversationObject:
        owner = current_owner()
        if not await self._store.delete_item(owner, conversation_id, item_id):
            raise _missing(conversation_id, item_id)
        note_stored("update", conversation_id)
        conversation = await self._store.get(owner, conversation_id)
        if conversation is None:
            raise _missing(conversation_id)
        return _object(conversation)


def _object(conversation: Conversation) -> ConversationObject:
    return ConversationObject(
        id=conversation.id,
        created_at=int(conversation.created_at),
        metadata=conversation.metadata,
    )


def _missing(conversation_id: str, item_id: str | None = None) -> NotFoundError:
    if item_id is not None:
        return NotFoundError(
            f"Item with id '{item_id}' not found in conversation '{conversation_id}'.",
            param="item_id",
        )
    return NotFoundError(
        f"Conversation with id '{conversation_id}' not found.", param="conversation_id"
    )
