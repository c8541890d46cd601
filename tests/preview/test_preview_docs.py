"""The preview guide's examples, run as written against the session's server, and the
playground screenshot it shows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from tests.utils.docs import DOCS, on_server, only_block, page, run_example
from tests.utils.preview import png_pixels

PAGE = "guides/preview.md"


@pytest.mark.e2e
def test_curl_and_sdk_examples_show_the_same_lung_window(server, tmp_path):
    text = page(PAGE)
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
    # the page shows docs/playground.png, which tests/browser makes
    assert "](../playground.png)" in page(PAGE)
    image = Image.open((DOCS / PAGE).parent / "../playground.png")
    assert image.format == "PNG" and image.width >= 1200
