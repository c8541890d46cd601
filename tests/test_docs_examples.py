"""The chat completions guide's examples, run exactly as written against the test server; the
README and the CPU demo page show its first one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.utils.docs import fenced_blocks, on_server, page, run_bash, run_example
from tests.utils.images import encode, gradient_image

PAGE = "guides/chat.md"


def curl_examples(name: str | None = PAGE) -> list[str]:
    """The curl examples of a page (of the README when `name` is None)."""
    return [block for block in fenced_blocks("bash", page(name)) if "curl" in block]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(512, 448, mode="L"), "PNG"))
    return tmp_path


def test_the_page_has_the_promised_examples():
    assert len(curl_examples()) == 2
    assert any('"stream": true' in block for block in curl_examples())
    assert len(fenced_blocks("python", page(PAGE))) == 1


def test_the_readme_and_the_cpu_demo_show_the_first_curl_example():
    """The example a newcomer tries first is the one run below."""
    first = curl_examples()[0]
    assert curl_examples(None) == [first]
    assert curl_examples("getting-started/cpu-demo.md") == [first]


@pytest.mark.e2e
def test_curl_example_with_png(server, workdir):
    stdout = run_bash(on_server(curl_examples()[0], server.port), workdir)
    body = json.loads(stdout)
    assert body["object"] == "chat.completion"
    # 512x448 is 18x16 visual tokens: the image reached the engine
    assert body["usage"]["prompt_tokens"] > 18 * 16


@pytest.mark.e2e
def test_curl_streaming_example(server, workdir):
    stdout = run_bash(on_server(curl_examples()[1], server.port), workdir)
    events = [line[len("data: ") :] for line in stdout.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


@pytest.mark.e2e
def test_python_sdk_example(server, workdir):
    code = on_server(fenced_blocks("python", page(PAGE))[0], server.port)
    assert run_example([sys.executable, "-c", code], workdir).endswith("\n")
