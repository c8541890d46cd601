"""The README's preview examples, run as written against the session's server, and the
playground screenshot it shows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.utils.preview import png_pixels
from tests.utils.readme import README, on_server, only_block, run_example, section

HEADING = "## See what the model sees"


@pytest.mark.e2e
def test_curl_and_sdk_examples_show_the_same_lung_window(server, tmp_path):
    text = section(HEADING)
    (tmp_path / "chest_ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    script = on_server(only_block("shell", text), server.port)
    run_example(["bash", "-c", script], tmp_path, {"LINGSHU_API_KEY": "no-keys-on-this-server"})
    from_curl = json.loads((tmp_path / "preview.json").read_text())["images"][0]
    assert from_curl["dicom"]["window"]["preset"] == "lung"

    code = on_server(only_block("py", text), server.port)
    width, height, tokens, source = run_example([sys.executable, "-c", code], tmp_path).split()
    assert (int(width), int(height), int(tokens)) == (140, 140, 25)
    assert source == "request_preset"
    saved = np.asarray(Image.open(tmp_path / "seen_by_the_model.png"))
    assert np.array_equal(saved, png_pixels(from_curl["image"]))


def test_the_screenshot_is_committed():
    assert "](docs/playground.png)" in section(HEADING)
    image = Image.open(README.parent / "docs/playground.png")
    assert image.format == "PNG" and image.width >= 1200
