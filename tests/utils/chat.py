"""Chat requests as the tests make them: messages, plain answers, SSE streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx

CHAT = "/v1/chat/completions"


def user(*parts: str | dict) -> dict:
    """A user message; strings become text parts, dicts (image parts) pass as they are."""
    content = [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]
    return {"role": "user", "content": content}


def chat(client: httpx.Client, messages: list, **params: Any) -> dict:
    """A completed chat answer (asserts 200)."""
    response = client.post(CHAT, json={"messages": messages, **params})
    assert response.status_code == 200, response.text
    return response.json()


def stream_events(client: httpx.Client, messages: list, **params: Any) -> list:
    """Every SSE `data:` payload in order; '[DONE]' stays a string."""
    return sse_events(client, {"messages": messages, "stream": True, **params})


def sse_events(client: httpx.Client, body: dict) -> list:
    events: list = []
    with client.stream("POST", CHAT, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), line
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def stream_text(client: httpx.Client, body: dict) -> tuple[str, str | None]:
    """(content, finish_reason) of choice 0, assembled from a stream of `body`."""
    text, finish = [], None
    for event in sse_events(client, body):
        if event == "[DONE]":
            break
        assert "error" not in event, event
        for choice in event["choices"]:
            text.append(choice["delta"].get("content") or "")
            finish = choice["finish_reason"] or finish
    return "".join(text), finish


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    """Start `work` in a daemon thread; its result or exception lands in the returned dict."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome
