"""Two independent OpenAI-compatibility suites against the real secured server, run as a new
user runs them on a random-weight checkpoint: llm-comply (PyPI; its `openai-chat` and
`open-responses` formats, each response checked against the OpenAPI document the suite ships)
and compatcanary (npm). Both run once per session, side by side, against the secured front end
of the shared engine.

Each of their checks is classified once, here: **protocol** (every one must pass), or not judged
with the reason: **model-output** (what the model writes or decides, which random weights do not
reliably do) or **server choice** (a documented rule of this server that differs from the
suite's expectation). docs/development/conformance.md holds the table of suites, versions and
protocol checks; `test_the_docs_table_matches_the_classification` keeps it in step.

Needs `llm-comply` (the test extra) and Node 20+ with `npm ci --prefix tests/conformance`
(scripts/install-test.sh installs all three); without them these tests fail and say so."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import re
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.conftest import FILE_KEYS
from tests.utils.docs import DOCS
from tests.utils.tools import INSTALL_HINT, require_node

# llm-comply validates with jsonschema's RefResolver, which jsonschema deprecates
pytestmark = pytest.mark.filterwarnings("ignore:jsonschema.RefResolver:DeprecationWarning")

HERE = Path(__file__).resolve().parent
COMPATCANARY = HERE / "compatcanary.mjs"
# Keys no other test spends: the secured server allows 6 requests a minute per key, and the
# two suites send about two dozen requests between them, so requests take turns over these.
KEYS = FILE_KEYS[40:48]
# llm-comply requests at once, beside compatcanary's one: the secured server generates 2 at a
# time and queues 2 more (beyond, a 503), so one queue place stays free.
LLM_COMPLY_WORKERS = 2


@dataclass(frozen=True)
class NotJudged:
    kind: Literal["model-output", "server choice"]
    reason: str


PROTOCOL = "protocol"
Classification = Literal["protocol"] | NotJudged

ENDS_BY_ITSELF = NotJudged(
    "model-output",
    "the answer must end by itself (finish_reason `stop`, status `completed`): random weights "
    "end it at a random token, or run on to max_tokens",
)
WRITES_TEXT = NotJudged(
    "model-output",
    "the answer must hold some text: random weights may end it at its first token",
)
REASONS = NotJudged(
    "model-output",
    "reasoning models only (the suite runs it for o1, o3, o4, gpt-5, deepseek-r): "
    "Qwen2.5-VL writes no reasoning summary",
)
MODEL_OPTIONAL = NotJudged(
    "server choice",
    "a request without `model` is answered by the served model, as vLLM's server answers it "
    "(OpenAI's API requires `model`; the suite expects a 400)",
)
NO_COMPACTION = NotJudged(
    "server choice",
    "no /v1/responses/compact (OpenAI's compaction): a POST there is a 405, /v1/responses/{id} "
    "being a stored response's GET and DELETE, where the suite expects 404 or 200",
)

# llm-comply: every check (test case) of each format, with the parts of it that are not
# protocol. Every other part is protocol: the HTTP status ("request"), the response (and each
# stream event) against the suite's OpenAPI document ("schema"), and each of its validators.
LLM_COMPLY: dict[str, dict[str, dict[str, NotJudged] | NotJudged]] = {
    "openai-chat": {
        "chat-basic-response": {"chat_finish_reason('stop')": ENDS_BY_ITSELF},
        "chat-system-prompt": {"chat_finish_reason('stop')": ENDS_BY_ITSELF},
        "chat-multi-turn": {"chat_finish_reason('stop')": ENDS_BY_ITSELF},
        # tool_choice "required": the grammar makes the answer calls only, whatever the weights
        "chat-tool-calling": {},
        "chat-streaming-response": {"chat_streaming_has_delta": WRITES_TEXT},
        "chat-streaming-usage": {},
        "chat-image-input": {"chat_finish_reason('stop')": ENDS_BY_ITSELF},
        "chat-reasoning-summary": REASONS,
        "chat-error-handling": MODEL_OPTIONAL,
    },
    "open-responses": {
        "basic-response": {"completed_status": ENDS_BY_ITSELF},
        "system-prompt": {"completed_status": ENDS_BY_ITSELF},
        "multi-turn": {"completed_status": ENDS_BY_ITSELF},
        "tool-calling": {},
        "streaming-response": {"completed_status": ENDS_BY_ITSELF},
        "streaming-usage": {},
        "image-input": {"completed_status": ENDS_BY_ITSELF},
        "assistant-phase": {"completed_status": ENDS_BY_ITSELF},
        "response-output-phase-schema": {"completed_status": ENDS_BY_ITSELF},
        "compact-response": NO_COMPACTION,
        "compact-missing-model": NO_COMPACTION,
        "reasoning-summary": REASONS,
        "error-handling": MODEL_OPTIONAL,
    },
}
# compatcanary: its probes ("modern" profile: Chat Completions and the Responses API).
COMPATCANARY_PROBES: dict[str, Classification] = {
    "models.list": PROTOCOL,
    "chat.basic": PROTOCOL,
    "chat.streaming": PROTOCOL,
    "chat.tool_call": PROTOCOL,  # a named tool_choice: the grammar makes the call
    "chat.structured_output": PROTOCOL,  # a strict schema: the grammar makes the JSON
    "responses.basic": WRITES_TEXT,
    "responses.streaming": PROTOCOL,
}
SUITES = ("llm-comply openai-chat", "llm-comply open-responses", "compatcanary")


@dataclass
class Part:
    """One judged thing of a check: its outcome and the suite's messages about it."""

    check: str
    part: str
    classification: Classification
    messages: list[str] = dataclasses.field(default_factory=list)
    ran: bool = True

    @property
    def name(self) -> str:
        return f"{self.check}: {self.part}" if self.part else self.check

    @property
    def passed(self) -> bool:
        return self.ran and not self.messages


