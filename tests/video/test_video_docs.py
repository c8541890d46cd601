"""The video guide's examples, run as written against the session's server."""

from __future__ import annotations

import json
import sys

import pytest

from tests.utils.docs import on_server, only_block, page, run_example
from tests.utils.videos import cine_loop, clip

pytestmark = pytest.mark.e2e  # the README's examples, on the real engine


def block(language: str, port: int) -> str:
    return on_server(only_block(language, page("guides/video.md")), port)


def test_curl_example_sends_a_clip_at_one_frame_per_second(server, tmp_path):
    (tmp_path / "colonoscopy.mp4").write_bytes(clip(320, 240, 100, fps=10))  # 10 s
    script = block("shell", server.port)
    answer = json.loads(run_example(["bash", "-c", script], tmp_path))
    # 10 frames at 1 per second: 5 temporal patches of 392x280 (14 x 10 tokens)
    assert answer["usage"]["prompt_tokens"] > 5 * 140
    assert answer["choices"][0]["message"]["content"]


def test_sdk_example_sends_a_cine_loop(server, tmp_path):
    (tmp_path / "echo_cine.dcm").write_bytes(cine_loop())
    script = block("py", server.port)
    tokens, _ = run_example([sys.executable, "-c", script], tmp_path).split(" ", 1)
    assert int(tokens) > 2 * 140  # 4 frames of the 1 s loop: 2 temporal patches
