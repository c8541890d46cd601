"""What /v1/responses accepts and refuses, over plain HTTP: OpenAI's error shape naming the
Responses param (not the chat one underneath), stateless by design, and the same image path,
limits, metrics and audit as chat completions."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import FILE_KEYS
from tests.utils.errors import assert_openai_error
from tests.utils.images import image_data_url
from tests.utils.metrics import scrape, value
from tests.utils.waiting import wait_for

RESPONSES = "/v1/responses"


def image_input(url: str, **extra) -> list[dict]:
    return [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Findings?"},
                {"type": "input_image", "image_url": url, **extra},
            ],
        }
    ]


def test_string_input_and_easy_messages(client):
    plain = client.post(RESPONSES, json={"input": "Hello", "max_output_tokens": 2})
    assert plain.status_code == 200, plain.text
    messages = client.post(
        RESPONSES,
        json={
            "input": [
                {"role": "developer", "content": "Be brief."},
                {"type": "message", "role": "user", "content": "Hello"},
                {"role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
                {"role": "user", "content": [{"type": "input_text", "text": "Again"}]},
            ],
            "max_output_tokens": 2,
        },
    )
    assert messages.status_code == 200, messages.text
    assert messages.json()["usage"]["input_tokens"] > plain.json()["usage"]["input_tokens"]


def test_store_false_is_accepted_and_echoed(client):
    response = client.post(RESPONSES, json={"input": "x", "store": False, "max_output_tokens": 1})
    assert response.status_code == 200
    assert response.json()["store"] is False


@pytest.mark.parametrize(
    ("fields", "status", "param", "words"),
    [
        ({"previous_response_id": "resp_123"}, 400, "previous_response_id", "not found"),
        ({"conversation": "conv_1"}, 404, "conversation", "not found"),
        ({"conversation": {"id": "conv_1"}}, 404, "conversation", "not found"),
        (
            {"previous_response_id": "resp_1", "conversation": "conv_1"},
            400,
            None,
            "cannot both be given",
        ),
        ({"background": True}, 400, "background", "not supported"),
    ],
)
def test_unknown_history_and_background_are_refused_with_a_reason(
    client, fields, status, param, words
):
    response = client.post(RESPONSES, json={"input": "x", **fields})
    error = assert_openai_error(response, status, param=param)
    assert words in error["message"]


BAD = [
    ({"input": []}, "input"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, None),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
        "input[0].content[0]",
    ),
    ({"input": "x", "tools": [{"type": "web_search_preview"}]}, "tools[0].type"),
    ({"input": "x", "tool_choice": "required"}, "tool_choice"),
    (
        {
            "input": "x",
            "tools": [{"type": "function", "name": "f"}],
            "tool_choice": {"type": "function", "name": "g"},
        },
        "tool_choice",
    ),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "max_output_tokens": 10**6}, "max_output_tokens"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "r"}}}, "text.format"),
    (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1, 2]"}]},
        "input[0].arguments",
    ),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
]


@pytest.mark.parametrize(("body", "param"), BAD)
def test_malformed_requests_are_400(client, body, param):
    response = client.post(RESPONSES, json=body)
    error = assert_openai_error(response, 400)
    if param is not None:
        assert error["param"] == param


def test_schema_errors_name_text_format_and_tools(client):
    unenforceable = {"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 3}}}
    fmt = {"type": "json_schema", "name": "r", "schema": unenforceable}
    response = client.post(RESPONSES, json={"input": "x", "text": {"format": fmt}})
    assert_openai_error(response, 400, param="text.format", code="invalid_json_schema")
    tools = [
        {"type": "function", "name": "ok", "parameters": {"type": "object"}},
        {"type": "function", "name": "bad", "parameters": unenforceable},
    ]
    response = client.post(RESPONSES, json={"input": "x", "tools": tools})
    assert_openai_error(response, 400, param="tools[1].parameters", code="invalid_json_schema")


def test_image_errors_name_the_input_part(client):
    body = {
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": "First"}, *image_input("data:image/png;base64,!!")],
    }
    response = client.post(RESPONSES, json=body)
    assert_openai_error(response, 400, param="input[1].content[1].image_url")


def test_image_options_work_as_in_chat(client):
    url = image_data_url(448, 448)
    full = client.post(RESPONSES, json={"input": image_input(url), "max_output_tokens": 1})
    low = client.post(
        RESPONSES,
        json={
            "input": image_input(url, detail="low", max_pixels=112 * 112),
            "max_output_tokens": 1,
        },
    )
    assert full.status_code == low.status_code == 200, low.text
    # 448x448 is 16x16 image tokens; capped at 112x112 it is 4x4
    assert full.json()["usage"]["input_tokens"] - low.json()["usage"]["input_tokens"] == 256 - 16


def test_too_many_images_is_400(client, server):
    url = image_data_url(32, 32)
    content = [{"type": "input_image", "image_url": url}] * 5
    response = client.post(RESPONSES, json={"input": [{"role": "user", "content": content}]})
    assert_openai_error(response, 400, param="input", code="too_many_images")


def test_unknown_model_is_404(client):
    response = client.post(RESPONSES, json={"input": "x", "model": "gpt-5"})
    assert_openai_error(response, 404, param="model", code="model_not_found")


def test_counted_under_its_own_route(client, server):
    labels = {"route": "/v1/responses", "status": "200"}
    before = value(scrape(client), "lingshu_requests_total", **labels)
    assert client.post(RESPONSES, json={"input": "x", "max_output_tokens": 1}).status_code == 200
    assert value(scrape(client), "lingshu_requests_total", **labels) == before + 1


def test_audited_and_keyed_like_chat(secured):
    headers = {"Authorization": f"Bearer {FILE_KEYS[35]}"}
    with httpx.Client(base_url=secured.base_url, timeout=120) as http:
        assert_openai_error(http.post(RESPONSES, json={"input": "x"}), 401)
        url = image_data_url(64, 64)
        response = http.post(
            RESPONSES, json={"input": image_input(url), "max_output_tokens": 2}, headers=headers
        )
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]

    def records() -> list[dict]:  # written after the answer is sent (the file, at the first)
        if not secured.audit_path.exists():
            return []
        lines = secured.audit_path.read_text().splitlines()
        return [r for r in map(json.loads, lines) if r.get("request_id") == request_id]

    assert wait_for(records)
    (record,) = records()
    assert record["route"] == "/v1/responses"
    assert record["images"] and record["images"][0]["width"] == 64
    assert "Findings?" not in secured.audit_path.read_text()


def test_an_earlier_call_with_blank_arguments_is_an_empty_object(client):
    """Found by the schema fuzzer: whitespace-only arguments were a 500."""
    call = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "\t "}
    result = {"type": "function_call_output", "call_id": "c1", "output": "done"}
    body = {"input": [{"role": "user", "content": "x"}, call, result], "max_output_tokens": 1}
    assert client.post(RESPONSES, json=body).status_code == 200
