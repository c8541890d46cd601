"""The Responses API guide's examples, run as written against the session's server."""

from __future__ import annotations

import json
import sys

import pytest

from tests.utils.docs import on_server, only_block, page, run_bash, run_example
from tests.utils.images import encode, gradient_image

PAGE = "guides/responses.md"


@pytest.mark.e2e
def test_curl_example(server, tmp_path):
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(512, 448, mode="L"), "PNG"))
    answer = json.loads(run_bash(example("shell", server.port), tmp_path))
    assert answer["object"] == "response" and answer["store"] is False
    assert answer["status"] in {"completed", "incomplete"}
    assert answer["output"][0]["type"] == "message"
    assert answer["usage"]["input_tokens"] > 18 * 16  # 512x448: the image reached the model


@pytest.mark.e2e
def test_sdk_example_streams(server, tmp_path):
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(224, 224, mode="L"), "PNG"))
    output = run_example([sys.executable, "-c", example("py", server.port)], tmp_path)
    status, tokens = output.rsplit("\n[", 1)[1].rstrip("]\n").split(", ")
    assert status in {"completed", "incomplete"}
    assert int(tokens.split()[0]) > 64


def example(language: str, port: int) -> str:
    return on_server(only_block(language, page(PAGE)), port)
