"""Batch API test helpers: JSONL input files, waiting for a batch to end, reading its files."""

from __future__ import annotations

import json
import time
from typing import Any

from openai import OpenAI

ENDED = ("completed", "failed", "expired", "cancelled")


def request_line(custom_id: str, body: dict[str, Any], url: str = "/v1/chat/completions") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat_body(text: str, *, image: str | None = None, **fields: Any) -> dict[str, Any]:
    content: Any = text
    if image is not None:
        content = [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": text},
        ]
    return {"model": "lingshu-demo", "messages": [{"role": "user", "content": content}], **fields}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(client: OpenAI, lines: list[dict[str, Any]]) -> str:
    return client.files.create(file=("batch.jsonl", jsonl(lines)), purpose="batch").id


def wait_for(client: OpenAI, batch_id: str, statuses: tuple[str, ...] = ENDED, timeout: float = 60):
    """The batch once its status is one of `statuses` (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.1)


def file_lines(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def outcomes(client: OpenAI, batch: Any) -> dict[str, list[dict[str, Any]]]:
    """custom_id -> every line written for it, across the output and error files."""
    found: dict[str, list[dict[str, Any]]] = {}
    for line in file_lines(client, batch.output_file_id) + file_lines(client, batch.error_file_id):
        found.setdefault(line["custom_id"], []).append(line)
    return found