def classified_parts(fmt: str, check: str, validators: list[str]) -> dict[str, Classification]:
    """Every part of one llm-comply check, each with its classification."""
    entry = LLM_COMPLY[fmt][check]
    if isinstance(entry, NotJudged):
        return dict.fromkeys(["request", "schema", *validators], entry)
    return {part: entry.get(part, PROTOCOL) for part in ["request", "schema", *validators]}


# ---------------------------------------------------------------- running the suites


def _validator_name(validator: Any) -> str:
    return getattr(validator, "__qualname__", validator.__name__)


def _tagged(validator: Any) -> Any:
    """The validator, its messages tagged with its name (after the suite's own warning mark,
    which its runner reads first)."""
    name = _validator_name(validator)

    def run(response: Any, ctx: Any) -> list[str]:
        tagged = []
        for message in validator(response, ctx):
            warning = message.startswith("[warning] ")
            text = message.removeprefix("[warning] ")
            tagged.append(f"{'[warning] ' if warning else ''}[{name}] {text}")
        return tagged

    return run


def run_llm_comply_check(fmt: str, case: Any, server: Any, key: str) -> list[Part]:
    """One llm-comply check through the suite's own runner, its messages sorted by part."""
    import llm_comply
    from llm_comply.cli import _SPEC_FILES
    from llm_comply.config import ComplianceConfig
    from llm_comply.runner import TestRunner
    from llm_comply.schema import SpecLoader

    validators = [_validator_name(v) for v in case.validators]
    parts = {
        part: Part(case.id, part, classification)
        for part, classification in classified_parts(fmt, case.id, validators).items()
    }
    config = ComplianceConfig(
        base_url=f"{server.base_url}/v1", api_key=key, model=server.model, timeout=300
    )
    spec = Path(llm_comply.__file__).parent / "specs" / _SPEC_FILES[fmt]
    tagged = dataclasses.replace(case, validators=[_tagged(v) for v in case.validators])
    # a spec loader per check: its schema validators resolve $refs through state of their own
    result = TestRunner(config, [tagged], SpecLoader(str(spec))).run_one(tagged)
    if result.status.value == "skipped":
        for part in parts.values():
            part.ran = False
            part.messages = list(result.errors)
        return list(parts.values())
    for message in [*result.errors, *(f"[warning] {w}" for w in result.warnings)]:
        text = message.removeprefix("[warning] ")
        tag = re.match(r"^\[([^\]]+)\] ", text)
        if tag and tag.group(1) in parts:
            parts[tag.group(1)].messages.append(message)
        elif text.startswith(("HTTP ", "exception: ")):
            parts["request"].messages.append(message)
        else:
            parts["schema"].messages.append(message)
    return list(parts.values())


def start_llm_comply(pool: ThreadPoolExecutor, server: Any) -> dict[str, list[Future]]:
    """Every check of both formats with something to judge, submitted to `pool`, each with the
    next key. A check with nothing to judge (LLM_COMPLY classifies it whole) is not sent: the
    test suite's minutes are few."""
    from llm_comply.tests import get_tests

    futures: dict[str, list[Future]] = {}
    turn = 0
    for fmt in LLM_COMPLY:
        futures[f"llm-comply {fmt}"] = []
        for case in get_tests(fmt):
            if isinstance(LLM_COMPLY[fmt].get(case.id), NotJudged):
                futures[f"llm-comply {fmt}"].append(pool.submit(not_sent, fmt, case))
                continue
            key = KEYS[turn % len(KEYS)]
            turn += 1
            futures[f"llm-comply {fmt}"].append(
                pool.submit(run_llm_comply_check, fmt, case, server, key)
            )
    return futures


def not_sent(fmt: str, case: Any) -> list[Part]:
    validators = [_validator_name(v) for v in case.validators]
    return [
        Part(case.id, part, classification, ran=False)
        for part, classification in classified_parts(fmt, case.id, validators).items()
    ]


