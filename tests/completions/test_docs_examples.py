"""The completions and tokenize guide's examples, run as written against the session's server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from tests.utils.docs import fenced_blocks, on_server, page, run_bash, run_example
from tests.utils.images import encode, gradient_image, tokens_for

PAGE = "guides/completions.md"
LOW_DETAIL_MAX_PIXELS = 256 * 28 * 28


def examples(language: str) -> list[str]:
    return fenced_blocks(language, page(PAGE))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(512, 448, mode="L"), "PNG"))
    return tmp_path


def test_the_page_has_a_curl_and_an_sdk_example_per_endpoint():
    shell, py = examples("shell"), examples("py")
    assert len(shell) == 2 and len(py) == 2
    assert "/v1/completions" in shell[0] and "/tokenize" in shell[1]
    assert "completions.create" in py[0] and '"/tokenize"' in py[1] and '"/detokenize"' in py[1]


@pytest.mark.e2e
def test_curl_completion_with_logprobs(server, workdir):
    script = on_server(examples("shell")[0], server.port)
    answer = json.loads(run_bash(script, workdir))
    assert answer["object"] == "text_completion"
    choice = answer["choices"][0]
    assert choice["finish_reason"] in {"stop", "length"}
    assert len(choice["logprobs"]["tokens"]) == answer["usage"]["completion_tokens"]
    logprobs = choice["logprobs"]
    for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"], strict=True):
        assert token in top and len(top) <= 3  # the two likeliest and the chosen one


@pytest.mark.e2e
def test_sdk_completion_streams_and_scores(server, workdir):
    out = run_example([sys.executable, "-c", on_server(examples("py")[0], server.port)], workdir)
    *_, scored = out.splitlines()
    tokens, total = scored.split()
    assert int(tokens) > 0 and float(total) < 0


@pytest.mark.e2e
def test_curl_tokenize_counts_a_low_detail_image(server, workdir):
    script = on_server(examples("shell")[1], server.port)
    counted = json.loads(run_bash(script, workdir))
    assert counted["count"] == len(counted["tokens"])
    question = {"type": "text", "text": "Describe the findings in this chest X-ray."}
    text_only = httpx.post(
        f"{server.base_url}/tokenize",
        json={"messages": [{"role": "user", "content": [question]}]},
    ).json()["count"]
    # detail low: at most 256 image tokens, plus <|vision_start|> and <|vision_end|>
    low = tokens_for(512, 448, max_pixels=LOW_DETAIL_MAX_PIXELS)
    assert counted["count"] == text_only + low + 2


@pytest.mark.e2e
def test_sdk_tokenize_equals_the_chat_usage(server, workdir):
    out = run_example([sys.executable, "-c", on_server(examples("py")[1], server.port)], workdir)
    counted, usage, text = out.splitlines()[:3]
    assert counted.split()[0] == usage.split()[0]
    assert counted.endswith("of 8192 tokens")
    assert text.startswith("<|im_start|>")
