"""Routes of stored state: stored responses (`GET`, `DELETE`, `input_items`) and the
Conversations API, with the same keys and rate limits as /v1. They need the database, not the
engine: stored objects can be read while the model loads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from lingshu_server.http.auth import require_api_key
from lingshu_server.http.openapi import error_responses
from lingshu_server.http.routes import check_rate_limit, require_json
from lingshu_server.protocol.conversations import (
    ConversationCreateRequest,
    ConversationObject,
    ConversationUpdateRequest,
    Deleted,
    ItemList,
    ItemsCreateRequest,
)
from lingshu_server.services.conversations import ConversationService
from lingshu_server.services.response_history import ResponseHistory

stored = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_api_key), Depends(check_rate_limit)],
    responses=error_responses(400, 401, 404, 429, 503, 507),
)


async def _history(request: Request) -> ResponseHistory:
    return request.app.state.response_history


async def _conversations(request: Request) -> ConversationService:
    return request.app.state.conversation_service


HistoryDep = Annotated[ResponseHistory, Depends(_history)]
ConversationsDep = Annotated[ConversationService, Depends(_conversations)]
After = Annotated[str | None, Query(description="An item id: list the items after it.")]
Limit = Annotated[int, Query(ge=1, le=100, description="Items per page, 1 to 100.")]
OrderQuery = Annotated[Literal["asc", "desc"], Query(description="Oldest or newest first.")]


@stored.get("/responses/{response_id}")
async def retrieve_response(response_id: str, history: HistoryDep) -> dict[str, Any]:
    """A stored response, as it was answered."""
    return await history.retrieve(response_id)


@stored.delete("/responses/{response_id}")
async def delete_response(response_id: str, history: HistoryDep) -> dict[str, Any]:
    """Delete a stored response and the images no other stored object holds."""
    return await history.delete(response_id)


@stored.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    history: HistoryDep,
    after: After = None,
    limit: Limit = 20,
    order: OrderQuery = "desc",
) -> ItemList:
    """The input items of a stored response (its own request's, images included)."""
    page = await history.input_items(response_id, after=after, limit=limit, order=order)
    return ItemList.of(page.data, has_more=page.has_more)


@stored.post("/conversations", dependencies=[Depends(require_json)])
async def create_conversation(
    body: ConversationCreateRequest, conversations: ConversationsDep
) -> ConversationObject:
    return await conversations.create(body)


@stored.get("/conversations/{conversation_id}")
async def retrieve_conversation(
    conversation_id: str, conversations: ConversationsDep
) -> ConversationObject:
    return await conversations.retrieve(conversation_id)


@stored.post("/conversations/{conversation_id}", dependencies=[Depends(require_json)])
async def update_conversation(
    conversation_id: str, body: ConversationUpdateRequest, conversations: ConversationsDep
) -> ConversationObject:
    return await conversations.update(conversation_id, body.metadata)


@stored.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, conversations: ConversationsDep) -> Deleted:
    return await conversations.delete(conversation_id)


@stored.post("/conversations/{conversation_id}/items", dependencies=[Depends(require_json)])
async def create_items(
    conversation_id: str, body: ItemsCreateRequest, conversations: ConversationsDep
) -> ItemList:
    return await conversations.add_items(conversation_id, body.items)


@stored.get("/conversations/{conversation_id}/items")
async def list_items(
    conversation_id: str,
    conversations: ConversationsDep,
    after: After = None,
    limit: Limit = 20,
    order: OrderQuery = "desc",
) -> ItemList:
    return await conversations.list_items(conversation_id, after=after, limit=limit, order=order)


@stored.get("/conversations/{conversation_id}/items/{item_id}")
async def retrieve_item(
    conversation_id: str, item_id: str, conversations: ConversationsDep
) -> dict[str, Any]:
    return await conversations.item(conversation_id, item_id)


@stored.delete("/conversations/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, conversations: ConversationsDep
) -> ConversationObject:
    return await conversations.delete_item(conversation_id, item_id)
