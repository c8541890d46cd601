"""Image decoding and resizing, pixel by pixel, without the engine."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lingshu_server.errors import InvalidRequestError
from lingshu_server.media import PixelBudget, decode_data_url, prepare_image, target_size
from lingshu_server.settings import QWEN_MAX_PIXELS, QWEN_MIN_PIXELS
from tests.utils.images import data_url, encode, gradient_image

DEFAULT = PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)


def test_decode_data_url_round_trip():
    payload = encode(gradient_image(30, 20))
    assert decode_data_url(data_url(payload), "p") == payload


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://host/x.png", "invalid_image_url"),
        ("data:image/png,rawbytes", "invalid_image_url"),
        ("data:image/png;base64,!!!!", "invalid_base64"),
        ("data:image/png;base64,", "invalid_image"),
    ],
)
def test_decode_data_url_rejects(url, code):
    with pytest.raises(InvalidRequestError) as info:
        decode_data_url(url, "messages[0].content[0].image_url")
    assert info.value.code == code
    assert info.value.param == "messages[0].content[0].image_url"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_formats_decode_to_rgb_at_budget(fmt):
    prepared = prepare_image(encode(gradient_image(300, 200), fmt), DEFAULT, "p")
    assert prepared.image.mode == "RGB"
    assert prepared.image.size == (308, 196)  # smart_resize rounds to multiples of 28
    assert prepared.source_format == fmt
    assert prepared.num_tokens == (308 // 28) * (196 // 28)


def test_large_image_shrinks_to_max_pixels():
    budget = PixelBudget(QWEN_MIN_PIXELS, 1280 * 28 * 28)
    prepared = prepare_image(encode(gradient_image(1955, 1841), "PNG"), budget, "p")
    width, height = prepared.image.size
    assert width % 28 == 0 and height % 28 == 0
    assert width * height <= 1280 * 28 * 28
    assert prepared.num_tokens <= 1280
    assert abs(width / height - 1955 / 1841) < 0.05


def test_tiny_image_is_upscaled_not_rejected():
    prepared = prepare_image(encode(gradient_image(10, 10), "PNG"), DEFAULT, "p")
    assert prepared.image.size == (56, 56)  # min 4 tokens of 28x28


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (56, 56), (255, 0, 0, 0))
    prepared = prepare_image(encode(image, "PNG"), DEFAULT, "p")
    assert prepared.image.getpixel((10, 10)) == (255, 255, 255)


def test_target_size_matches_qwen_rules():
    assert target_size(224, 224, DEFAULT) == (224, 224)
    assert target_size(1000, 700, DEFAULT) == (1008, 700)


def test_extreme_aspect_ratio_is_400():
    with pytest.raises(InvalidRequestError):
        prepare_image(encode(Image.new("L", (4100, 20)), "PNG"), DEFAULT, "p")


def test_not_an_image_is_400():
    with pytest.raises(InvalidRequestError) as info:
        prepare_image(b"GIF89a-but-not-really", DEFAULT, "p")
    assert info.value.code == "invalid_image"


def test_exif_orientation_applied():
    image = gradient_image(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    prepared = prepare_image(buffer.getvalue(), DEFAULT, "p")
    width, height = prepared.image.size
    assert height > width
