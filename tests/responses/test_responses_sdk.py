"""POST /v1/responses through the official `openai` package: `responses.create` and
`responses.stream`, every event and every response checked against the SDK's own types, the
event sequence as OpenAI sends it, images, instructions, structured output and tool calls over
several turns."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.utils.function_tools import WEATHER
from tests.utils.images import image_data_url
from tests.utils.schemas import SCHEMAS

EVENTS = TypeAdapter(ResponseStreamEvent)
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Forecast for a city",
        "parameters": WEATHER,
        "strict": True,
    }
]


@pytest.fixture
def sdk(server):
    return openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=600
    )


def strict(response) -> Response:
    """The response exactly as the SDK's pydantic types validate it (not just constructed)."""
    return Response.model_validate(dumped(response))


def dumped(model) -> dict:
    """What the server sent, as the SDK's models hold it."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def xray_input(prompt: str = "Describe the findings.") -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_image", "image_url": image_data_url(224, 224), "detail": "high"},
                {"type": "input_text", "text": prompt},
            ],
        }
    ]


def test_create_with_an_image(sdk, server):
    response = strict(
        sdk.responses.create(
            model=server.model,
            input=xray_input(),
            instructions="You are a radiology assistant.",
            max_output_tokens=8,
        )
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.model == server.model
    assert response.status in {"completed", "incomplete"}
    assert response.instructions == "You are a radiology assistant."
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert response.output_text == message.content[0].text
    usage = response.usage
    assert usage.input_tokens > 8 * 8  # 224x224 is 64 image tokens
    assert 1 <= usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.store is False and response.parallel_tool_calls is True


def test_cut_off_at_max_output_tokens_is_incomplete(sdk, server):
    response = strict(
        sdk.responses.create(
            model=server.model, input="Write a long report.", max_output_tokens=3, temperature=1
        )
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"
    assert response.usage.output_tokens == 3


def event_types(events) -> list[str]:
    return [event.type for event in events]


def test_stream_of_text_is_the_responses_event_sequence(sdk, server):
    events = list(
        sdk.responses.create(
            model=server.model, input=xray_input(), max_output_tokens=6, temperature=1, stream=True
        )
    )
    for event in events:
        EVENTS.validate_python(dumped(event))
    kinds = event_types(events)
    deltas = kinds.count("response.output_text.delta")
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-4].text == text and events[-3].part.text == text
    final = strict(events[-1].response)
    assert final.status == "incomplete" and final.output_text == text
    assert final.id == events[0].response.id
    item_ids = {e.item_id for e in events if hasattr(e, "item_id")}
    assert item_ids == {final.output[0].id}


@pytest.mark.e2e
def test_stream_helper_gives_the_final_response(sdk, server):
    schema = SCHEMAS["report"]
    with sdk.responses.stream(
        model=server.model,
        input="Report as JSON.",
        text={"format": {"type": "json_schema", "name": "report", "schema": schema}},
        max_output_tokens=1500,
        temperature=1,
        extra_body={"seed": 3},
    ) as stream:
        kinds = event_types(stream)
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert strict(final).status == "completed"
    jsonschema.validate(json.loads(final.output_text), schema)
    assert final.text.format.type == "json_schema"


@pytest.mark.e2e
@pytest.mark.parametrize("stream", [False, True])
def test_structured_output_parses_and_validates(sdk, server, stream):
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    names = ["object-closed", "nested", "anyOf-objects", "ref-defs", "format-date", "array-bounds"]
    for name in names:
        fmt = {"type": "json_schema", "name": "r", "schema": SCHEMAS[name], "strict": True}
        params = {
            "model": server.model,
            "input": "Answer as JSON.",
            "text": {"format": fmt},
            "max_output_tokens": 1500,
            "temperature": 1,
            "extra_body": {"seed": 1},
        }
        if stream:
            with sdk.responses.stream(**params) as events:
                response = events.get_final_response()
        else:
            response = sdk.responses.create(**params)
        assert response.status == "completed", name
        jsonschema.validate(json.loads(response.output_text), SCHEMAS[name], format_checker=checker)


@pytest.mark.e2e
def test_json_object(sdk, server):
    response = sdk.responses.create(
        model=server.model,
        input="JSON please.",
        text={"format": {"type": "json_object"}},
        max_output_tokens=1500,
        extra_body={"seed": 2},
    )
    assert isinstance(json.loads(response.output_text), dict)


@pytest.mark.e2e
def test_function_calls_over_turns(sdk, server):
    """A forced call, its result sent back as function_call_output, then the answer."""
    first = strict(
        sdk.responses.create(
            model=server.model,
            input=xray_input("What is the weather where this patient lives?"),
            tools=TOOLS,
            tool_choice={"type": "function", "name": "get_weather"},
            parallel_tool_calls=False,
            max_output_tokens=300,
            temperature=1,
            extra_body={"seed": 5},
        )
    )
    assert first.status == "completed"
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    second = strict(
        sdk.responses.create(
            model=server.model,
            input=[
                *xray_input("What is the weather where this patient lives?"),
                *[item.model_dump(exclude_none=True) for item in first.output],
                {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
            ],
            tools=TOOLS,
            tool_choice="none",
            max_output_tokens=5,
        )
    )
    assert second.output[0].type == "message"
    assert second.usage.input_tokens > first.usage.input_tokens + 10


@pytest.mark.e2e
def test_streamed_function_calls(sdk, server):
    events = list(
        sdk.responses.create(
            model=server.model,
            input="Weather in two cities?",
            tools=TOOLS,
            tool_choice="required",
            max_output_tokens=600,
            temperature=1,
            stream=True,
            extra_body={"seed": 11},
        )
    )
    for event in events:
        EVENTS.validate_python(dumped(event))
    final = strict(events[-1].response)
    assert events[-1].type == "response.completed"
    calls = final.output
    assert calls and all(item.type == "function_call" for item in calls)
    for index, call in enumerate(calls):
        mine = [e for e in events if getattr(e, "output_index", None) == index]
        kinds = event_types(mine)
        assert kinds[0] == "response.output_item.added" and mine[0].item.arguments == ""
        assert kinds[-2:] == ["response.function_call_arguments.done", "response.output_item.done"]
        assert set(kinds[1:-2]) == {"response.function_call_arguments.delta"}
        arguments = "".join(e.delta for e in mine[1:-2])
        assert mine[-2].arguments == arguments == call.arguments
        jsonschema.validate(json.loads(arguments), WEATHER)


@pytest.mark.e2e
def test_stream_helper_parses_function_arguments(sdk, server):
    with sdk.responses.stream(
        model=server.model,
        input="Weather?",
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=300,
        extra_body={"seed": 4},
    ) as stream:
        final = stream.get_final_response()
    (call,) = final.output
    assert call.parsed_arguments == json.loads(call.arguments)


def test_auto_without_a_call_answers_in_text(sdk, server):
    response = strict(
        sdk.responses.create(
            model=server.model, input="Hello", tools=TOOLS, max_output_tokens=10, temperature=1
        )
    )
    assert [item.type for item in response.output] == ["message"]
    assert response.tools[0].name == "get_weather" and response.tool_choice == "auto"
