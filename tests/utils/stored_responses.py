"""Stored /v1/responses as the storage tests make them: turns, chains, and a stream read in a
thread as its events arrive (so a test can act between two events)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from tests.utils.chat import in_thread
from tests.utils.metrics import metric
from tests.utils.waiting import wait_for

RESPONSES = "/v1/responses"
ANSWER_TOKENS = 4  # short answers: the tests are about what is kept, not what is said
LAST_OUTPUT_EVENT = "response.output_item.done"  # what a stream sends before it is stored
# A stream's last event when its response finished (and was stored, if asked).
FINISHED = ("response.completed", "response.incomplete")


def user_turn(text: str, image_url: str | None = None) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "input_text", "text": text}]
    if image_url is not None:
        content.append({"type": "input_image", "image_url": image_url})
    return {"role": "user", "content": content}


def turn_body(turn: dict[str, Any], previous_id: str | None = None, **params: Any) -> dict:
    """A stored turn: store true, after `previous_id` when given."""
    body = {"input": [turn], "store": True, "max_output_tokens": ANSWER_TOKENS, **params}
    if previous_id is not None:
        body["previous_response_id"] = previous_id
    return body


def answer_text(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


def resent_in_full(turns: list[dict[str, Any]], answers: list[dict[str, Any]]) -> dict:
    """The last turn of a chain as a stateless client sends it: every earlier turn and answer
    (the answers' output items, as OpenAI's clients re-send them) in `input`, nothing stored."""
    items: list[dict[str, Any]] = []
    for turn, answer in zip(turns, [*answers, None], strict=True):
        items.append(turn)
        if answer is not None:
            items += answer["output"]
    return {"input": items, "store": False, "max_output_tokens": ANSWER_TOKENS}


class ResponseStream:
    """POST /v1/responses with `stream: true`, read in a daemon thread: `events` fills as they
    arrive; `error` is the transport failure that ended the stream early, if one did."""

    def __init__(self, base_url: str, body: dict[str, Any]):
        self.events: list[dict[str, Any]] = []
        self.status: int | None = None
        self.error: httpx.HTTPError | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._read, args=(base_url, {**body, "stream": True}), daemon=True
        )
        self._thread.start()

    def _read(self, base_url: str, body: dict[str, Any]) -> None:
        try:
            with (
                httpx.Client(base_url=base_url, timeout=60) as client,
                client.stream("POST", RESPONSES, json=body) as response,
            ):
                self.status = response.status_code
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        with self._changed:
                            self.events.append(json.loads(line[len("data: ") :]))
                            self._changed.notify_all()
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            with self._changed:
                self._changed.notify_all()

    @property
    def kinds(self) -> list[str]:
        return [event["type"] for event in self.events]

    @property
    def response_id(self) -> str:
        return self.events[0]["response"]["id"]

    @property
    def final(self) -> dict[str, Any] | None:
        """The finished response (`response.completed`, or `response.incomplete` when cut off
        at max_output_tokens), or None if the stream never said it finished."""
        done = [e for e in self.events if e["type"] in FINISHED]
        return done[0]["response"] if done else None

    def wait_for(self, kind: str, timeout: float = 30) -> None:
        """Until an event of `kind` arrived (AssertionError if the stream ended or the time
        passed first)."""
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: kind in self.kinds or not self._thread.is_alive(), timeout
            )
        assert arrived and kind in self.kinds, (kind, self.kinds, self.error)

    def join(self, timeout: float = 60) -> ResponseStream:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"stream still open after {timeout} s: {self.kinds}"
        return self

    @property
    def open(self) -> bool:
        return self._thread.is_alive()


def in_flight(base_url: str) -> float:
    """Requests the server is serving now, the /metrics request that asks excluded."""
    return metric(base_url, "lingshu_requests_in_flight") - 1


def post_response(base_url: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        return client.post(RESPONSES, json=body)


@dataclass
class StoredPair:
    """A plain and a streamed stored request on their way; see `start_stored_pair`."""

    plain: threading.Thread
    outcome: dict[str, Any]  # the plain request's "result" (httpx.Response) or "error"
    stream: ResponseStream

    def join(self, timeout: float = 30) -> StoredPair:
        self.plain.join(timeout)
        assert not self.plain.is_alive(), "the plain request is still waiting"
        self.stream.join(timeout)
        return self

    @property
    def pending(self) -> bool:
        """Neither has been told its response finished."""
        return self.plain.is_alive() and "result" not in self.outcome and self.stream.final is None


def start_stored_pair(base_url: str, image_url: str) -> StoredPair:
    """A plain and a streamed stored request, the plain one in flight and the stream past its
    answer's last output event (all that comes after is storing it and saying so)."""
    body = turn_body(user_turn("Plain: findings?", image_url))
    plain, outcome = in_thread(lambda: post_response(base_url, body))
    assert wait_for(lambda: in_flight(base_url) >= 1, 10)
    stream = ResponseStream(base_url, turn_body(user_turn("Streamed: findings?", image_url)))
    stream.wait_for(LAST_OUTPUT_EVENT)
    return StoredPair(plain, outcome, stream)


def retry_after_s(response: httpx.Response) -> int:
    return int(response.headers["Retry-After"])
