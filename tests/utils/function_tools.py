"""Function tools as the tests declare them, and tool calls read back from the `openai` SDK's
answers, streamed or not, with OpenAI's streaming shape checked on the way."""

from __future__ import annotations

import json
from dataclasses import dataclass

import jsonschema

# A function's parameters, as a weather tool would declare them.
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 12},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}


def function_tool(name: str, parameters: dict, description: str = "") -> dict:
    """A chat completions tool."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def as_parameters(schema: dict) -> dict:
    """Arguments are an object: other schemas become its one required property."""
    if schema.get("type") == "object":
        return schema
    return {
        "type": "object",
        "properties": {"value": schema},
        "required": ["value"],
        "additionalProperties": False,
    }


@dataclass
class Answer:
    content: str | None
    calls: list[tuple[str, str, str]]  # (id, name, arguments)
    finish_reason: str


def completed(completion) -> Answer:
    choice = completion.choices[0]
    calls = [
        (call.id, call.function.name, call.function.arguments)
        for call in choice.message.tool_calls or []
    ]
    return Answer(choice.message.content, calls, choice.finish_reason)


def streamed(chunks) -> Answer:
    """An answer put together from a stream, asserting OpenAI's delta shapes: a call's first
    delta has its index, id, type and name (arguments ""), later ones its index and argument
    fragments only."""
    content: list[str] = []
    calls: dict[int, list[str]] = {}
    finish = None
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        content.append(delta.content or "")
        for call in delta.tool_calls or []:
            if call.index not in calls:
                assert call.index == len(calls), call
                assert call.id and call.id.startswith("call_"), call
                assert call.type == "function" and call.function.name, call
                assert call.function.arguments == "", call
                calls[call.index] = [call.id, call.function.name, ""]
            else:
                assert call.id is None and call.type is None and call.function.name is None, call
                calls[call.index][2] += call.function.arguments
        finish = choice.finish_reason or finish
    text = "".join(content)
    return Answer(text or None, [tuple(c) for c in calls.values()], finish)


def check_calls(answer: Answer, schemas: dict[str, dict]) -> list[str]:
    """Problems with the calls in `answer`: each must name a tool of `schemas` and carry
    arguments that parse and validate (formats included)."""
    problems = []
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    if len({call_id for call_id, _, _ in answer.calls}) != len(answer.calls):
        problems.append("two calls share an id")
    for _, name, arguments in answer.calls:
        if name not in schemas:
            problems.append(f"a call to {name!r}, which is not offered")
            continue
        try:
            jsonschema.validate(json.loads(arguments), schemas[name], format_checker=checker)
        except (ValueError, jsonschema.ValidationError) as exc:
            problems.append(f"{name}: {type(exc).__name__}: {str(exc)[:200]} in {arguments!r}")
    return problems
