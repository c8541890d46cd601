"""The preview's pixels are the model's: qwen-vl-utils' resize of PNG and JPEG, and pydicom's
own display pipeline (then that resize) for DICOM, CT presets and MONOCHROME1 alike; the facts
about windows and frames are what the decoder did. Through the session's real server."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from qwen_vl_utils.vision_process import fetch_image

from lingshu_server.inputs.dicom import CT_WINDOWS
from tests.utils.dicom_reference import DEFAULT_CT_WINDOW, reference_pixels
from tests.utils.images import data_url, encode, gradient_image, image_part, tokens_for
from tests.utils.preview import png_pixels, preview

DICOM_MIME = "application/dicom"


def sample_path(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is missing from pydicom / pydicom-data"
    return path


def dicom_url(name: str) -> str:
    return data_url(Path(sample_path(name)).read_bytes(), DICOM_MIME)


def as_the_recipe_resizes(pixels: np.ndarray, **budget: int) -> np.ndarray:
    """qwen-vl-utils' fetch_image applied to an 8-bit reference image."""
    image = Image.fromarray(pixels.astype(np.uint8), "L" if pixels.ndim == 2 else "RGB")
    return np.asarray(fetch_image({"image": image, **budget}))


def only_image(body: dict) -> dict:
    assert body["object"] == "preview" and body["type"] == "image_url"
    (image,) = body["images"]
    assert body["tokens"] == image["tokens"]
    return image


@pytest.mark.parametrize(
    ("fmt", "mime", "width", "height"),
    [
        ("PNG", "image/png", 1000, 700),
        ("JPEG", "image/jpeg", 333, 501),
        ("PNG", "image/png", 20, 90),
    ],
)
def test_png_and_jpeg_are_qwen_vl_utils_resize(client, fmt, mime, width, height):
    encoded = encode(gradient_image(width, height, seed=7), fmt)
    url = data_url(encoded, mime)
    image = only_image(preview(client, image_part(url)))

    expected = np.asarray(fetch_image({"image": url}))
    assert np.array_equal(png_pixels(image["image"]), expected)
    assert (image["width"], image["height"]) == (expected.shape[1], expected.shape[0])
    assert image["tokens"] == tokens_for(width, height)
    assert image["source"] == {
        "format": fmt,
        "bytes": len(encoded),
        "width": width,
        "height": height,
    }
    assert image["resizing"]["resized_twice"] is False
    assert image["dicom"] is None


@pytest.mark.parametrize(
    ("options", "max_pixels"),
    [({"detail": "low"}, 256 * 28 * 28), ({"max_pixels": 100 * 28 * 28}, 100 * 28 * 28)],
    ids=["detail-low", "max-pixels"],
)
def test_detail_and_max_pixels_shrink_it_as_the_recipe_would(client, options, max_pixels):
    url = data_url(encode(gradient_image(1200, 900, seed=3), "PNG"))
    image = only_image(preview(client, image_part(url, **options)))
    expected = np.asarray(fetch_image({"image": url, "max_pixels": max_pixels}))
    assert np.array_equal(png_pixels(image["image"]), expected)
    assert image["tokens"] == tokens_for(1200, 900, max_pixels) <= max_pixels // 784
    assert image["resizing"]["request_budget"]["max_pixels"] == max_pixels


@pytest.mark.parametrize("preset", sorted(CT_WINDOWS))
def test_ct_presets_equal_pydicoms_pipeline(client, preset):
    image = only_image(
        preview(client, image_part(dicom_url("CT_small.dcm"), dicom={"window": preset}))
    )
    center, width = CT_WINDOWS[preset]
    reference = reference_pixels(sample_path("CT_small.dcm"), (center, width))
    assert np.array_equal(png_pixels(image["image"]), as_the_recipe_resizes(reference))
    assert image["dicom"] == {
        "modality": "CT",
        "photometric_interpretation": "MONOCHROME2",
        "frame": 0,
        "frames": 1,
        "window": {
            "source": "request_preset",
            "center": center,
            "width": width,
            "function": "LINEAR",
            "preset": preset,
        },
    }


