"""Faults: an engine step that never comes, image hosts that stall mid-answer, and the engine
core killed mid-stream. Deadlines, disconnects and /health must all still answer promptly."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from lingshu_server.demo_model import ensure_demo_model
from tests.reliability.checks import assert_error_shape
from tests.reliability.client import HEALTH_BOUND_S, Target
from tests.reliability.corpus import chat, image_request
from tests.reliability.report import ReliabilityReport
from tests.reliability.server_config import IMAGE_FETCH_TIMEOUT_S, KEY, MAX_TOKENS_CAP
from tests.reliability.stalling_engine import InProcessServer, stalling_server
from tests.utils.server import RunningServer

SLACK_S = 1.5
DEATH_HEALTH_BOUND_S = 5.0


@pytest.fixture(scope="module")
def stalled(report: ReliabilityReport) -> Iterator[tuple[InProcessServer, Target]]:
    with stalling_server(str(ensure_demo_model()), KEY) as server:
        yield server, Target(server.base_url, KEY, report)


def sse_events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line.strip()]


@pytest.mark.parametrize("stream", [False, True])
def test_a_stalled_step_ends_at_the_request_deadline(stalled, stream: bool):
    server, target = stalled
    body = chat(max_tokens=50, min_tokens=2, request_timeout=1.0, stream=stream)

    def send() -> tuple[httpx.Response, float]:
        started = time.perf_counter()
        return target.chat(body, timeout=30), time.perf_counter() - started

    (response, elapsed), worst = target.while_watching_health(send, "a stalled engine step")
    assert response.status_code == 200
    assert elapsed < 1.0 + SLACK_S and worst < HEALTH_BOUND_S
    if stream:
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        finishes = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-1]]
        assert finishes[-1] == "length"
    else:
        completion = response.json()
        assert completion["choices"][0]["finish_reason"] == "length"
        assert completion["usage"]["completion_tokens"] == 2


def test_a_stall_before_the_first_token_ends_at_the_deadline(stalled):
    server, target = stalled
    started = time.perf_counter()
    response = target.chat(chat(max_tokens=50, request_timeout=1.0), timeout=30)
    assert response.status_code == 200
    assert time.perf_counter() - started < 1.0 + SLACK_S
    assert response.json()["choices"][0]["finish_reason"] == "length"


def closed_after(server: InProcessServer, closed_before: int, since: float) -> float:
    deadline = time.monotonic() + 5
    while len(server.engine.closed_at) == closed_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.engine.closed_at) > closed_before, "the stalled generation was not aborted"
    return server.engine.closed_at[-1] - since


def test_a_client_leaving_a_stalled_stream_aborts_it(stalled):
    server, target = stalled
    closed_before = len(server.engine.closed_at)
    body = chat(max_tokens=50, min_tokens=1, stream=True)
    with httpx.Client(base_url=target.base_url, timeout=30) as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers=target.auth()) as r:
            target.count(r.status_code)
            for line in r.iter_lines():
                if '"content":"x"' in line:
                    break
        left = time.monotonic()
    assert closed_after(server, closed_before, left) < 1.0


def test_a_client_leaving_a_stalled_completion_aborts_it(stalled):
    server, target = stalled
    closed_before = len(server.engine.closed_at)
    with pytest.raises(httpx.ReadTimeout):
        target.chat(chat(max_tokens=50, min_tokens=1), timeout=0.5)
    left = time.monotonic()
    assert closed_after(server, closed_before, left) < 1.0


# --------------------------------------------------------------------- stalling image hosts


def test_image_hosts_that_stall_are_cut_off_without_holding_others(target: Target, image_host):
    stalls = [f"http://{image_host}/{name}.png" for name in ("partial", "silent")] * 2
    results: list[tuple[httpx.Response, float]] = []

    def fetch(url: str) -> None:
        started = time.perf_counter()
        response = target.chat(image_request(url), timeout=60)
        results.append((response, time.perf_counter() - started))

    def all_stalls() -> float:
        threads = [threading.Thread(target=fetch, args=(url,)) for url in stalls]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        started = time.perf_counter()
        ordinary = target.chat(chat(max_tokens=2), timeout=30)  # others are served meanwhile
        took = time.perf_counter() - started
        assert ordinary.status_code == 200
        for thread in threads:
            thread.join()
        return took

    ordinary_s, worst = target.while_watching_health(all_stalls, "stalling image hosts")
    assert ordinary_s < 5 and worst < HEALTH_BOUND_S
    assert len(results) == len(stalls)
    for response, elapsed in results:
        assert response.status_code == 400
        assert_error_shape(response, "image_fetch_failed", "messages[0].content[0].image_url")
        assert elapsed < IMAGE_FETCH_TIMEOUT_S + SLACK_S


# --------------------------------------------------------------------- engine death (last)


def engine_cores(pid: int) -> list[psutil.Process]:
    children = psutil.Process(pid).children(recursive=True)
    return [p for p in children if "EngineCore" in " ".join(p.cmdline()) + p.name()]


@pytest.mark.ends_engine
def test_engine_core_killed_mid_stream(rel_server: RunningServer, target: Target, report):
    """Streams in flight get an error event, /health turns 503 within 5 s, the process (the
    shared engine's, serving this front end) exits non-zero. Clients stream in a loop so that
    some stream is mid-flight at the kill."""
    errors: list[float] = []
    stop = threading.Event()
    first_tokens = threading.Event()
    body = chat(max_tokens=MAX_TOKENS_CAP, ignore_eos=True, stream=True)

    def stream_forever() -> None:
        with httpx.Client(base_url=target.base_url, timeout=30) as http:
            while not stop.is_set():
                try:
                    with http.stream(
                        "POST", "/v1/chat/completions", json=body, headers=target.auth()
                    ) as response:
                        for line in response.iter_lines():
                            if line.startswith('data: {"error"'):
                                errors.append(time.monotonic())
                                error = json.loads(line.removeprefix("data: "))["error"]
                                assert error["type"] == "server_error" and error["message"]
                            elif '"content"' in line:
                                first_tokens.set()
                except httpx.HTTPError:
                    return  # the server went away

    # A Responses stream too: its failure is an `error` event, then `response.failed`. Its
    # grammar (a string longer than the token cap) keeps it going to the cap, never ending early.
    endings: list[list[tuple[str, dict]]] = []
    early_tokens = threading.Event()  # a Responses stream is in its first half
    long_answer = {
        "type": "json_schema",
        "name": "r",
        "schema": {"type": "string", "minLength": 999},
    }
    answer = {
        "input": "Findings?",
        "max_output_tokens": MAX_TOKENS_CAP,
        "text": {"format": long_answer},
        "stream": True,
    }

    def respond_forever() -> None:
        with httpx.Client(base_url=target.base_url, timeout=30) as http:
            while not stop.is_set():
                events: list[tuple[str, dict]] = []
                try:
                    with http.stream(
                        "POST", "/v1/responses", json=answer, headers=target.auth()
                    ) as response:
                        kind = ""
                        for line in response.iter_lines():
                            if line.startswith("event: "):
                                kind = line.removeprefix("event: ")
                            elif line.startswith("data: "):
                                events.append((kind, json.loads(line.removeprefix("data: "))))
                                deltas = sum(k == "response.output_text.delta" for k, _ in events)
                                if 0 < deltas < MAX_TOKENS_CAP // 2:
                                    early_tokens.set()
                except httpx.HTTPError:
                    return  # the server went away
                finally:
                    endings.append(events[-2:])

    clients = [threading.Thread(target=stream_forever) for _ in range(4)]
    clients.append(threading.Thread(target=respond_forever))
    for client in clients:
        client.start()
    assert first_tokens.wait(30)
    cores = engine_cores(rel_server.process.pid)
    assert cores, "expected vLLM's engine core in a child process"
    # Kill right after a token arrived, so that stream is surely still in flight however
    # loaded the machine is (a fixed pause could land between streams).
    early_tokens.clear()
    assert early_tokens.wait(30)
    first_tokens.clear()
    assert first_tokens.wait(30)
    killed = time.monotonic()
    for core in cores:
        core.kill()

    health_503 = None
    refused: httpx.Response | None = None
    with httpx.Client(base_url=target.base_url) as http:
        while time.monotonic() - killed < 30 and health_503 is None:
            try:
                if http.get("/health", timeout=5).status_code == 503:
                    health_503 = time.monotonic() - killed
                    # a new request, while the process is still up, is refused the same way
                    refused = http.post(
                        "/v1/chat/completions", json=chat(), headers=target.auth(), timeout=30
                    )
            except httpx.HTTPError:
                health_503 = time.monotonic() - killed  # gone entirely: not healthy either
            time.sleep(0.05)
    code = rel_server.process.wait(60)
    exited = time.monotonic() - killed
    stop.set()
    for client in clients:
        client.join(30)

    report.engine_death = {
        "first stream error event": (errors[0] - killed) if errors else float("nan"),
        "/health 503": health_503 if health_503 is not None else float("nan"),
        "process exit": exited,
    }
    assert errors, "no stream in flight got an error event"
    cut = [ending for ending in endings if [k for k, _ in ending] == ["error", "response.failed"]]
    assert cut, f"no Responses stream ended in error and response.failed: {endings[-3:]}"
    (_, error_event), (_, last) = cut[0]
    assert error_event["code"] == "engine_unavailable" and error_event["message"]
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"
    assert health_503 is not None and health_503 < DEATH_HEALTH_BOUND_S
    assert code != 0
    if refused is not None:
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["type"] == "server_error"
    # The streams cut short are logged with their real outcome, not as the 200 they began as.
    access = [
        json.loads(line)
        for line in rel_server.log_text().splitlines()
        if line.startswith("{") and '"lingshu_server.access"' in line
    ]
    failed = [line for line in access if line.get("stream_error")]
    assert failed and all(line["status"] >= 500 for line in failed)
