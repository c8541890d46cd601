"""The README's video examples, run as written against the session's server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.utils.videos import cine_loop, clip

README = Path(__file__).resolve().parents[2] / "README.md"


def video_section() -> str:
    text = README.read_text()
    start = text.index("## Video: ultrasound cine")
    return text[start : text.index("\n## ", start + 1)]


def block(language: str) -> str:
    (found,) = re.findall(rf"```{language}\n(.*?)```", video_section(), flags=re.DOTALL)
    assert "localhost:8000" in found
    return found


def run(command: list[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_curl_example_sends_a_clip_at_one_frame_per_second(server, tmp_path):
    (tmp_path / "colonoscopy.mp4").write_bytes(clip(320, 240, 100, fps=10))  # 10 s
    script = block("shell").replace("localhost:8000", f"127.0.0.1:{server.port}")
    answer = json.loads(run(["bash", "-c", script], tmp_path))
    # 10 frames at 1 per second: 5 temporal patches of 392x280 (14 x 10 tokens)
    assert answer["usage"]["prompt_tokens"] > 5 * 140
    assert answer["choices"][0]["message"]["content"]


def test_sdk_example_sends_a_cine_loop(server, tmp_path):
    (tmp_path / "echo_cine.dcm").write_bytes(cine_loop())
    script = block("py").replace("localhost:8000", f"127.0.0.1:{server.port}")
    tokens, _ = run([sys.executable, "-c", script], tmp_path).split(" ", 1)
    assert int(tokens) > 2 * 140  # 4 frames of the 1 s loop: 2 temporal patches
