"""The README's examples, run exactly as written against the test server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.images import encode, gradient_image

README = Path(__file__).resolve().parents[1] / "README.md"


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def curl_examples() -> list[str]:
    return [block for block in fenced_blocks("bash") if "curl" in block]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "chest_xray.png").write_bytes(encode(gradient_image(512, 448, mode="L"), "PNG"))
    return tmp_path


def on_test_server(text: str, port: int) -> str:
    assert "localhost:8000" in text
    return text.replace("localhost:8000", f"127.0.0.1:{port}")


def test_readme_has_the_promised_examples():
    assert len(curl_examples()) == 2
    assert any('"stream": true' in block for block in curl_examples())
    assert len(fenced_blocks("python")) == 1


def run_bash(script: str, cwd: Path) -> str:
    """Run a README block exactly as a user would paste it; its standard output."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_curl_example_with_png(server, workdir):
    stdout = run_bash(on_test_server(curl_examples()[0], server.port), workdir)
    body = json.loads(stdout)
    assert body["object"] == "chat.completion"
    # 512x448 is 18x16 visual tokens: the image reached the engine
    assert body["usage"]["prompt_tokens"] > 18 * 16


def test_curl_streaming_example(server, workdir):
    stdout = run_bash(on_test_server(curl_examples()[1], server.port), workdir)
    events = [line[len("data: ") :] for line in stdout.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


def test_python_sdk_example(server, workdir):
    code = on_test_server(fenced_blocks("python")[0], server.port)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
