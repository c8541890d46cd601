"""/v1/responses against the Open Responses specification (the document llm-comply ships, see
tests/conformance): every event type we stream and the response object, as sent on the wire,
with the values the answer ran with (never null) and the fields the schema requires."""

from __future__ import annotations

import json
import typing

import httpx
import pytest

from lingshu_server.protocol.responses import StreamEvent
from tests.utils.open_responses import event_errors, event_types, response_errors

RESPONSES = "/v1/responses"
CITY_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"enum": ["Oslo", "Lima"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def stream(client: httpx.Client, body: dict) -> list[dict]:
    with client.stream("POST", RESPONSES, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return [
            json.loads(line.removeprefix("data: "))
            for line in response.iter_lines()
            if line.startswith("data: ")
        ]


def assert_fits(events: list[dict]) -> None:
    for event in events:
        assert not event_errors(event), (event["type"], event_errors(event))


def fingerprint(client: httpx.Client) -> str:
    return client.get("/v1/models").json()["data"][0]["system_fingerprint"]


def test_every_event_type_we_stream_has_a_schema():
    (union, _discriminator) = typing.get_args(StreamEvent)
    ours = {
        kind
        for model in typing.get_args(union)
        for kind in typing.get_args(model.model_fields["type"].annotation)
    }
    assert ours <= event_types(), ours - event_types()


def test_a_text_stream_cut_off_fits_and_says_what_it_ran_with(client):
    events = stream(
        client,
        {
            "input": "Describe the findings.",
            "max_output_tokens": 4,
            "temperature": 0.5,
            "presence_penalty": 0.25,
        },
    )
    assert_fits(events)
    assert [e["type"] for e in events[:4]] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert events[-1]["type"] == "response.incomplete"
    for event in (events[0], events[-1]):
        response = event["response"]
        assert response["temperature"] == 0.5 and response["presence_penalty"] == 0.25
        assert response["top_p"] == 1.0 and response["frequency_penalty"] == 0.0  # defaults
        assert response["completed_at"] is None  # not completed: cut off, or in progress
        assert response["system_fingerprint"] == fingerprint(client)


def test_a_stream_that_fails_midway_fits(client, server):
    server.engine.fail_next_after_steps = 2
    events = stream(client, {"input": "Describe the findings.", "max_output_tokens": 8})
    assert_fits(events)
    error, failed = events[-2:]
    assert error["type"] == "error" and failed["type"] == "response.failed"
    # OpenAI's fields at the top, Open Responses' in `error`: the same error
    assert error["error"] == {
        "type": "server_error",
        "code": error["code"],
        "message": error["message"],
        "param": None,
    }
    assert failed["response"]["status"] == "failed"


def test_a_response_object_with_tools_fits(client):
    response = client.post(
        RESPONSES,
        json={"input": "Weather?", "tools": [CITY_TOOL], "tool_choice": "none", "top_p": 0.9},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert not response_errors(body), response_errors(body)
    (tool,) = body["tools"]
    assert tool == {**CITY_TOOL, "description": None, "strict": None}  # every field, as sent
    assert body["top_p"] == 0.9 and body["temperature"] == 1.0
    assert body["top_logprobs"] == 0 and body["service_tier"] == "default"


@pytest.mark.e2e
def test_a_stream_of_a_function_call_that_completes_fits(client):
    """On the real engine: a forced call ends the answer (`response.completed`)."""
    events = stream(
        client,
        {
            "input": "Weather in Oslo?",
            "tools": [CITY_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "max_output_tokens": 200,  # the demo's small vocabulary spells the call out
            "seed": 3,
        },
    )
    assert_fits(events)
    kinds = [event["type"] for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    completed = events[-1]["response"]
    assert completed["completed_at"] >= completed["created_at"]
    # the engine's own defaults, as it sampled (the demo checkpoint names none)
    assert completed["temperature"] == 1.0 and completed["top_p"] == 1.0
