"""What came before a response, and what it leaves behind: the chain a `previous_response_id`
names, or the conversation a `conversation` names, read back as input items; after the answer,
the response stored (when `store`) and the turn appended to the conversation.

Everything is owned: an object of another owner is not found, exactly as one that never existed
(no existence oracle). Each create, read and delete is noted for the audit log (ids and image
hashes, never content).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from lingshu_server.core.errors import InvalidRequestError, NotFoundError
from lingshu_server.protocol.responses import InputItem, ResponsesRequest, ResponsesResponse
from lingshu_server.services.request_records import current_owner, note_stored
from lingshu_server.services.stored_items import (
    blob_hashes,
    for_client,
    output_to_stored,
    request_items,
    to_input,
    to_stored,
)
from lingshu_server.storage.conversation_store import ConversationStore
from lingshu_server.storage.paging import Order, Page, page_of
from lingshu_server.storage.response_store import (
    ChainTooLongError,
    ResponseStore,
    StoredResponse,
)


@dataclass
class History:
    """The items before this request's input, and where they came from (an error's param)."""

    items: list[InputItem] = field(default_factory=list)
    param: str | None = None


class ResponseHistory:
    def __init__(self, *, responses: ResponseStore, conversations: ConversationStore):
        self.responses = responses
        self.conversations = conversations

    async def before(self, request: ResponsesRequest) -> History:
        owner = current_owner()
        if request.previous_response_id is not None:
            try:
                chain = await self.responses.chain(owner, request.previous_response_id)
            except ChainTooLongError:
                raise InvalidRequestError(
                    "the chain of previous responses is too long to replay; start a new one",
                    param="previous_response_id",
                ) from None
            if chain is None:
                raise InvalidRequestError(
                    f"Previous response with id '{request.previous_response_id}' not found.",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            stored: list[dict[str, Any]] = []
            for link in chain:
                note_stored("read", link.id, blob_hashes(link.input_items))
                stored += link.input_items + output_to_stored(link.body["output"])
            contents = await self.responses.blobs(blob_hashes(stored))
            replayed = await asyncio.to_thread(to_input, stored, contents)
            return History(replayed, "previous_response_id")
        conversation_id = request.conversation_id
        if conversation_id is not None:
            items = await self.conversations.items(owner, conversation_id)
            if items is None:
                raise NotFoundError(
                    f"Conversation with id '{conversation_id}' not found.", param="conversation"
                )
            note_stored("read", conversation_id, blob_hashes(items))
            contents = await self.conversations.blobs(blob_hashes(items))
            return History(await asyncio.to_thread(to_input, items, contents), "conversation")
        return History()

    async def after(
        self, request: ResponsesRequest, response: ResponsesResponse, *, store: bool
    ) -> None:
        """Store the response (when asked) and add the turn to its conversation (if any)."""
        owner = current_owner()
        inputs, contents = await asyncio.to_thread(to_stored, request_items(request.input))
        conversation_id = request.conversation_id
        if conversation_id is not None:
            turn = inputs + output_to_stored(response.output)
            if not await self.conversations.append(owner, conversation_id, turn, contents):
                raise NotFoundError(  # deleted while the answer was being written
                    f"Conversation with id '{conversation_id}' not found.", param="conversation"
                )
            note_stored("update", conversation_id, contents)
        if store:
            record = StoredResponse(
                id=response.id,
                owner=owner,
                created_at=float(response.created_at),
                previous_response_id=request.previous_response_id,
                conversation_id=conversation_id,
                input_items=inputs,
                body=response.model_dump(mode="json"),
            )
            await self.responses.save(record, contents)
            note_stored("create", response.id, contents)

    async def retrieve(self, response_id: str) -> dict[str, Any]:
        record = await self._owned(response_id)
        note_stored("read", response_id, blob_hashes(record.input_items))
        return record.body

    async def delete(self, response_id: str) -> dict[str, Any]:
        deleted = await self.responses.delete(current_owner(), response_id)
        if deleted is None:
            raise _no_response(response_id)
        note_stored("delete", response_id, deleted)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(
        self, response_id: str, *, after: str | None, limit: int, order: Order
    ) -> Page:
        record = await self._owned(response_id)
        note_stored("read", response_id, blob_hashes(record.input_items))
        page = page_of(record.input_items, after=after, limit=limit, order=order)
        contents = await self.responses.blobs(blob_hashes(page.data))
        return Page(await asyncio.to_thread(for_client, page.data, contents), page.has_more)

    async def _owned(self, response_id: str) -> StoredResponse:
        record = await self.responses.get(current_owner(), response_id)
        if record is None:
            raise _no_response(response_id)
        return record


def _no_response(response_id: str) -> NotFoundError:
    return NotFoundError(f"No response found with id '{response_id}'.", param="response_id")
