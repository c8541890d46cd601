"""When the engine core process dies, /health and requests report it (503) instead of hanging."""

from __future__ import annotations

import json
import threading
import time

import httpx
import psutil
import pytest

from tests.utils.server import start_demo_server


@pytest.fixture(scope="module")
def doomed_server(tmp_path_factory):
    server = start_demo_server(tmp_path_factory.mktemp("doomed") / "server.log")
    yield server
    server.stop()


def test_health_reports_loading_stages_while_the_model_loads(doomed_server):
    statuses = doomed_server.startup_statuses
    assert {"status": "loading_engine", "stage": "loading_engine"} in statuses
    assert statuses[-1] == {"status": "ok", "stage": "ready"}
    stages = [
        json.loads(line)
        for line in doomed_server.log_text().splitlines()
        if line.startswith("{") and '"lingshu_server.lifecycle"' in line
    ]
    seen = [entry["stage"] for entry in stages]
    assert seen[:4] == ["checking_model", "loading_engine", "preparing_chat_template", "ready"]
    assert all(isinstance(entry["elapsed_s"], float) for entry in stages)
    loading = next(entry for entry in stages if entry["stage"] == "preparing_chat_template")
    assert loading["previous"] == "loading_engine" and loading["previous_s"] > 1


def engine_core_processes(pid: int) -> list[psutil.Process]:
    children = psutil.Process(pid).children(recursive=True)
    return [
        p for p in children if "EngineCore" in " ".join(p.cmdline()) or "EngineCore" in p.name()
    ]


def test_engine_core_death_fails_health_and_exits_non_zero(doomed_server):
    base = doomed_server.base_url
    assert httpx.get(f"{base}/health").status_code == 200
    chat = {
        "messages": [{"role": "user", "content": "A long report."}],
        "max_tokens": 4000,
        "ignore_eos": True,
        "stream": True,
    }
    long_text = {
        "type": "json_schema",
        "name": "r",
        "schema": {"type": "string", "minLength": 3000},
    }
    answer = {  # the grammar keeps it going: no early end
        "input": "A long report.",
        "max_output_tokens": 4000,
        "text": {"format": long_text},
        "stream": True,
    }
    stream_lines: list[str] = []
    response_lines: list[str] = []

    def stream(path: str, body: dict, lines: list[str]) -> None:
        try:
            with httpx.stream("POST", f"{base}{path}", json=body, timeout=60) as response:
                lines.extend(line for line in response.iter_lines() if line)
        except httpx.HTTPError:
            lines.append("<connection lost>")

    readers = [
        threading.Thread(target=stream, args=("/v1/chat/completions", chat, stream_lines)),
        threading.Thread(target=stream, args=("/v1/responses", answer, response_lines)),
    ]
    for reader in readers:
        reader.start()
    # wait until tokens are flowing in both
    while min(len(stream_lines), len(response_lines)) < 12 and all(r.is_alive() for r in readers):
        time.sleep(0.05)
    cores = engine_core_processes(doomed_server.process.pid)
    assert cores, "expected vLLM's engine core to run in a child process"
    for core in cores:
        core.kill()
    for reader in readers:
        reader.join(60)
    # A mid-stream failure arrives as an SSE error event, then [DONE].
    assert stream_lines[-1] == "data: [DONE]", stream_lines[-3:]
    error = json.loads(stream_lines[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and error["message"]
    # ...and in a Responses stream as an `error` event, then `response.failed`.
    assert response_lines[-4] == "event: error", response_lines[-4:]
    error_event = json.loads(response_lines[-3].removeprefix("data: "))
    assert error_event["type"] == "error" and error_event["code"] == "engine_unavailable"
    assert response_lines[-2] == "event: response.failed", response_lines[-4:]
    failed = json.loads(response_lines[-1].removeprefix("data: "))["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"
    assert failed["output"][0]["type"] == "message"

    deadline = time.monotonic() + 30
    status = 200
    while time.monotonic() < deadline and status == 200:
        try:
            status = httpx.get(f"{base}/health", timeout=5).status_code
        except httpx.HTTPError:
            status = -1  # the server went away entirely: also not healthy
        time.sleep(0.5)
    assert status in (503, -1)
    if status == 503:
        response = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=30,
        )
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "server_error"
    # ...and the process exits non-zero, so Kubernetes restarts it.
    assert doomed_server.process.wait(60) != 0