def start_compatcanary(server: Any) -> subprocess.Popen:
    env = {
        **os.environ,
        "LINGSHU_URL": server.base_url,
        "LINGSHU_MODEL": server.model,
        # from the other end of the keys than llm-comply's first turns
        "LINGSHU_KEYS": ",".join(reversed(KEYS)),
    }
    return subprocess.Popen(
        [node(), str(COMPATCANARY)],
        cwd=HERE,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def compatcanary_parts(process: subprocess.Popen) -> tuple[list[Part], str]:
    """The probes' outcomes (a warning is not a pass) and compatcanary's version."""
    stdout, stderr = process.communicate(timeout=600)
    try:
        report = json.loads(stdout)
    except ValueError:
        pytest.fail(f"no report from compatcanary:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    parts = []
    for result in report["results"]:
        classification = COMPATCANARY_PROBES.get(result["id"], PROTOCOL)
        part = Part(result["id"], "", classification)
        if result["status"] != "pass":
            part.messages.append(f"{result['status']}: {result['summary']}")
        parts.append(part)
    return parts, report["scanner"]["version"]


def node() -> str:
    return require_node(HERE, "compatcanary")


def llm_comply_installed() -> None:
    try:
        importlib.metadata.version("llm-comply")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"llm-comply is not installed (the test extra): {INSTALL_HINT}", pytrace=False)


@dataclass
class Runs:
    parts: dict[str, list[Part]]
    compatcanary_version: str


def run_suites(server: Any) -> Runs:
    """Both suites at once: llm-comply's checks on LLM_COMPLY_WORKERS threads, compatcanary
    in Node."""
    canary = start_compatcanary(server)
    try:
        with ThreadPoolExecutor(LLM_COMPLY_WORKERS) as pool:
            futures = start_llm_comply(pool, server)
            parts = {
                suite: [part for future in running for part in future.result()]
                for suite, running in futures.items()
            }
        parts["compatcanary"], version = compatcanary_parts(canary)
    finally:
        if canary.poll() is None:
            canary.kill()
            canary.wait()
    return Runs(parts, version)


@pytest.fixture(scope="module")
def _runs() -> dict[str, Runs]:
    return {}


@pytest.fixture
def runs(_runs: dict[str, Runs], request: pytest.FixtureRequest) -> Runs:
    """The suites' one run of the session, against the secured server."""
    if "secured" not in _runs:
        llm_comply_installed()
        node()  # before the server starts: a missing install fails at once
        _runs["secured"] = run_suites(request.getfixturevalue("secured"))
    return _runs["secured"]


# ---------------------------------------------------------------- the checks


@pytest.mark.e2e
@pytest.mark.parametrize("suite", SUITES)
def test_every_protocol_check_passes(runs, suite):
    parts = runs.parts[suite]
    failed = [
        f"{part.name}: {' | '.join(part.messages)}"
        for part in parts
        if part.classification == PROTOCOL and not part.passed
    ]
    assert not failed, "\n".join(failed)
    protocol = [part for part in parts if part.classification == PROTOCOL]
    assert len(protocol) == protocol_checks(suite)


@pytest.mark.e2e
@pytest.mark.parametrize("suite", SUITES)
def test_every_check_that_ran_is_classified_and_every_classified_one_ran(runs, suite):
    """A new version of a suite with checks of other names fails here until they are
    classified; a classification of a check the suite no longer has fails too."""
    if suite == "compatcanary":
        assert {part.check for part in runs.parts[suite]} == set(COMPATCANARY_PROBES)
        assert runs.compatcanary_version == installed_version(suite)
        return
    fmt = suite.removeprefix("llm-comply ")
    assert {part.check for part in runs.parts[suite]} == set(LLM_COMPLY[fmt])
    unsent = {part.check for part in runs.parts[suite] if not part.ran}
    assert unsent == {check for check, c in LLM_COMPLY[fmt].items() if isinstance(c, NotJudged)}


# ---------------------------------------------------------------- the docs table


def protocol_checks(suite: str) -> int:
    """How many protocol checks a suite has: parts of llm-comply's checks, compatcanary's
    probes."""
    if suite == "compatcanary":
        return sum(c == PROTOCOL for c in COMPATCANARY_PROBES.values())
    from llm_comply.tests import get_tests

    fmt = suite.removeprefix("llm-comply ")
    return sum(
        classification == PROTOCOL
        for case in get_tests(fmt)
        for classification in classified_parts(
            fmt, case.id, [_validator_name(v) for v in case.validators]
        ).values()
    )


def installed_version(suite: str) -> str:
    if suite == "compatcanary":
        lock = json.loads((HERE / "package-lock.json").read_text())
        return lock["packages"]["node_modules/compatcanary"]["version"]
    return importlib.metadata.version("llm-comply")


def test_the_docs_table_matches_the_classification():
    """docs/development/conformance.md: each suite's version and its protocol checks, all of
    which test_every_protocol_check_passes asserts pass."""
    llm_comply_installed()
    text = (DOCS / "development" / "conformance.md").read_text()
    rows = re.findall(
        r"^\| (llm-comply [a-z-]+|compatcanary) \| ([0-9.]+) \| (\d+) of (\d+) \|", text, re.M
    )
    assert {row[0]: row[1:] for row in rows} == {
        suite: (installed_version(suite), str(protocol_checks(suite)), str(protocol_checks(suite)))
        for suite in SUITES
    }
