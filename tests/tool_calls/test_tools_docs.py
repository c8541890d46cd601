"""The tool-calling guide's examples, run as written against the session's server."""

from __future__ import annotations

import ast
import json
import re
import sys

import pytest

from tests.utils.docs import on_server, only_block, page, run_bash, run_example

PAGE = "guides/tools.md"


@pytest.mark.e2e
def test_curl_example_returns_a_valid_call(server, tmp_path):
    answer = json.loads(run_bash(example("shell", server.port), tmp_path))
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]  # parallel_tool_calls false: one call
    assert call["function"]["name"] == "find_prior_studies"
    arguments = json.loads(call["function"]["arguments"])
    assert re.fullmatch("[A-Z]{2}[0-9]{4}", arguments["mrn"])
    assert set(arguments) <= {"mrn", "modality"}


@pytest.mark.e2e
def test_sdk_example_calls_then_answers(server, tmp_path):
    output = run_example([sys.executable, "-c", example("py", server.port)], tmp_path)
    lines = output.splitlines()
    (call,) = [line for line in lines if line.startswith("find_prior_studies ")]
    arguments = ast.literal_eval(call.split(" ", 1)[1])  # the dict the example printed
    assert re.fullmatch("[A-Z]{2}[0-9]{4}", arguments["mrn"])
    assert lines.index(call) < len(lines) - 1  # the answer to the result was printed after it


def example(language: str, port: int) -> str:
    return on_server(only_block(language, page(PAGE)), port)
