"""A client that leaves before its first token frees everything: its place in the admission
line, and its engine request (queued or in prefill). Real sockets, closed at the moment that
matters, against real servers; the engine's own gauges tell whether it let go."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.conftest import FILE_KEYS
from tests.utils.images import image_data_url, image_part
from tests.utils.metrics import metric
from tests.utils.server import RunningServer
from tests.utils.waiting import wait_for

pytestmark = pytest.mark.e2e  # the engine's own gauges tell whether it let go

LONG = {"max_tokens": 3000, "ignore_eos": True}


def send(server: RunningServer, body: dict, key: str | None = None) -> socket.socket:
    """POST a chat request on a raw socket and return it without reading the answer."""
    payload = json.dumps(body).encode()
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(head.encode() + payload)
    return sock


def answered(sock: socket.socket) -> bool:
    """Whether any byte of a response has arrived (without consuming it)."""
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def gauges(server: RunningServer) -> tuple[float, float, float]:
    """(engine running, engine waiting, front-end queued)."""
    return (
        metric(server.base_url, "vllm:num_requests_running"),
        metric(server.base_url, "vllm:num_requests_waiting"),
        metric(server.base_url, "lingshu_requests_queued"),
    )


def message(text: str = "Findings?") -> list[dict]:
    return [{"role": "user", "content": text}]


def test_a_queued_stream_that_leaves_gives_up_its_place(secured):
    """Two requests hold both generation slots; a third, streaming, waits in line. When its
    client leaves, the line is empty again at once, while the other two still generate."""
    holders = [send(secured, {"messages": message(), **LONG}, FILE_KEYS[30 + i]) for i in (0, 1)]
    try:
        assert wait_for(lambda: gauges(secured)[0] == 2), gauges(secured)
        queued = send(secured, {"messages": message(), "stream": True}, FILE_KEYS[32])
        assert wait_for(lambda: gauges(secured)[2] == 1), gauges(secured)
        assert not answered(queued)
        queued.close()
        assert wait_for(lambda: gauges(secured)[2] == 0, timeout=5), gauges(secured)
        assert gauges(secured)[0] == 2  # the holders were not disturbed
    finally:
        for sock in holders:
            sock.close()
    assert wait_for(lambda: gauges(secured) == (0, 0, 0)), gauges(secured)


def big_image_stream(seed: int) -> dict:
    url = image_data_url(2400, 2400, "JPEG", seed=seed)  # 7225 image tokens to prefill
    return {"messages": [{"role": "user", "content": [image_part(url)]}], "stream": True, **LONG}


def test_a_stream_that_leaves_during_prefill_is_aborted_in_the_engine(server):
    """A large image makes prefill take seconds. The client leaves once its prompt went to the
    engine and before any byte of the answer: the engine drops the request without producing a
    single token (running and waiting back to 0), and the next request is served."""
    started = time.monotonic()
    calibration = send(server, {**big_image_stream(seed=40), "max_tokens": 1})
    try:
        assert wait_for(lambda: answered(calibration), 120)
    finally:
        calibration.close()
    time_to_first_byte = time.monotonic() - started
    assert wait_for(lambda: gauges(server) == (0, 0, 0))

    built = metric(server.base_url, "lingshu_preprocess_seconds_count")
    generated = metric(server.base_url, "vllm:generation_tokens_total")
    sock = send(server, big_image_stream(seed=41))
    try:
        assert wait_for(lambda: metric(server.base_url, "lingshu_preprocess_seconds_count") > built)
        time.sleep(time_to_first_byte / 4)  # well inside the prefill
        assert not answered(sock), "prefill ended before the test could leave"
    finally:
        sock.close()
    assert wait_for(lambda: gauges(server) == (0, 0, 0)), gauges(server)
    assert metric(server.base_url, "vllm:generation_tokens_total") == generated
    follow_up = send(server, {"messages": message(), "max_tokens": 2})
    try:
        assert wait_for(lambda: answered(follow_up), 60)
        assert follow_up.recv(12).startswith(b"HTTP/1.1 200")
    finally:
        follow_up.close()
