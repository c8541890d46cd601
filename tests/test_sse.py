"""Server-sent events: each event is one `data:` line whatever the generated text holds."""

from __future__ import annotations

import json

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
