"""Image decoding and resizing, pixel by pixel, without the engine."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.core.image_budget import (
    QWEN_MAX_PIXELS,
    QWEN_MIN_PIXELS,
    PixelBudget,
    model_size,
    resized,
)
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.dicom import DicomOptions
from lingshu_server.inputs.media import (
    EncodedImage,
    ImageLimits,
    data_url_decoded_size,
    decode_data_url,
    prepare_image,
)
from tests.utils.images import data_url, encode, gradient_image, png_bomb

DEFAULT = PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)
LIMITS = ImageLimits.from_settings(Settings(), DEFAULT)


def prepare(data: bytes, budget: PixelBudget = DEFAULT, declared: str | None = None):
    return prepare_image(EncodedImage(data, declared), LIMITS, budget, DicomOptions(), "p")


def test_decode_data_url_round_trip():
    payload = encode(gradient_image(30, 20))
    decoded = decode_data_url(data_url(payload), "p")
    assert decoded.data == payload
    assert decoded.declared_type == "image/png"


@pytest.mark.parametrize(
    ("url", "code"),
    [
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


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1000, 1001, 1002])
def test_decoded_size_is_known_without_decoding(size):
    url = data_url(bytes(range(256)) * 4 + b"x" * size)
    assert data_url_decoded_size(url) == 1024 + size
    assert data_url_decoded_size(url + "\n") == 1024 + size


def test_decode_data_url_refuses_oversize_before_decoding():
    url = data_url(b"\0" * 3000)
    with pytest.raises(InvalidRequestError) as info:
        decode_data_url(url, "p", max_bytes=2000)
    assert info.value.code == "image_too_large"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"])
def test_formats_decode_to_rgb_at_budget(fmt):
    prepared = prepare(encode(gradient_image(300, 200), fmt))
    assert prepared.image.mode == "RGB"
    assert prepared.size == (308, 196)  # smart_resize rounds to multiples of 28
    assert prepared.source_format == fmt
    assert prepared.num_tokens == (308 // 28) * (196 // 28)


def test_wrong_or_generic_mime_type_is_sniffed():
    jpeg = encode(gradient_image(112, 112), "JPEG")
    for declared in ("image/png", "application/octet-stream"):
        assert prepare(jpeg, declared=declared).source_format == "JPEG"


def test_16bit_png_keeps_its_contrast():
    ramp = np.linspace(1000, 3000, 112 * 112).reshape(112, 112).astype(np.uint16)
    png = encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(png)).mode.startswith("I")
    pixels = np.asarray(prepare(png).image.convert("L"))
    assert pixels.min() <= 5 and pixels.max() >= 250  # the full 8-bit range is used
    assert pixels[0, 0] < pixels[-1, -1]  # and the ramp still rises


def test_16bit_tiff_first_page_keeps_contrast():
    first = Image.fromarray(np.tile(np.arange(0, 65536, 512, dtype=np.uint16), (128, 1)))
    second = Image.fromarray(np.zeros((64, 64), dtype=np.uint16))
    buffer = io.BytesIO()
    first.save(buffer, "TIFF", save_all=True, append_images=[second])
    prepared = prepare(buffer.getvalue())
    assert prepared.size == (140, 140)
    row = np.asarray(prepared.image.convert("L"))[70]
    assert row[0] < 20 and row[-1] > 235


def test_gif_first_frame():
    frames = [Image.new("RGB", (56, 56), color) for color in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    red, green, blue = prepare(buffer.getvalue()).image.getpixel((28, 28))
    assert red > 200 and blue < 50


def test_palette_and_grayscale_png():
    palette = gradient_image(84, 84).convert("P")
    gray = gradient_image(84, 84, mode="L")
    assert prepare(encode(palette, "PNG")).image.mode == "RGB"
    gray_out = prepare(encode(gray, "PNG")).image
    r, g, b = gray_out.getpixel((40, 40))
    assert r == g == b


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (56, 56), (255, 0, 0, 0))
    prepared = prepare(encode(image, "PNG"))
    assert prepared.image.getpixel((10, 10)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (56, 56), (0, 255, 255, 0))  # red in CMYK
    red, green, blue = prepare(encode(cmyk, "JPEG")).image.getpixel((28, 28))
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_applied():
    image = gradient_image(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    prepared = prepare(encode(image, "JPEG", exif=exif))
    width, height = prepared.size
    assert height > width
    assert prepared.image.height > prepared.image.width


def test_large_image_shrinks_to_max_pixels():
    budget = PixelBudget(QWEN_MIN_PIXELS, 1280 * 28 * 28)
    prepared = prepare(encode(gradient_image(1955, 1841), "PNG"), budget)
    assert prepared.image.size == prepared.size  # resized here: the engine's budget is larger
    width, height = prepared.size
    assert width % 28 == 0 and height % 28 == 0
    assert width * height <= 1280 * 28 * 28
    assert prepared.num_tokens <= 1280
    assert abs(width / height - 1955 / 1841) < 0.05


def test_tiny_image_is_upscaled_not_rejected():
    prepared = prepare(encode(gradient_image(10, 10), "PNG"))
    assert prepared.size == (56, 56)  # min 4 tokens of 28x28
    one_pixel = prepare(encode(Image.new("RGB", (1, 1)), "PNG"))
    assert one_pixel.num_tokens == 4


def test_resized_matches_qwen_rules():
    assert resized(224, 224, DEFAULT) == (224, 224)
    assert resized(1000, 700, DEFAULT) == (1008, 700)


def test_model_size_is_the_recipe_resize_then_the_processor_resize():
    """1400x1100 under a 512-token processor: qwen-vl-utils makes it 1400x1092, which the
    processor then takes to 700x532 -- not the 700x560 one resize with 512 tokens gives."""
    processor = PixelBudget(QWEN_MIN_PIXELS, 512 * 28 * 28)
    size = model_size(1400, 1100, DEFAULT, processor)
    assert size.recipe == (1400, 1092)
    assert size.final == (700, 532) != resized(1400, 1100, processor)
    assert size.resized_twice and size.tokens == 25 * 19


def test_extreme_aspect_ratio_is_400():
    with pytest.raises(InvalidRequestError) as info:
        prepare(encode(Image.new("L", (4100, 20)), "PNG"))
    assert "aspect ratio" in info.value.message


def test_not_an_image_is_400():
    with pytest.raises(InvalidRequestError) as info:
        prepare(b"GIF89a-but-not-really")
    assert info.value.code == "invalid_image"


def test_truncated_png_is_400():
    png = encode(gradient_image(256, 256), "PNG")
    with pytest.raises(InvalidRequestError) as info:
        prepare(png[: len(png) // 2])
    assert info.value.code == "invalid_image"


def test_decompression_bomb_refused_from_header():
    bomb = png_bomb(60000, 60000)
    assert len(bomb) < 2000
    started = time.perf_counter()
    with pytest.raises(InvalidRequestError) as info:
        prepare(bomb)
    assert info.value.code == "image_too_large"
    assert time.perf_counter() - started < 1  # refused without decoding 3.6 GB of pixels


@pytest.mark.parametrize(
    ("detail", "min_pixels", "max_pixels", "expected"),
    [
        (None, None, None, PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)),
        ("auto", None, None, PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)),
        ("high", None, None, PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)),
        ("low", None, None, PixelBudget(QWEN_MIN_PIXELS, 256 * 28 * 28)),
        ("low", None, 100 * 28 * 28, PixelBudget(QWEN_MIN_PIXELS, 100 * 28 * 28)),
        (None, 8 * 28 * 28, 64 * 28 * 28, PixelBudget(8 * 28 * 28, 64 * 28 * 28)),
        # as a model card message's min/max pixels, within the processor's limits
        (None, 1, 10**12, PixelBudget(QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)),
    ],
)
def test_budget_from_detail_and_explicit_pixels(detail, min_pixels, max_pixels, expected):
    assert LIMITS.budget(detail, min_pixels, max_pixels) == expected


def test_the_server_budget_is_the_messages_so_an_image_is_resized_once():
    """A budget below the recipe's (a small checkpoint, --max-pixels) goes on the message, as
    qwen-vl-utils' max_pixels: one resize, straight to the size the processor keeps, whatever
    the request asks beyond it."""
    small = PixelBudget(QWEN_MIN_PIXELS, 200 * 28 * 28)
    limits = ImageLimits.from_settings(Settings(), small)
    png = encode(gradient_image(1955, 1841), "PNG")
    for budget in (limits.budget(None, None, 10**9), limits.budget(None, 10**9, None)):
        assert budget.max_pixels == small.max_pixels
        prepared = prepare_image(EncodedImage(png, None), limits, budget, DicomOptions(), "p")
        assert prepared.image.size == prepared.size == resized(1955, 1841, small)
        assert not prepared.resized_twice and prepared.num_tokens <= 200


def test_the_server_resizes_as_the_recipe_and_leaves_the_processor_nothing_to_do():
    png = encode(gradient_image(1000, 700), "PNG")
    as_engine = prepare(png)
    assert as_engine.size == as_engine.image.size == (1008, 700)
    smaller = prepare(png, PixelBudget(QWEN_MIN_PIXELS, 200 * 28 * 28))
    assert smaller.image.size == smaller.size
    assert resized(*smaller.size, DEFAULT) == smaller.size


def test_images_are_hashed_only_for_the_audit_log(tmp_path):
    import hashlib

    png = encode(gradient_image(56, 56), "PNG")
    assert prepare(png).sha256 is None  # no audit log: no SHA-256 recorded
    audited = ImageLimits.from_settings(Settings(audit_log_file=tmp_path / "audit.jsonl"), DEFAULT)
    prepared = prepare_image(EncodedImage(png, None), audited, DEFAULT, DicomOptions(), "p")
    assert prepared.sha256 == hashlib.sha256(png).hexdigest()


def _png_with_orientation_after_the_pixels(image: Image.Image, orientation: int) -> bytes:
    """A PNG whose eXIf chunk follows its image data (allowed; PIL reads it on load)."""
    import struct
    import zlib

    exif = Image.Exif()
    exif[0x0112] = orientation
    body = exif.tobytes()
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + body) & 0xFFFFFFFF)
    png = encode(image, "PNG")
    return png[:-12] + chunk + png[-12:]  # before IEND


def test_png_is_sized_without_decoding_its_pixels(monkeypatch):
    """Probing a PNG reads its header and chunk list; PIL's getexif() would decode it all.
    Where an orientation may follow the pixels, PIL still decides (and decodes)."""
    from PIL import PngImagePlugin

    from lingshu_server.inputs.media import probe_image

    exif = Image.Exif()
    exif[0x0112] = 6
    before = encode(gradient_image(80, 40), "PNG", exif=exif)
    plain = encode(gradient_image(80, 40), "PNG")
    after = _png_with_orientation_after_the_pixels(gradient_image(80, 40), 6)

    def probe(data: bytes):
        return probe_image(EncodedImage(data, None), LIMITS, DEFAULT, "p")

    def no_decoding(self):
        raise AssertionError("the probe decoded the pixels")

    with monkeypatch.context() as patched:
        patched.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
        assert probe(plain).source_size == (80, 40)
        assert probe(before).source_size == (40, 80)  # turned by the EXIF before the pixels
    assert probe(after).source_size == (40, 80)  # read by PIL, after decoding
    for data in (before, after):
        assert prepare(data).image.height > prepare(data).image.width


def _stretched_as_float(pixels: np.ndarray) -> np.ndarray:
    """The 16-bit stretch written plainly: every pixel through float64."""
    values = pixels.astype(np.float64)
    low, high = values.min(), values.max()
    if high <= low:
        return np.zeros(pixels.shape, np.uint8)
    return np.clip(np.rint((values - low) * (255.0 / (high - low))), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "low", "high"),
    [("I;16", 0, 65535), ("I;16", 1000, 4095), ("I;16", 7, 8), ("I", -5000, 60000), ("F", 0, 9)],
)
def test_high_bit_depth_stretch_is_the_plain_arithmetic(mode, low, high):
    from lingshu_server.inputs.media import stretch_to_8bit

    rng = np.random.default_rng(3)
    pixels = rng.integers(low, high + 1, size=(67, 45))
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(pixels.astype(dtype))
    assert image.mode == mode
    expected = _stretched_as_float(np.asarray(image))
    assert np.array_equal(np.asarray(stretch_to_8bit(image)), expected)
    big_endian = Image.frombytes("I;16B", (45, 67), pixels.astype(">u2").tobytes())
    if mode == "I;16":
        assert np.array_equal(np.asarray(stretch_to_8bit(big_endian)), expected)


@pytest.mark.parametrize("size", [(504, 504), (300, 111), (2044, 1988), (56, 28)])
def test_gray_images_resize_before_they_turn_rgb_with_the_same_pixels(size):
    from lingshu_server.inputs.media import to_rgb_resized

    gray = Image.fromarray(
        np.random.default_rng(5).integers(0, 256, (515, 1030), dtype=np.uint8), "L"
    )
    expected = gray.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(to_rgb_resized(gray, size)), np.asarray(expected))


def test_an_image_sent_again_is_not_decoded_again(monkeypatch):
    """A follow-up re-sends its conversation's image: the same bytes prepared the same way
    come from the cache; other bytes, another window or another size are decoded."""
    from pathlib import Path

    from pydicom.data import get_testdata_file

    from lingshu_server.inputs import media
    from lingshu_server.inputs.image_cache import PreparedImageCache

    cache = PreparedImageCache(64 * 1024 * 1024)
    png = encode(gradient_image(200, 100), "PNG")
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()

    def prepared(data: bytes, budget: PixelBudget = DEFAULT, window: str | None = None):
        options = DicomOptions(window=window)
        return prepare_image(EncodedImage(data, None), LIMITS, budget, options, "p", cache)

    first, first_ct = prepared(png), prepared(ct)
    decoded = []
    for name in ("open_image", "render_dicom"):
        original = getattr(media, name)
        monkeypatch.setattr(
            media, name, lambda *a, _f=original, **k: decoded.append(a) or _f(*a, **k)
        )
    again = prepared(png)
    assert again.image is first.image and again.pixels_id == first.pixels_id
    again_ct = prepared(ct)
    assert again_ct.image is first_ct.image and again_ct.dicom == first_ct.dicom
    assert decoded == []
    assert prepared(ct, window="lung").pixels_id != first_ct.pixels_id
    smaller = prepared(png, PixelBudget(QWEN_MIN_PIXELS, 16 * 28 * 28))
    assert smaller.image.size != first.image.size
    assert prepared(encode(gradient_image(200, 100, seed=1), "PNG")).image is not first.image
    assert len(decoded) == 3
    assert np.array_equal(np.asarray(again.image), np.asarray(prepare(png).image))


def test_the_image_cache_keeps_to_its_size():
    from lingshu_server.inputs.image_cache import PreparedImageCache

    cache = PreparedImageCache(3 * 100 * 100 * 3)
    images = [Image.new("RGB", (100, 100), (i, 0, 0)) for i in range(5)]
    for i, image in enumerate(images):
        cache.put(str(i), image)
        cache.get("0")  # the oldest stays in use
    assert len(cache) == 3 and cache.bytes <= cache.max_bytes
    assert cache.get("0") == (images[0], None) and cache.get("4") == (images[4], None)
    assert cache.get("1") is None
    cache.put("huge", Image.new("RGB", (1000, 1000)))
    assert cache.get("huge") is None
