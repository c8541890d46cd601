"""schemathesis against the live /openapi.json: requests that fit the document (positive) and
requests that break it (negative), every answer checked against the document: no 5xx, only
documented statuses and content types, bodies that match their schemas, and schema-invalid
requests refused."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from hypothesis.errors import Unsatisfiable
from schemathesis import checks
from schemathesis.generation.modes import GenerationMode

from tests.reliability.client import Target
from tests.reliability.corpus import chat
from tests.reliability.report import ReliabilityReport
from tests.reliability.server_config import KEY
from tests.utils.in_process import InProcessServer

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


def test_the_document_describes_the_server(target: Target):
    document = target.send("GET", "/openapi.json").json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert set(chat["responses"]) >= {"200", "400", "401", "404", "413", "415", "429", "503"}
    assert "422" not in chat["responses"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["security"] == [{"HTTPBearer": []}]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    schemas = document["components"]["schemas"]
    assert {"ChatCompletion", "ChatCompletionChunk", "ErrorResponse"} <= set(schemas)
    assert "HTTPValidationError" not in schemas


@pytest.mark.parametrize(
    "body",
    [
        chat(max_tokens=4),
        chat(max_tokens=4, n=2, temperature=1.0, logprobs=True, top_logprobs=2),
        chat(max_tokens=4, stream=True),
        chat(
            max_tokens=4, n=2, temperature=1.0, stream=True, stream_options={"include_usage": True}
        ),
        chat(max_tokens=4, stop=""),
    ],
    ids=["completion", "n-logprobs", "stream", "stream-n-usage", "error"],
)
def test_answers_match_the_document(target: Target, body: dict):
    """Each kind of answer, JSON and SSE events alike, against its documented schema (random
    examples reach streams rarely)."""
    schema = schemathesis.openapi.from_url(f"{target.base_url}/openapi.json")
    case = schema["/v1/chat/completions"]["POST"].Case(body=body, media_type="application/json")
    response = case.call_and_validate(headers=target.auth(), timeout=60, checks=CHECKS[:-1])
    target.count(response.status_code)


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x", "max_output_tokens": 4},
        {"input": "x", "max_output_tokens": 4, "stream": True},
        {
            "input": "x",
            "max_output_tokens": 300,
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
            "stream": True,
        },
        {"input": "x", "background": True},
    ],
    ids=["response", "stream", "stream-function-call", "error"],
)
def test_responses_match_the_document(target: Target, body: dict):
    """/v1/responses: the response object, its stream events and an error, as documented."""
    schema = schemathesis.openapi.from_url(f"{target.base_url}/openapi.json")
    case = schema["/v1/responses"]["POST"].Case(body=body, media_type="application/json")
    response = case.call_and_validate(headers=target.auth(), timeout=60, checks=CHECKS[:-1])
    target.count(response.status_code)


# The operations are shared out among a few tests, so parallel workers can take one each.
SHARDS = 4


@pytest.fixture
def edge_target(_fake_rel_server: InProcessServer, report: ReliabilityReport) -> Target:
    """The reliability server in process on the fake engine: what is fuzzed is the HTTP edge."""
    return Target(_fake_rel_server.base_url, KEY, report)


# Generating examples takes half a minute of CPU in this process: the fuzzing runs in the full
# suite beside the engine tests (on the fake engine still), not in the fast tier.
@pytest.mark.e2e
@pytest.mark.beside_engine
@pytest.mark.parametrize("shard", range(SHARDS))
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_schemathesis(
    edge_target: Target, report: ReliabilityReport, long: bool, mode: GenerationMode, shard: int
):
    target = edge_target
    schema = schemathesis.openapi.from_url(f"{target.base_url}/openapi.json")
    # Generating examples is most of this test's time (hypothesis, in this process): the short
    # mode keeps the fast tier fast; --reliability-long runs the full count.
    examples = 1000 if long else 30
    failures: list[str] = []
    sent = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= SHARDS
    for operation in operations[shard::SHARDS]:

        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,  # the same examples in every run: a failure reproduces
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.generate],
        )
        def check(case: schemathesis.Case) -> None:
            nonlocal sent
            sent += 1
            # A query string's unknown parameters are ignored, as OpenAI's API and FastAPI do
            # (a client's `extra_query`); schemathesis counts them as data to refuse, so a GET
            # (whose only input is the query) is not held to refusing them.
            expected = CHECKS if case.operation.method.upper() != "GET" else CHECKS[:-1]
            try:
                response = case.call_and_validate(
                    headers=target.auth(), timeout=60, checks=expected
                )
                target.count(response.status_code)
            except Exception as exc:  # noqa: BLE001 - collected, reported together below
                failures.append(f"{case.operation.label} ({mode.value}): {exc}"[:2000])

        try:
            check()
        except Unsatisfiable:  # a negative request for an operation with no inputs
            assert mode is GenerationMode.NEGATIVE
    report.schema_examples += sent
    assert not failures, "\n\n".join(failures[:5])
