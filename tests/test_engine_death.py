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
    stream_lines: list[str] = []

    def stream() -> None:
        body = {
            "messages": [{"role": "user", "content": "A long report."}],
            "max_tokens": 4000,
            "ignore_eos": True,
            "stream": True,
        }
        try:
            with httpx.stream(
                "POST", f"{base}/v1/chat/completions", json=body, timeout=60
            ) as response:
                stream_lines.extend(line for line in response.iter_lines() if line)
        except httpx.HTTPError:
            stream_lines.append("<connection lost>")

    reader = threading.Thread(target=stream)
    reader.start()
    while len(stream_lines) < 3 and reader.is_alive():  # wait until tokens are flowing
        time.sleep(0.05)
    cores = engine_core_processes(doomed_server.process.pid)
    assert cores, "expected vLLM's engine core to run in a child process"
    for core in cores:
        core.kill()
    reader.join(60)
    # A mid-stream failure arrives as an SSE error event, then [DONE].
    assert stream_lines[-1] == "data: [DONE]", stream_lines[-3:]
    error = json.loads(stream_lines[-2].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and error["message"]

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
