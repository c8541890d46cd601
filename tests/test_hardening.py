"""Production hardening against a server configured as a hospital would run it: API keys
(inline and a rotating file), body and admission limits, per-key rates, deadlines, CORS, an
audit log, JSON logs without patient data, disconnect aborts and a graceful SIGTERM drain.

The HTTP edge (keys, limits, CORS, audit, logs, the drain's own logic) runs in process on the
fake engine; what the engine must do (abort a request, stop at a deadline, finish a stream
while its front end drains) is `e2e`."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import pytest

from tests.conftest import ALLOWED_ORIGIN, FILE_KEYS, INLINE_KEY, MAX_BODY
from tests.utils.errors import assert_openai_error
from tests.utils.images import data_url, encode, gradient_image, image_part
from tests.utils.in_process import InProcessServer
from tests.utils.in_process_care import process_logging_kept, slow_steps
from tests.utils.metrics import metric
from tests.utils.server import RunningServer
from tests.utils.waiting import wait_for

SECRET_PHRASE = "PATIENT-SECRET-PHRASE-8841 Jane Roe DOB 1950-01-01"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat_body(**params) -> dict:
    return {"messages": [{"role": "user", "content": "Findings?"}], "max_tokens": 4, **params}


def post(server: RunningServer, key: str | None, body: dict, **kwargs) -> httpx.Response:
    headers = {**(auth(key) if key else {}), **kwargs.pop("headers", {})}
    timeout = kwargs.pop("timeout", 120)
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=timeout
    )


def running_requests(server: RunningServer) -> float:
    return metric(server.base_url, "vllm:num_requests_running")


# ------------------------------------------------------------------------------- API keys


def test_missing_and_wrong_keys_are_401(secured):
    error = assert_openai_error(post(secured, None, chat_body()), 401, code="invalid_api_key")
    assert "API key" in error["message"]
    assert_openai_error(post(secured, "sk-wrong", chat_body()), 401, code="invalid_api_key")
    response = httpx.get(f"{secured.base_url}/v1/models", headers={"Authorization": "Basic x"})
    assert_openai_error(response, 401, code="invalid_api_key")


def test_inline_and_file_keys_work_with_the_openai_sdk(secured):
    import openai

    for key in (INLINE_KEY, FILE_KEYS[0]):
        sdk = openai.OpenAI(base_url=f"{secured.base_url}/v1", api_key=key, max_retries=0)
        completion = sdk.chat.completions.create(
            model="lingshu-demo", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert completion.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{secured.base_url}/v1", api_key="nope", max_retries=0
        ).models.list()


def test_health_and_metrics_need_no_key(secured):
    assert httpx.get(f"{secured.base_url}/health").status_code == 200
    assert httpx.get(f"{secured.base_url}/ready").status_code == 200
    assert httpx.get(f"{secured.base_url}/metrics").status_code == 200


def test_key_file_rotation_without_restart(secured):
    old, new = FILE_KEYS[1], "sk-rotated-in-5e2c"
    assert post(secured, old, chat_body()).status_code == 200
    keys = [k for k in FILE_KEYS if k != old] + [new]
    time.sleep(0.05)  # a new mtime even on coarse filesystems
    secured.key_file.write_text("\n".join(keys) + "\n")
    deadline = time.monotonic() + 5  # the file is looked at once a second
    while post(secured, new, chat_body()).status_code == 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert post(secured, new, chat_body()).status_code == 200
    assert_openai_error(post(secured, old, chat_body()), 401, code="invalid_api_key")


def test_refuses_to_listen_on_all_interfaces_without_keys(capsys):
    """`python -m lingshu_server` exits with what `main` returns; called here in process."""
    from lingshu_server.cli import main

    with process_logging_kept():
        assert main(["demo", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "without API keys" in err
    assert "--allow-unauthenticated" in err


def test_allow_unauthenticated_flag_lifts_the_refusal():
    from lingshu_server.core.settings import Settings
    from lingshu_server.http.auth import insecure_listen_reason

    assert insecure_listen_reason(Settings(model="m", host="0.0.0.0")) is not None
    assert insecure_listen_reason(Settings(model="m", host="0.0.0.0", api_keys="k")) is None
    assert (
        insecure_listen_reason(Settings(model="m", host="0.0.0.0", allow_unauthenticated=True))
        is None
    )
    assert insecure_listen_reason(Settings(model="m", host="::1")) is None


# ------------------------------------------------------------------------------- limits


def test_oversized_body_refused_before_parsing(secured):
    oversized = b'{"messages": "' + b"x" * (MAX_BODY + 10 * 1024 * 1024) + b'"}'
    started = time.perf_counter()
    response = httpx.post(
        f"{secured.base_url}/v1/chat/completions",
        content=oversized,
        headers={**auth(FILE_KEYS[2]), "content-type": "application/json"},
        timeout=60,
    )
    assert_openai_error(response, 413, code="request_too_large")
    assert time.perf_counter() - started < 5

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(40):
            yield b"x" * 65536

    response = httpx.post(
        f"{secured.base_url}/v1/chat/completions",
        content=chunks(),
        headers={**auth(FILE_KEYS[2]), "content-type": "application/json"},
        timeout=60,
    )
    assert_openai_error(response, 413, code="request_too_large")


def test_wrong_content_type_is_415(secured):
    response = httpx.post(
        f"{secured.base_url}/v1/chat/completions",
        content=json.dumps(chat_body()),
        headers={**auth(FILE_KEYS[3]), "content-type": "text/plain"},
    )
    assert_openai_error(response, 415, code="unsupported_media_type")


def test_burst_beyond_admission_gets_fast_503s(secured):
    body = chat_body(max_tokens=48, ignore_eos=True)
    results: list[tuple[int, float, dict]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        response = post(secured, FILE_KEYS[10 + i], body)
        with lock:
            results.append((response.status_code, time.perf_counter() - started, response))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    with slow_steps(secured, 0.02):  # about a second a request
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) + len(refused) == 12
    assert len(ok) >= 4  # two generating plus two waiting were admitted
    assert refused, "a burst of 12 over a bound of 2+2 must be refused in part"
    for _, seconds, response in refused:
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error"]["code"] == "server_overloaded"
        assert seconds < 2.0, "refusals must be immediate, not after waiting in a queue"
    for _, _, response in ok:
        assert response.json()["usage"]["completion_tokens"] == 48
    rejected = metric(secured.base_url, "lingshu_rejected_requests_total", reason="overloaded")
    assert rejected >= len(refused)


def test_per_key_rate_limit_is_429_with_retry_after(secured):
    key = FILE_KEYS[30]
    statuses = [post(secured, key, chat_body(max_tokens=1)) for _ in range(8)]
    limited = [r for r in statuses if r.status_code == 429]
    assert [r.status_code for r in statuses[:6]] == [200] * 6  # a burst of up to 6 a minute
    assert limited
    assert_openai_error(limited[0], 429, code="rate_limit_exceeded")
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert post(secured, FILE_KEYS[31], chat_body(max_tokens=1)).status_code == 200  # per key


def test_max_tokens_above_cap_is_400(secured):
    response = post(secured, FILE_KEYS[4], chat_body(max_tokens=100_000))
    assert_openai_error(response, 400, param="max_tokens")


# ------------------------------------------------------------------------------- cancellation


@pytest.mark.e2e
def test_stream_disconnect_aborts_engine_request(secured):
    body = chat_body(max_tokens=4000, ignore_eos=True, stream=True)
    before = metric(secured.base_url, "lingshu_client_disconnects_total")
    with httpx.Client(timeout=60) as http:
        with http.stream(
            "POST", f"{secured.base_url}/v1/chat/completions", json=body, headers=auth(FILE_KEYS[5])
        ) as response:
            lines = response.iter_lines()
            for _ in range(3):
                next(lines)
            assert running_requests(secured) == 1
    deadline = time.monotonic() + 1.0
    while running_requests(secured) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_requests(secured) == 0
    time.sleep(0.2)
    assert metric(secured.base_url, "lingshu_client_disconnects_total") >= before + 1


@pytest.mark.e2e
def test_non_streaming_disconnect_aborts_engine_request(secured):
    body = chat_body(max_tokens=4000, ignore_eos=True)
    with pytest.raises(httpx.ReadTimeout):
        post(secured, FILE_KEYS[6], body, timeout=1.5)
    deadline = time.monotonic() + 1.5
    while running_requests(secured) != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_requests(secured) == 0


@pytest.mark.e2e
def test_request_deadline_returns_partial_answer(secured):
    started = time.perf_counter()
    response = post(
        secured, FILE_KEYS[7], chat_body(max_tokens=4000, ignore_eos=True, request_timeout=1.0)
    )
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert 0 < body["usage"]["completion_tokens"] < 4000
    assert time.perf_counter() - started < 10
    # the engine's gauge follows the abort within a few of its steps (a busy machine: a second)
    assert wait_for(lambda: running_requests(secured) == 0, timeout=5)


# ------------------------------------------------------------------------------- ids, logs, CORS


def test_request_id_is_echoed_or_created(secured):
    response = post(secured, FILE_KEYS[8], chat_body(), headers={"X-Request-Id": "viewer-abc.123"})
    assert response.headers["x-request-id"] == "viewer-abc.123"
    generated = post(secured, FILE_KEYS[8], chat_body())
    assert len(generated.headers["x-request-id"]) >= 16
    junk = post(secured, FILE_KEYS[8], chat_body(), headers={"X-Request-Id": "bad id\twith junk"})
    assert junk.headers["x-request-id"] != "bad id\twith junk"


def test_cors_closed_except_for_configured_origins(secured, client):
    def preflight(base_url: str, origin: str) -> httpx.Response:
        return httpx.options(
            f"{base_url}/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )

    allowed = preflight(secured.base_url, ALLOWED_ORIGIN)
    assert allowed.headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    other = preflight(secured.base_url, "https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    default_server = preflight(str(client.base_url), ALLOWED_ORIGIN)
    assert "access-control-allow-origin" not in default_server.headers


def dicom_with_patient_name() -> bytes:
    import io

    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Roe^Jane^SecretPatient"
    ds.PatientID = "MRN-99417723"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_logs_and_audit_hold_no_patient_data(secured):
    png = encode(gradient_image(120, 96, seed=77), "PNG")
    dicom = dicom_with_patient_name()
    content = [
        {"type": "text", "text": SECRET_PHRASE},
        image_part(data_url(png)),
        image_part(data_url(dicom, "application/dicom")),
    ]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 3}
    response = post(secured, FILE_KEYS[9], body, headers={"X-Request-Id": "audit-check-1"})
    assert response.status_code == 200
    stream = post(secured, FILE_KEYS[9], {**body, "stream": True})
    assert stream.status_code == 200
    bad = post(
        secured,
        FILE_KEYS[9],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": SECRET_PHRASE},
                        image_part("data:image/png;base64,AAAA"),
                    ],
                }
            ]
        },
    )
    assert bad.status_code == 400
    time.sleep(0.5)

    log = secured.log_text()
    audit_text = secured.audit_path.read_text()
    forbidden = [
        SECRET_PHRASE,
        "PATIENT-SECRET",
        "SecretPatient",
        "MRN-99417723",
        base64.b64encode(png).decode()[400:440],
        base64.b64encode(dicom).decode()[200:240],
        INLINE_KEY,
        *FILE_KEYS,
    ]
    for text in (log, audit_text):
        for needle in forbidden:
            assert needle not in text

    audit = [json.loads(line) for line in audit_text.splitlines()]
    record = next(r for r in audit if r["request_id"] == "audit-check-1")
    import hashlib

    assert record["status"] == 200
    assert record["key_id"].startswith("key-")
    assert [i["sha256"] for i in record["images"]] == [
        hashlib.sha256(png).hexdigest(),
        hashlib.sha256(dicom).hexdigest(),
    ]
    assert [i["format"] for i in record["images"]] == ["PNG", "DICOM"]
    assert record["prompt_tokens"] > 0 and record["completion_tokens"] == 3

    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    line = next(
        r
        for r in access
        if r.get("logger") == "lingshu_server.access" and r.get("request_id") == "audit-check-1"
    )
    assert line["status"] == 200 and line["route"] == "/v1/chat/completions"
    assert line["images"] == 2 and line["key_id"] == record["key_id"]
    assert line["latency_ms"] > 0 and line["completion_tokens"] == 3


# ------------------------------------------------------------------------------- drain (last)


def stream_in_thread(
    server: RunningServer | InProcessServer, body: dict, key: str
) -> tuple[threading.Thread, list[str], threading.Event]:
    """A streaming chat request in a thread: its non-empty lines, and an event set once the
    first token arrived (the stream is in flight)."""
    lines: list[str] = []
    started = threading.Event()

    def stream() -> None:
        with httpx.Client(timeout=120) as http:
            with http.stream(
                "POST",
                f"{server.base_url}/v1/chat/completions",
                json=body,
                headers=auth(key),
            ) as response:
                for line in response.iter_lines():
                    if line:
                        lines.append(line)
                    if len(lines) >= 2:
                        started.set()
        started.set()

    thread = threading.Thread(target=stream)
    thread.start()
    return thread, lines, started


def assert_draining_refuses_new_work(server: RunningServer | InProcessServer) -> None:
    ready = httpx.get(f"{server.base_url}/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["stage"] == "draining"
    refused = post(server, FILE_KEYS[21], chat_body())
    assert_openai_error(refused, 503, code="server_shutting_down")
    assert "Retry-After" in refused.headers


def assert_finished_with_length(lines: list[str]) -> None:
    assert lines[-1] == "data: [DONE]"
    finish = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in lines[1:-1]]
    assert finish[-1] == "length"


def test_drain_lets_the_stream_finish_then_exits_0(secured):
    """The drain's own logic, in process: what SIGTERM does, while a (slowed) stream is in
    flight."""
    body = chat_body(max_tokens=24, ignore_eos=True, stream=True)
    with slow_steps(secured, 0.05):  # a second and more of stream
        thread, lines, started = stream_in_thread(secured, body, FILE_KEYS[22])
        assert started.wait(30)
        secured.drain()
        time.sleep(0.2)
        assert_draining_refuses_new_work(secured)
        thread.join(120)
    assert_finished_with_length(lines)
    assert len(lines) == 24 + 3  # the role chunk, a chunk per token, the finish, [DONE]
    secured.thread.join(60)
    assert not secured.running()
    assert secured.server.exit_code == 0
    assert "Traceback" not in secured.log_text()


@pytest.mark.e2e
def test_sigterm_lets_the_stream_finish_then_exits_0(secured):
    """SIGTERM to the secured front end of the shared engine (what the signal does to a server
    process): the stream in flight on the real engine finishes, then the front end exits 0."""
    body = chat_body(max_tokens=2000, ignore_eos=True, stream=True)
    log_offset = len(secured.log_text())
    thread, lines, started = stream_in_thread(secured, body, FILE_KEYS[20])
    assert started.wait(60)
    assert running_requests(secured) == 1
    secured.shared.drain(secured.name)  # SIGTERM, to this front end alone
    time.sleep(0.5)
    assert_draining_refuses_new_work(secured)
    thread.join(120)
    assert_finished_with_length(lines)

    def stopped() -> list[dict]:
        records = [
            json.loads(line)
            for line in secured.log_text()[log_offset:].splitlines()
            if line.startswith("{") and '"front end stopped"' in line
        ]
        return [r for r in records if r.get("frontend") == secured.name]

    deadline = time.monotonic() + 60
    while not stopped() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [r["exit_code"] for r in stopped()] == [0]
    assert "Traceback" not in secured.log_text()[log_offset:]  # a clean exit
