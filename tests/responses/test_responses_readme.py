"""The README's Responses API examples, run as written against the session's server."""

from __future__ import annotations

import json
import sys

from tests.utils.images import encode, gradient_image
from tests.utils.readme import block, run

SECTION = "Responses API"


def test_curl_example(server, tmp_path):
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(512, 448, mode="L"), "PNG"))
    answer = json.loads(
        run(["bash", "-euo", "pipefail", "-c", block(SECTION, "shell")], tmp_path, server.port)
    )
    assert answer["object"] == "response" and answer["store"] is False
    assert answer["status"] in {"completed", "incomplete"}
    assert answer["output"][0]["type"] == "message"
    assert answer["usage"]["input_tokens"] > 18 * 16  # 512x448: the image reached the model


def test_sdk_example_streams(server, tmp_path):
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(224, 224, mode="L"), "PNG"))
    output = run([sys.executable, "-c", block(SECTION, "py")], tmp_path, server.port)
    status, tokens = output.rsplit("\n[", 1)[1].rstrip("]\n").split(", ")
    assert status in {"completed", "incomplete"}
    assert int(tokens.split()[0]) > 64
