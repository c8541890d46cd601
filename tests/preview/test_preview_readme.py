"""The README's preview examples, run as written against the session's server."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

from tests.utils.preview import png_pixels

README = Path(__file__).resolve().parents[2] / "README.md"


def preview_section() -> str:
    text = README.read_text()
    start = text.index("## See what the model sees")
    return text[start : text.index("\n## ", start + 1)]


def block(language: str) -> str:
    (found,) = re.findall(rf"```{language}\n(.*?)```", preview_section(), flags=re.DOTALL)
    assert "localhost:8000" in found
    return found


def run(command: list[str], cwd: Path) -> str:
    env = {**os.environ, "LINGSHU_API_KEY": "unused-without-keys"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_curl_and_sdk_examples_show_the_same_lung_window(server, tmp_path):
    (tmp_path / "chest_ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    script = block("shell").replace("localhost:8000", f"127.0.0.1:{server.port}")
    run(["bash", "-c", script], tmp_path)
    from_curl = json.loads((tmp_path / "preview.json").read_text())["images"][0]
    assert from_curl["dicom"]["window"]["preset"] == "lung"

    code = block("py").replace("localhost:8000", f"127.0.0.1:{server.port}")
    width, height, tokens, source = run([sys.executable, "-c", code], tmp_path).split()
    assert (int(width), int(height), int(tokens)) == (140, 140, 25)
    assert source == "request_preset"
    saved = np.asarray(Image.open(tmp_path / "seen_by_the_model.png"))
    assert np.array_equal(saved, png_pixels(from_curl["image"]))


def test_the_screenshot_is_committed():
    assert "](docs/playground.png)" in preview_section()
    image = Image.open(io.BytesIO((README.parent / "docs/playground.png").read_bytes()))
    assert image.format == "PNG" and image.width >= 1200
