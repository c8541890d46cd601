"""Server-sent events: each event is one `data:` line whatever the generated text holds, and
each engine step's events reach the socket together, whole, as one write."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from lingshu_server.protocol.chat import ChatCompletionChunk, ChunkChoice, Delta
from lingshu_server.services.streaming import sse


@pytest.mark.parametrize("text", ["a\u2028b", "a\u2029b", "a\x85b", "a\nb\rc", "a\x0bb\x0cc\x1cd"])
def test_an_event_is_one_line_for_every_line_splitter(text):
    chunk = ChatCompletionChunk(
        id="c",
        created=0,
        model="m",
        system_fingerprint="fp_0",
        choices=[ChunkChoice(index=0, delta=Delta(content=text))],
    )
    event = sse(chunk.model_dump_json())
    assert event.endswith("\n\n")
    lines = event.strip("\n").splitlines()  # the strictest splitter: every Unicode line break
    assert len(lines) == 1 and lines[0].startswith("data: ")
    assert json.loads(lines[0][len("data: ") :])["choices"][0]["delta"]["content"] == text


def chunks_on_the_wire(base_url: str, body: dict) -> list[bytes]:
    """A streamed answer's HTTP chunks (one per body message the server wrote), as a client
    reading the raw socket sees them in the chunked encoding."""
    url = httpx.URL(base_url)
    payload = json.dumps(body).encode()
    request = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port), timeout=120) as sock:
        sock.sendall(request.encode() + payload)
        data = b""
        while received := sock.recv(1 << 16):
            data += received
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0] and b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


def parse(event: bytes) -> dict | str:
    data = event.removeprefix(b"data: ")
    return "[DONE]" if data == b"[DONE]" else json.loads(data)


@pytest.mark.e2e
def test_each_engine_step_reaches_the_socket_as_one_chunk_of_whole_events(server):
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": "Describe a normal chest X-ray."}],
        "max_tokens": 8,
        "ignore_eos": True,
        "return_token_ids": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = chunks_on_the_wire(server.base_url, body)
    assert all(chunk.endswith(b"\n\n") for chunk in chunks)  # no event split over two
    writes = [[parse(event) for event in chunk.split(b"\n\n")[:-1]] for chunk in chunks]
    first, *steps, last, end = writes
    # the role and the first step's tokens (the stream starts once they exist) go out together
    assert first[0]["choices"][0]["delta"]["role"] == "assistant"
    assert first[1]["choices"][0]["token_ids"]
    # every later step is a write of its own: one event with the step's tokens
    assert all(len(step) == 1 and step[0]["choices"][0]["token_ids"] for step in steps)
    # the last token and its finish_reason together, then the usage and [DONE]
    assert [event["choices"][0]["finish_reason"] for event in last] == [None, "length"]
    assert end[0]["usage"]["completion_tokens"] == 8 and end[1] == "[DONE]"
    tokens = [e["choices"][0].get("token_ids") for write in writes[:-1] for e in write]
    assert sum(len(ids or ()) for ids in tokens) == 8
