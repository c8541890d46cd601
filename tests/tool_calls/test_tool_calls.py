"""Tool calling on chat completions: the stream OpenAI's clients expect, later turns with tool
results rendered as the reference tokenizer renders them, `auto` and `none` (calls the model
makes are `e2e`), and every malformed request a 400 naming its param."""

from __future__ import annotations

import json

import httpx
import pytest
import xgrammar
from transformers import AutoTokenizer

from lingshu_server.demo_model import ensure_demo_model
from lingshu_server.protocol.chat import ChatCompletionRequest
from lingshu_server.services.structured_output import StructuredOutput
from lingshu_server.services.tool_calls import ToolGrammars, ToolUse
from lingshu_server.services.tool_template import QWEN_VL_TOOL_TEMPLATE
from tests.utils.chat import CHAT, chat, sse_events, user
from tests.utils.errors import assert_openai_error
from tests.utils.function_tools import WEATHER, Answer, check_calls, function_tool
from tests.utils.images import image_data_url, image_part

PATIENT = {
    "type": "object",
    "properties": {"mrn": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{4}$"}},
    "required": ["mrn"],
    "additionalProperties": False,
}
TOOLS = [
    function_tool("get_weather", WEATHER, "Weather forecast for a city"),
    function_tool("lookup_patient", PATIENT, "A patient's record by MRN"),
]
SCHEMAS = {"get_weather": WEATHER, "lookup_patient": PATIENT}
NAMED = {"type": "function", "function": {"name": "lookup_patient"}}


def ask(client: httpx.Client, **params) -> dict:
    body = {"messages": [user("Find the patient.")], "tools": TOOLS, "max_tokens": 400}
    body.update({"temperature": 1, "seed": 7, **params})
    return chat(client, body.pop("messages"), **body)


@pytest.mark.e2e
def test_stream_is_shaped_as_openai_streams_tool_calls(client):
    events = sse_events(
        client,
        {
            "messages": [user("Find the patient.")],
            "tools": TOOLS,
            "tool_choice": NAMED,
            "parallel_tool_calls": False,
            "max_tokens": 400,
            "temperature": 1,
            "seed": 7,
        },
    )
    assert events[-1] == "[DONE]"
    deltas = [event["choices"][0]["delta"] for event in events[:-1]]
    finishes = [event["choices"][0]["finish_reason"] for event in events[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    first_call = deltas[1]["tool_calls"]
    assert len(first_call) == 1 and set(first_call[0]) == {"index", "id", "type", "function"}
    assert first_call[0]["index"] == 0 and first_call[0]["type"] == "function"
    assert first_call[0]["function"] == {"name": "lookup_patient", "arguments": ""}
    fragments = deltas[2:-1]
    assert fragments and all(
        set(d) == {"tool_calls"} and set(d["tool_calls"][0]) == {"index", "function"}
        for d in fragments
    )
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in fragments)
    assert deltas[-1] == {} and finishes[-1] == "tool_calls" and set(finishes[:-1]) == {None}
    # the same request answered whole: the same call
    whole = ask(client, tool_choice=NAMED, parallel_tool_calls=False)["choices"][0]
    assert whole["finish_reason"] == "tool_calls"
    assert whole["message"]["content"] is None
    (call,) = whole["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "lookup_patient", "arguments": arguments}
    assert json.loads(arguments)["mrn"][:2].isupper()


@pytest.mark.e2e
def test_several_choices_each_call(client):
    answer = ask(client, tool_choice="required", n=3)
    for choice in answer["choices"]:
        calls = choice["message"]["tool_calls"]
        assert choice["finish_reason"] == "tool_calls" and calls
        found = [(c["id"], c["function"]["name"], c["function"]["arguments"]) for c in calls]
        assert check_calls(Answer(None, found, "tool_calls"), SCHEMAS) == []


@pytest.mark.e2e
def test_later_turns_render_tool_calls_and_results_as_the_reference_does(client):
    first = ask(client, tool_choice="required", parallel_tool_calls=True)["choices"][0]
    calls = first["message"]["tool_calls"]
    image = image_data_url(64, 64)
    messages = [
        {"role": "system", "content": "You triage radiology requests."},
        user(image_part(image), "Whose X-ray is this, and what is the weather?"),
        {"role": "assistant", "content": None, "tool_calls": calls},
        *(
            {"role": "tool", "tool_call_id": call["id"], "content": f"result {i}"}
            for i, call in enumerate(calls)
        ),
    ]
    answer = chat(client, messages, tools=TOOLS, max_tokens=5, return_token_ids=True)
    # the reference: Hugging Face's tokenizer and chat template with the same tools
    tokenizer = AutoTokenizer.from_pretrained(str(ensure_demo_model()))
    reference_messages = [
        messages[0],
        {"role": "user", "content": [{"type": "image"}, messages[1]["content"][1]]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    **call,
                    "function": {
                        **call["function"],
                        "arguments": json.loads(call["function"]["arguments"]),
                    },
                }
                for call in calls
            ],
        },
        *messages[3:],
    ]
    text = tokenizer.apply_chat_template(
        reference_messages,
        tools=TOOLS,
        chat_template=QWEN_VL_TOOL_TEMPLATE,
        tokenize=False,
        add_generation_prompt=True,
    )
    expected = tokenizer.encode(text, add_special_tokens=False)
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    got = answer["prompt_token_ids"]
    collapsed = [t for i, t in enumerate(got) if t != pad or got[i - 1] != pad]
    assert collapsed == expected
    assert "<tool_response>\nresult 0\n</tool_response>" in text


@pytest.mark.e2e
def test_auto_answers_in_text_when_the_model_calls_nothing(client):
    for seed in range(3):
        whole = ask(client, tool_choice="auto", seed=seed, max_tokens=30)["choices"][0]
        body = {
            "messages": [user("Find the patient.")],
            "tools": TOOLS,
            "max_tokens": 30,
            "temperature": 1,
            "seed": seed,
        }
        events = sse_events(client, body)
        streamed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
        assert "tool_calls" not in whole["message"]
        assert whole["finish_reason"] in {"stop", "length"}
        assert whole["message"]["content"] == streamed


def test_empty_tools_are_no_tools(client):
    plain = chat(client, [user("Find the patient.")], max_tokens=1)
    for fields in ({"tools": []}, {"tools": [], "tool_choice": "auto"}, {"tool_choice": "none"}):
        answer = chat(client, [user("Find the patient.")], max_tokens=1, **fields)
        assert answer["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_none_renders_the_tools_but_never_calls(client):
    with_tools = ask(client, tool_choice="none", max_tokens=20)
    without = chat(client, [user("Find the patient.")], max_tokens=1)
    assert with_tools["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"] + 50
    message = with_tools["choices"][0]["message"]
    assert "tool_calls" not in message and isinstance(message["content"], str)


def grammar_for(**request) -> xgrammar.CompiledGrammar:
    """The grammar the server builds for a request with TOOLS (no engine needed)."""
    parsed = ChatCompletionRequest.model_validate(
        {"messages": [user("x")], "tools": TOOLS, **request}
    )
    use = ToolUse.from_chat(parsed)
    grammar = ToolGrammars(StructuredOutput(pool=None))._build(use, parsed.response_format)
    return xgrammar.GrammarCompiler(xgrammar.TokenizerInfo([])).compile_grammar(grammar)


CALL = '<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'
GOOD = CALL.format(name="lookup_patient", arguments='{"mrn": "AB1234"}')
BAD_ARGS = CALL.format(name="lookup_patient", arguments='{"mrn": "ab12"}')
UNKNOWN = CALL.format(name="delete_all", arguments="{}")
WEATHER_CALL = CALL.format(name="get_weather", arguments='{"city": "Oslo", "days": 3}')


@pytest.mark.parametrize(
    ("request_fields", "text", "accepted"),
    [
        ({"tool_choice": "auto"}, "Plain text, no call.", True),
        ({"tool_choice": "auto"}, "Let me look. " + GOOD, True),
        ({"tool_choice": "auto"}, "Let me look. " + BAD_ARGS, False),
        ({"tool_choice": "auto"}, UNKNOWN, False),
        ({"tool_choice": "required"}, GOOD + "\n" + WEATHER_CALL, True),
        ({"tool_choice": "required"}, "Text first. " + GOOD, False),
        ({"tool_choice": "required", "parallel_tool_calls": False}, GOOD + "\n" + GOOD, False),
        ({"tool_choice": NAMED}, WEATHER_CALL, False),
        ({"tool_choice": NAMED}, GOOD, True),
        ({"tool_choice": "auto", "response_format": {"type": "json_object"}}, '{"a":1}', True),
        ({"tool_choice": "auto", "response_format": {"type": "json_object"}}, "text", False),
        ({"tool_choice": "auto", "response_format": {"type": "json_object"}}, GOOD, True),
    ],
)
def test_the_grammar_admits_only_valid_calls(request_fields, text, accepted):
    """What decoding may produce: with `auto` any text, but every call it opens is valid."""
    matcher = xgrammar.GrammarMatcher(grammar_for(**request_fields))
    # a whole answer: every character accepted and nothing more required
    assert (matcher.accept_string(text) and matcher.is_completed()) is accepted


BAD_REQUESTS = [
    ({"tool_choice": "required", "tools": None}, "tool_choice", None),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice", None),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools", None),
    ({"tools": [function_tool("has space", WEATHER)]}, "tools[0].function.name", None),
    ({"tools": [{"type": "retrieval", "function": TOOLS[0]["function"]}]}, "tools[0].type", None),
    (
        {"tools": [TOOLS[0], function_tool("f", {"oneOf": [{"type": "object"}]})]},
        "tools[1].function.parameters",
        "invalid_json_schema",
    ),
    (
        {"tools": [function_tool("f", {"type": "object", "properties": {"a": {"pattern": "(["}}})]},
        "tools[0].function.parameters",
        "invalid_json_schema",
    ),
    (
        {"messages": [user("x"), {"role": "tool", "content": "result"}]},
        "messages[1]",
        None,
    ),
    (
        {"messages": [user("x"), {"role": "assistant", "content": "y", "tool_calls": []}]},
        "messages[1].tool_calls",
        None,
    ),
    (
        {
            "messages": [
                user("x"),
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{oops"},
                        }
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].function.arguments",
        None,
    ),
    (
        {
            "messages": [
                user("x"),
                {
                    "role": "user",
                    "content": "y",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
            ]
        },
        "messages[1]",
        None,
    ),
    (
        {
            "messages": [
                user("x"),
                {
                    "role": "tool",
                    "tool_call_id": "c",
                    "content": [image_part(image_data_url(32, 32))],
                },
            ]
        },
        "messages[1]",
        None,
    ),
]


@pytest.mark.parametrize(("fields", "param", "code"), BAD_REQUESTS)
def test_malformed_tool_requests_are_400(client, fields, param, code):
    body = {"messages": [user("x")], "tools": TOOLS, "max_tokens": 2, **fields}
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post(CHAT, json=body)
    assert_openai_error(response, 400, param=param, code=code)
