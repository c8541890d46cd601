"""Batches on the real engine, through the openai SDK: each line's answer is the one the live
endpoint gives the same request (greedy, so token for token), images, structured output and
tools included, for each of the three endpoints a batch may call."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from openai import OpenAI

from tests.utils.batches import chat_body, outcomes, request_line, upload, wait_for
from tests.utils.docs import on_server, only_block, page, run_example
from tests.utils.images import image_data_url
from tests.utils.server import RunningServer, SharedEngine
from tests.utils.tools import require_node

pytestmark = pytest.mark.e2e

JS = Path(__file__).resolve().parents[1] / "js"

IMAGE = image_data_url(96, 80, seed=3)
SCHEMA = {
    "type": "object",
    "properties": {"finding": {"type": "string", "maxLength": 20}, "urgent": {"type": "boolean"}},
    "required": ["finding", "urgent"],
    "additionalProperties": False,
}
TOOL = {
    "type": "function",
    "function": {
        "name": "order_followup",
        "description": "Order a follow-up study.",
        "parameters": {
            "type": "object",
            "properties": {"modality": {"type": "string", "enum": ["CT", "MR", "XR"]}},
            "required": ["modality"],
        },
    },
}


def without_call_ids(choices: list[dict]) -> list[dict]:
    """The choices with each tool call's id (random, `call_...`) left out."""
    for choice in choices:
        for call in choice["message"].get("tool_calls") or []:
            call.pop("id")
    return choices


@pytest.fixture(scope="module")
def batches_server(
    shared_engine: SharedEngine, tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    state: Path = tmp_path_factory.mktemp("batches-state")
    return shared_engine.frontend("batches", "--state-dir", str(state))


@pytest.fixture
def sdk(batches_server: RunningServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{batches_server.base_url}/v1", api_key="none", timeout=120) as client:
        yield client


def test_chat_lines_answer_as_the_live_endpoint_token_for_token(sdk: OpenAI):
    greedy = {"temperature": 0, "max_tokens": 12}
    bodies = {
        "xray": chat_body("Describe the findings.", image=IMAGE, **greedy),
        "json": chat_body(
            "Report as JSON.",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "finding", "schema": SCHEMA, "strict": True},
            },
            **{**greedy, "max_tokens": 60},
        ),
        "tool": chat_body(
            "Order a follow-up CT.",
            tools=[TOOL],
            tool_choice="required",
            temperature=1,
            seed=7,
            max_tokens=400,
        ),
    }
    batch = wait_for(
        sdk,
        sdk.batches.create(
            input_file_id=upload(sdk, [request_line(cid, body) for cid, body in bodies.items()]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
        timeout=300,
    )
    assert batch.status == "completed" and batch.request_counts.completed == len(bodies)
    found = outcomes(sdk, batch)
    answers = {}
    for cid, body in bodies.items():
        (line,) = found[cid]
        assert line["response"]["status_code"] == 200, line
        answer = line["response"]["body"]
        live = sdk.chat.completions.with_raw_response.create(**body).http_response.json()
        assert without_call_ids(answer["choices"]) == without_call_ids(live["choices"])
        # the live request runs second and finds the line's prompt in the prefix cache
        for usage in (answer["usage"], live["usage"]):
            usage.pop("prompt_tokens_details", None)
        assert answer["usage"] == live["usage"]
        answers[cid] = answer["choices"][0]["message"]
    jsonschema.validate(json.loads(answers["json"]["content"]), SCHEMA)
    assert answers["tool"].get("tool_calls"), answers["tool"]
    call = answers["tool"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"])["modality"] in ("CT", "MR", "XR")


@pytest.mark.parametrize(
    ("endpoint", "body", "text_of"),
    [
        (
            "/v1/responses",
            {
                "model": "lingshu-demo",
                "input": "Findings?",
                "temperature": 0,
                "max_output_tokens": 8,
            },
            lambda answer: answer["output"][0]["content"][0]["text"],
        ),
        (
            "/v1/completions",
            {"model": "lingshu-demo", "prompt": "Findings:", "temperature": 0, "max_tokens": 8},
            lambda answer: answer["choices"][0]["text"],
        ),
    ],
)
def test_responses_and_completions_lines_answer_as_live(
    sdk: OpenAI, batches_server: RunningServer, endpoint, body, text_of
):
    batch = wait_for(
        sdk,
        sdk.batches.create(
            input_file_id=upload(sdk, [request_line("one", body, url=endpoint)]),
            endpoint=endpoint,
            completion_window="24h",
        ).id,
        timeout=300,
    )
    (line,) = outcomes(sdk, batch)["one"]
    live = httpx.post(f"{batches_server.base_url}{endpoint}", json=body, timeout=120)
    assert text_of(line["response"]["body"]) == text_of(live.json())


def test_the_guides_example_runs_a_batch_as_written(batches_server: RunningServer, tmp_path):
    example = on_server(only_block("py", page("guides/batches.md")), batches_server.port)
    output = run_example([sys.executable, "-c", example], tmp_path).splitlines()
    assert output[0].startswith("completed ")
    assert "completed=3" in output[0] and "failed=0" in output[0]
    assert sorted(output[1:]) == [f"study-1.2.840.99.{i} 200" for i in (1, 2, 3)]


def test_the_js_sdk_creates_runs_reads_and_cancels_batches(batches_server: RunningServer):
    executable = require_node(JS, "openai")
    env = {**os.environ, "LINGSHU_URL": batches_server.base_url, "LINGSHU_MODEL": "lingshu-demo"}
    result = subprocess.run(
        [executable, str(JS / "batches.mjs")], capture_output=True, text=True, env=env, timeout=300
    )
    try:
        report = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no report from the script:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    failed = [r["error"] for r in report["results"] if not r["ok"]]
    assert not failed, "\n\n".join(failed)
    assert [r["name"] for r in report["results"]] == [
        "batches: created, run, output read",
        "batches: cancelled",
        "batches: unknown id",
    ]
