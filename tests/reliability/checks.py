"""What a well-formed answer is: an OpenAI error, a completion, or a stream of chunks."""

from __future__ import annotations

import json

import httpx

from lingshu_server.core.errors import ErrorResponse
from lingshu_server.protocol.chat import ChatCompletion, ChatCompletionChunk


def assert_error_shape(response: httpx.Response, code: str | None, param: str | None) -> None:
    error = ErrorResponse.model_validate(response.json()).error
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert error.message and "Traceback" not in error.message
    expected_type = "server_error" if response.status_code >= 500 else None
    if expected_type:
        assert error.type == expected_type
    if code is not None:
        assert error.code == code, response.text[:300]
    if param is not None:
        # the case names the field; the server may name a part of it (`stop` -> `stop[1]`)
        assert error.param is not None, response.text[:300]
        assert error.param == param or error.param.startswith((f"{param}.", f"{param}[")), (
            response.text[:300]
        )


def assert_well_formed(response: httpx.Response) -> None:
    """A 200 completion, JSON or SSE, every part valid against the wire models."""
    if response.headers["content-type"].startswith("text/event-stream"):
        assert_stream(response.text)
        return
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices and completion.usage.total_tokens > 0


def assert_stream(text: str) -> None:
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.strip()]
    assert events and events[-1] == "[DONE]", events[-3:]
    finished = set()
    for event in events[:-1]:
        data = json.loads(event)
        assert "error" not in data, event
        chunk = ChatCompletionChunk.model_validate(data)
        finished |= {c.index for c in chunk.choices if c.finish_reason is not None}
    assert finished, "no choice finished"
