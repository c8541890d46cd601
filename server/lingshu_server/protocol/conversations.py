"""OpenAI Conversations API wire models, and the list pages stored items are read back in."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from lingshu_server.protocol.common import ResponseModel, Text, WireModel
from lingshu_server.protocol.responses import InputItem

# OpenAI's bounds: 16 metadata pairs, keys up to 64 characters, values up to 512; up to 20
# items at a time.
MAX_ITEMS_PER_CALL = 20


def check_metadata(metadata: dict[str, str] | None) -> dict[str, str] | None:
    if metadata is None:
        return None
    if len(metadata) > 16:
        raise ValueError("metadata holds at most 16 pairs")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise ValueError("metadata keys are at most 64 characters, values at most 512")
    return metadata


Metadata = Annotated[dict[Text, Text], AfterValidator(check_metadata)]


class ConversationCreateRequest(WireModel):
    items: list[InputItem] | None = Field(default=None, max_length=MAX_ITEMS_PER_CALL)
    metadata: Metadata | None = None


class ConversationUpdateRequest(WireModel):
    metadata: Metadata


class ItemsCreateRequest(WireModel):
    items: list[InputItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)


class ConversationObject(ResponseModel):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str]


class Deleted(ResponseModel):
    id: str
    object: str
    deleted: Literal[True] = True


class ItemList(ResponseModel):
    """A cursor page of items (a response's input items, a conversation's items)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool

    @classmethod
    def of(cls, items: list[dict[str, Any]], *, has_more: bool) -> ItemList:
        return cls(
            data=items,
            first_id=items[0]["id"] if items else None,
            last_id=items[-1]["id"] if items else None,
            has_more=has_more,
        )
