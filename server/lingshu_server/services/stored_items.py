"""Items as they are stored and read back: a request's input items and a response's output
items in OpenAI's item shape (each with an `id`), images held once in the blob store.

An image sent as a base64 data URL is stored by its SHA-256 (`"blob": {"sha256", "prefix"}` in
place of `image_url`) and comes back as the very same data URL, so a chain rebuilt from storage
is the conversation the client would have re-sent. Images by URL (http, file, DICOMweb) are kept
as their URL and fetched again when the chain is replayed.

Decoding, hashing and encoding megabytes of base64 is work for a worker thread, never the event
loop: the services call these functions through `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pybase64
from pydantic import TypeAdapter, ValidationError

from lingshu_server.protocol.responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    InputText,
    MessageItem,
    OutputItem,
    item_id,
)

_INPUT_ITEM: TypeAdapter[InputItem] = TypeAdapter(InputItem)
Contents = dict[str, bytes]  # blob contents by SHA-256


def request_items(input_: str | list[InputItem]) -> list[InputItem]:
    """The input as items: a plain string is one user message."""
    if isinstance(input_, str):
        return [MessageItem(role="user", content=[InputText(type="input_text", text=input_)])]
    return list(input_)


def to_stored(items: list[InputItem]) -> tuple[list[dict[str, Any]], Contents]:
    """Input items in stored form, each with a new id, and the image contents they refer to."""
    contents: Contents = {}
    stored = []
    for item in items:
        entry = item.model_dump(mode="json", exclude_none=True)
        if isinstance(item, MessageItem):
            if isinstance(item.content, str):
                entry["content"] = [{"type": "input_text", "text": item.content}]
            entry["content"] = [_stored_part(part, contents) for part in entry["content"]]
            entry = {"id": item_id("msg"), **entry, "status": "completed"}
        elif isinstance(item, FunctionCallItem):
            entry = {"id": item_id("fc"), **entry, "status": "completed"}
        else:
            assert isinstance(item, FunctionCallOutputItem)
            entry = {"id": item_id("fco"), **entry, "status": "completed"}
        stored.append(entry)
    return stored, contents


def output_to_stored(output: list[OutputItem] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items (as models or as stored) as items a later turn replays (an
    assistant message, the function calls it made)."""
    stored = []
    for item in output:
        entry = dict(item) if isinstance(item, dict) else item.model_dump(mode="json")
        if entry["type"] == "message":
            entry["content"] = [
                {"type": "output_text", "text": part["text"], "annotations": []}
                for part in entry["content"]
            ]
        stored.append(entry)
    return stored


def blob_hashes(items: list[dict[str, Any]]) -> list[str]:
    hashes = []
    for item in items:
        for part in item.get("content") or []:
            if isinstance(part, dict) and isinstance(part.get("blob"), dict):
                hashes.append(part["blob"]["sha256"])
    return hashes


def for_client(items: list[dict[str, Any]], contents: Contents) -> list[dict[str, Any]]:
    """Stored items as the API shows them: each image's data URL back in place."""
    return [_with_images(item, contents) for item in items]


def to_input(items: list[dict[str, Any]], contents: Contents) -> list[InputItem]:
    """Stored items as the input items they were (or, for output, would be when re-sent)."""
    replayed = []
    for item in for_client(items, contents):
        try:
            replayed.append(_INPUT_ITEM.validate_python(item))
        except ValidationError as exc:  # stored by this server, so a bug, never the client's
            raise RuntimeError(f"a stored item of type {item.get('type')} is unreadable") from exc
    return replayed


def _stored_part(part: dict[str, Any], contents: Contents) -> dict[str, Any]:
    url = part.get("image_url")
    if part.get("type") != "input_image" or not isinstance(url, str):
        return part
    prefix, comma, payload = url.partition(",")
    if not (url.startswith("data:") and comma and prefix.endswith(";base64")):
        return part
    try:
        data = pybase64.b64decode(payload.strip(), validate=True)
    except ValueError:
        return part  # not base64 after all: kept as sent
    sha256 = hashlib.sha256(data).hexdigest()
    contents[sha256] = data
    stored = {key: value for key, value in part.items() if key != "image_url"}
    return {**stored, "blob": {"sha256": sha256, "prefix": prefix}}


def _with_images(item: dict[str, Any], contents: Contents) -> dict[str, Any]:
    content = item.get("content")
    if not isinstance(content, list):
        return item
    parts = []
    for part in content:
        blob = part.get("blob") if isinstance(part, dict) else None
        if isinstance(blob, dict):
            data = contents[blob["sha256"]]
            url = f"{blob['prefix']},{pybase64.b64encode(data).decode('ascii')}"
            part = {**{k: v for k, v in part.items() if k != "blob"}, "image_url": url}
        parts.append(part)
    return {**item, "content": parts}
