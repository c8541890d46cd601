"""Forced tool calls from the random demo model, through the `openai` SDK: with tool_choice
`required` or a named function, every call's arguments parse and validate against the tool's
schema (the structured-output battery's schemas), streamed or not, one call or several."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.utils.function_tools import (
    as_parameters,
    check_calls,
    completed,
    function_tool,
    streamed,
)
from tests.utils.schemas import SCHEMAS

pytestmark = pytest.mark.e2e  # every call the model makes must parse and validate

MAX_TOKENS = 2000
NAMES = sorted(SCHEMAS)
PARAMETERS = {f"f_{i}": as_parameters(SCHEMAS[name]) for i, name in enumerate(NAMES)}
MESSAGES = [{"role": "user", "content": "Call the right tool."}]


@pytest.fixture
def sdk(server):
    return openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=600
    )


def ask(sdk, model: str, tools: list[str], choice, parallel: bool, seed: int, stream: bool):
    params = {
        "model": model,
        "messages": MESSAGES,
        "tools": [function_tool(name, PARAMETERS[name]) for name in tools],
        "tool_choice": choice,
        "parallel_tool_calls": parallel,
        "max_tokens": MAX_TOKENS,
        "temperature": 1,
        "seed": seed,
    }
    if stream:
        return streamed(sdk.chat.completions.create(**params, stream=True))
    return completed(sdk.chat.completions.create(**params))


def problems(answer, allowed: list[str], one_call: bool) -> list[str]:
    found = check_calls(answer, {name: PARAMETERS[name] for name in allowed})
    if answer.finish_reason != "tool_calls":
        found.append(f"finish_reason {answer.finish_reason}")
    if answer.content:
        found.append(f"text beside forced calls: {answer.content[:100]!r}")
    if not answer.calls or (one_call and len(answer.calls) != 1):
        found.append(f"{len(answer.calls)} calls")
    return found


def test_named_function_every_schema(sdk, server):
    """Each schema as the function named in tool_choice, beside a decoy it must not call."""
    cases = [(name, stream) for name in PARAMETERS for stream in (False, True)]

    def run(case: tuple[str, bool]) -> str | None:
        name, stream = case
        decoy = next(other for other in PARAMETERS if other != name)
        choice = {"type": "function", "function": {"name": name}}
        answer = ask(sdk, server.model, [decoy, name], choice, False, 1, stream)
        found = problems(answer, [name], one_call=True)
        return f"{name} {NAMES[int(name[2:])]} stream={stream}: {found}" if found else None

    with ThreadPoolExecutor(8) as pool:
        failures = [f for f in pool.map(run, cases) if f]
    assert len(cases) >= 50
    assert not failures, "\n".join(failures)


def test_required_chooses_among_tools_in_parallel(sdk, server):
    """`required` with three tools and parallel calls: one or more calls, each valid."""
    groups = [list(PARAMETERS)[i : i + 3] for i in range(0, len(PARAMETERS), 3)]
    cases = [
        (tuple(g), seed, stream) for g in groups for seed in (1, 2) for stream in (False, True)
    ]

    def run(case) -> tuple[str | None, int]:
        tools, seed, stream = case
        answer = ask(sdk, server.model, list(tools), "required", True, seed, stream)
        found = problems(answer, list(tools), one_call=False)
        return (f"{case}: {found}" if found else None), len(answer.calls)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, cases))
    failures = [f for f, _ in results if f]
    assert not failures, "\n".join(failures)
    assert max(count for _, count in results) > 1  # parallel calls do happen


def test_required_without_parallel_calls_makes_one_call(sdk, server):
    tools = list(PARAMETERS)[:4]
    for stream in (False, True):
        for seed in range(3):
            answer = ask(sdk, server.model, tools, "required", False, seed, stream)
            assert problems(answer, tools, one_call=True) == []
