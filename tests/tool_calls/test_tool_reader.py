"""Reading the model's `<tool_call>` text, whole and as it streams, in any chunking."""

from __future__ import annotations

import pytest

from lingshu_server.services.tool_calls import (
    ArgumentsDelta,
    CallFinished,
    CallStarted,
    ContentDelta,
    Function,
    ToolCallReader,
    ToolUse,
    read_answer,
)

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
    "additionalProperties": False,
}
USE = ToolUse(
    functions=(Function("get_weather", WEATHER, "tools[0].function.parameters"),),
    definitions=[],
    choice="auto",
    forced=None,
    parallel=True,
)


def call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


TWO_CALLS = (
    call("get_weather", '{"city": "Paris"}')
    + "\n"
    + call("get_weather", '{"city": "Rome", "days": 2}')
)


def streamed(text: str, size: int) -> tuple[str, list[tuple[str, str, str]], bool]:
    """(content, [(id, name, arguments)], broken) from `text` fed `size` characters at a time."""
    reader = ToolCallReader(USE)
    events = []
    for start in range(0, len(text), size):
        events += reader.feed(text[start : start + size])
    events += reader.finish()
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    calls: dict[int, list[str]] = {}
    finished = set()
    for event in events:
        if isinstance(event, CallStarted):
            assert event.index == len(calls) and event.id.startswith("call_")
            calls[event.index] = [event.id, event.name, ""]
        elif isinstance(event, ArgumentsDelta):
            assert event.index not in finished
            calls[event.index][2] += event.text
        elif isinstance(event, CallFinished):
            finished.add(event.index)
    return content, [tuple(c) for c in calls.values()], reader.broken


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_stream_gives_the_same_calls_in_any_chunking(size):
    content, calls, broken = streamed("Let me check." + TWO_CALLS, size)
    assert content == "Let me check."
    assert [(name, args) for _, name, args in calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Rome", "days": 2}'),
    ]
    assert not broken


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_plain_text_streams_verbatim(size):
    text = "  No tool needed: <b>x</b> < 3 and <tool is fine.\n\n"
    assert streamed(text, size) == (text, [], False)
    assert read_answer(text, USE).content == text


def test_whole_answer_with_calls():
    answer = read_answer("Checking.\n" + TWO_CALLS + "\n", USE)
    assert answer.content == "Checking."
    assert [(c.name, c.arguments) for c in answer.calls] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Rome", "days": 2}'),
    ]
    assert answer.calls[0].id != answer.calls[1].id
    assert read_answer(TWO_CALLS, USE).content is None


@pytest.mark.parametrize(
    "text",
    [
        call("delete_records", "{}"),  # not a declared function
        call("get_weather", '{"city": 3}'),  # arguments break the schema
        call("get_weather", '{"town": "Paris"}'),  # a required property missing
        call("get_weather", '{"city": "Paris"'),  # not JSON
        call("get_weather", '["Paris"]'),  # not an object
        call("get_weather", '{"city": "Pa')[:-20],  # cut off inside the arguments
        call("get_weather", '{"city": "Paris"}') + "\n<tool_c",  # cut off before a second call
        "<tool_call>\nnot json at all\n</tool_call>",
    ],
)
def test_malformed_calls_are_returned_as_text(text):
    answer = read_answer(text, USE)
    assert answer.calls == []
    assert answer.content == text