def test_ct_center_and_width_from_the_request(client):
    part = image_part(dicom_url("CT_small.dcm"), dicom={"center": 100, "width": 700})
    image = only_image(preview(client, part))
    reference = reference_pixels(sample_path("CT_small.dcm"), (100, 700))
    assert np.array_equal(png_pixels(image["image"]), as_the_recipe_resizes(reference))
    assert image["dicom"]["window"]["source"] == "request"
    assert (image["dicom"]["window"]["center"], image["dicom"]["window"]["width"]) == (100, 700)


def test_ct_without_a_window_gets_the_servers_default_preset(client):
    """CT_small has no window of its own: the server's --dicom-default-ct-window applies."""
    image = only_image(preview(client, image_part(dicom_url("CT_small.dcm"))))
    reference = reference_pixels(sample_path("CT_small.dcm"))
    assert np.array_equal(png_pixels(image["image"]), as_the_recipe_resizes(reference))
    window = image["dicom"]["window"]
    assert window["source"] == "default_preset" and window["preset"] == DEFAULT_CT_WINDOW
    assert (window["center"], window["width"]) == CT_WINDOWS[DEFAULT_CT_WINDOW]


@pytest.mark.parametrize("window", [None, (1200.0, 2400.0)], ids=["file-window", "request"])
def test_monochrome1_chest_is_inverted_as_pydicom_shows_it(client, window):
    """pydicom-data's CR chest (1841x1955, MONOCHROME1): low values white, as a viewer shows."""
    options = {} if window is None else {"dicom": {"center": window[0], "width": window[1]}}
    image = only_image(preview(client, image_part(dicom_url("RG1_UNCR.dcm"), **options)))
    reference = reference_pixels(sample_path("RG1_UNCR.dcm"), window)
    assert np.array_equal(png_pixels(image["image"]), as_the_recipe_resizes(reference))
    assert image["source"]["width"] == 1841 and image["source"]["height"] == 1955
    assert image["tokens"] == tokens_for(1841, 1955)
    facts = image["dicom"]
    assert facts["modality"] == "CR" and facts["photometric_interpretation"] == "MONOCHROME1"
    assert facts["window"]["source"] == ("file_window" if window is None else "request")
    if window is None:  # the file's own window: its first center/width pair
        ds = pydicom.dcmread(sample_path("RG1_UNCR.dcm"), stop_before_pixels=True)
        assert facts["window"]["center"] == float(ds.WindowCenter)
        assert facts["window"]["width"] == float(ds.WindowWidth)


def _without_window(name: str) -> bytes:
    ds = pydicom.dcmread(sample_path(name))
    del ds.WindowCenter, ds.WindowWidth
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("vlut_04.dcm", "file_voi_lut"),
        ("MR_small.dcm", "file_window"),
        ("MR_small.dcm", "full_range"),
    ],
    ids=["voi-lut", "file-window", "full-range"],
)
def test_window_source_is_what_the_decoder_used(client, tmp_path, name, source):
    data = _without_window(name) if source == "full_range" else Path(sample_path(name)).read_bytes()
    (tmp_path / name).write_bytes(data)
    image = only_image(preview(client, image_part(data_url(data, DICOM_MIME))))
    reference = reference_pixels(str(tmp_path / name))
    assert np.array_equal(png_pixels(image["image"]), as_the_recipe_resizes(reference))
    window = image["dicom"]["window"]
    assert window["source"] == source
    if source == "file_voi_lut":  # a lookup table, not a line
        assert window["center"] is None and window["width"] is None


def test_frame_of_a_multi_frame_file(client):
    """emri_small: an enhanced MR of 10 frames; the middle one by default, else the one asked."""
    url = dicom_url("emri_small.dcm")
    default = only_image(preview(client, image_part(url)))
    third = only_image(preview(client, image_part(url, dicom={"frame": 3})))
    assert (default["dicom"]["frame"], default["dicom"]["frames"]) == (5, 10)
    assert (third["dicom"]["frame"], third["dicom"]["frames"]) == (3, 10)
    assert not np.array_equal(png_pixels(default["image"]), png_pixels(third["image"]))


def test_colour_dicom_has_no_window(client):
    image = only_image(preview(client, image_part(dicom_url("SC_rgb_jpeg_dcmtk.dcm"))))
    assert image["dicom"]["photometric_interpretation"] in {"YBR_FULL_422", "YBR_FULL", "RGB"}
    assert image["dicom"]["window"] is None
