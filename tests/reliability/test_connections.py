"""What a client can hold at the connection level: unread bodies, slow or huge request heads,
too many connections, unauthenticated bodies; and keep-alive connections that survive errors.
Raw sockets, because a well-behaved HTTP client will not send these."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import psutil

from tests.reliability.client import Target
from tests.reliability.server_config import (
    BODY_READ_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    KEY,
    MAX_CONNECTIONS,
    MAX_HEADER_BYTES,
    MAX_REQUEST_BYTES,
)
from tests.utils.server import RunningServer
from tests.utils.tiers import api_pid

SLACK_S = 1.5  # scheduling slack on a busy 2-core machine
MB = 1024 * 1024


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the last byte sent to the end of the response

    def error(self) -> dict:
        error = json.loads(self.body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        return error


def connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=30)


def read_response(sock: socket.socket, started: float) -> RawResponse:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return RawResponse(int(lines[0].split()[1]), headers, body, time.perf_counter() - started)


def request_head(path: str = "/v1/chat/completions", **headers: str) -> bytes:
    fields = {"Host": "reliability", "Content-Type": "application/json", **headers}
    lines = [f"POST {path} HTTP/1.1", *(f"{k}: {v}" for k, v in fields.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed the connection, or None if it stayed open."""
    sock.settimeout(seconds)
    started = time.perf_counter()
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.perf_counter() - started


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_a_body_that_never_comes_is_408(rel_server, target: Target):
    with connect(rel_server) as sock:
        sock.sendall(request_head(**auth(), **{"Content-Length": "1000"}) + b'{"messa')
        response = read_response(sock, time.perf_counter())
        assert closed_within(sock, 5) is not None  # and the connection is closed
    target.count(response.status)
    assert response.status == 408
    assert response.error()["code"] == "request_timeout"
    assert response.seconds < BODY_READ_TIMEOUT_S + SLACK_S


def test_a_declared_body_over_the_limit_is_413_at_once(rel_server, target: Target):
    with connect(rel_server) as sock:
        started = time.perf_counter()
        sock.sendall(request_head(**auth(), **{"Content-Length": str(MAX_REQUEST_BYTES + 1)}))
        response = read_response(sock, started)
    target.count(response.status)
    assert response.status == 413 and response.error()["code"] == "request_too_large"
    assert response.seconds < SLACK_S


def test_huge_request_heads_are_431(rel_server, target: Target):
    for header in (
        {"X-Padding": "p" * (MAX_HEADER_BYTES + 1)},
        {"X-Many": "q" * 900} | {f"X-H{i}": "v" * 900 for i in range(MAX_HEADER_BYTES // 900 + 1)},
    ):
        with connect(rel_server) as sock:
            started = time.perf_counter()
            sock.sendall(request_head(**auth(), **header, **{"Content-Length": "2"}) + b"{}")
            response = read_response(sock, started)
        target.count(response.status)
        assert response.status == 431
        assert response.error()["code"] == "headers_too_large"
    long_url = "/v1/chat/completions?" + "a" * (MAX_HEADER_BYTES + 1)
    with connect(rel_server) as sock:
        sock.sendall(request_head(long_url, **auth()))
        response = read_response(sock, time.perf_counter())
    target.count(response.status)
    assert response.status == 431


def test_garbage_instead_of_http_is_400_in_the_error_shape(rel_server, target: Target):
    with connect(rel_server) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n")
        response = read_response(sock, time.perf_counter())
    target.count(response.status)
    assert response.status == 400 and response.error()["code"] == "invalid_http"


def test_slow_or_silent_request_heads_are_cut_off(rel_server):
    with connect(rel_server) as silent, connect(rel_server) as slow:
        slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        for sock in (silent, slow):
            waited = closed_within(sock, HEADER_TIMEOUT_S + 5)
            assert waited is not None, "the server kept a connection without a request head"
            assert waited < HEADER_TIMEOUT_S + SLACK_S


KEYLESS_SENDERS = """
import sys, threading, httpx
body = b'{"messages": "' + b"x" * (100 * 1024 * 1024) + b'"}'
statuses = []
def send():
    response = httpx.post(
        sys.argv[1], content=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    statuses.append(response.status_code)
threads = [threading.Thread(target=send) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(*statuses)  # one write: threads printing at once can run their lines together
"""


def test_keyless_clients_are_refused_before_their_body_is_read(rel_server, target: Target):
    # The 401 arrives although not one byte of the promised 120 MB body was sent.
    with connect(rel_server) as sock:
        started = time.perf_counter()
        sock.sendall(request_head(**{"Content-Length": str(120 * MB)}))
        response = read_response(sock, started)
    target.count(response.status)
    assert response.status == 401 and response.error()["code"] == "invalid_api_key"
    assert response.seconds < SLACK_S
    # Bodies that are sent are dropped as they arrive, never held: four 100 MB keyless bodies,
    # sent from another process (on the fake engine the server runs in this one).
    api = psutil.Process(api_pid(rel_server))
    before = api.memory_info().rss
    senders = subprocess.Popen(
        [sys.executable, "-c", KEYLESS_SENDERS, f"{rel_server.base_url}/v1/chat/completions"],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = before
    while senders.poll() is None:
        peak = max(peak, api.memory_info().rss)
        time.sleep(0.02)
    statuses = [int(line) for line in senders.communicate(timeout=10)[0].split()]
    for status in statuses:
        target.count(status)
    assert statuses == [401] * 4
    growth_mb = (peak - before) / MB
    assert growth_mb < 64, f"API RSS grew {growth_mb:.0f} MB for keyless bodies"


def test_connections_beyond_the_limit_get_503(rel_server, target: Target):
    held = [connect(rel_server) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # let the server accept them all
        with connect(rel_server) as extra:
            started = time.perf_counter()
            extra.sendall(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {KEY}\r\n\r\n".encode()
            )
            response = read_response(extra, started)
        target.count(response.status, expected=503)
        assert response.status == 503
        assert response.error()["code"] == "server_overloaded"
        assert "retry-after" in response.headers
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if target.send("GET", "/v1/models", headers=target.auth()).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("the server did not serve again after the connections closed")


def test_keep_alive_survives_every_kind_of_refusal(target: Target):
    bad_bodies = [
        {"stop": ""},
        {"stop": [""]},
        {"seed": 2**64},
        {"min_tokens": 5, "max_tokens": 2},
        {"messages": [{"role": "user", "content": "a\ud800b"}]},
        {"max_tokens": "10"},
    ]
    headers = {**target.auth(), "Content-Type": "application/json"}
    with httpx.Client(base_url=target.base_url, timeout=60, headers=headers) as http:
        for round_ in range(20):
            fields = bad_bodies[round_ % len(bad_bodies)] if round_ % 2 else {}
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}
            response = http.post("/v1/chat/completions", content=json.dumps(body).encode())
            target.count(response.status_code)
            assert response.status_code == (400 if fields else 200), response.text
            assert response.headers.get("connection") != "close"
        keyless = http.post("/v1/models", headers={"Authorization": ""})
        target.count(keyless.status_code)
        assert keyless.status_code == 401
        assert http.get("/v1/models").status_code == 200
