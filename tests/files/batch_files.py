"""Batch input files as tests write them: JSONL, one request a line."""

from __future__ import annotations

import json
from typing import Any

# What a bad line's message must never repeat: the line's content may be patient data.
SECRET = "Patient Jane Roe, MRN 00417731"


def chat_line(custom_id: str, text: str = SECRET, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "lingshu-demo",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 16,
            **body,
        },
    }


def jsonl(*lines: dict[str, Any] | str) -> bytes:
    """Lines as a file holds them: objects as JSON, strings as they are."""
    return "".join(
        (line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines
    ).encode()


def multipart(
    content: bytes, purpose: str | None = "batch", *, purpose_first: bool = True
) -> tuple[dict[str, str], bytes]:
    """A form as clients send it: the `purpose` before the file (the Python SDK) or after it
    (the JS SDK); headers and body."""
    boundary = "lingshu-test-boundary-7d1c"
    file_part = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="requests.jsonl"\r\nContent-Type: application/jsonl\r\n\r\n'
        ).encode()
        + content
        + b"\r\n"
    )
    purpose_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
    ).encode()
    parts = [file_part]
    if purpose is not None:
        parts.insert(0 if purpose_first else 1, purpose_part)
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body
