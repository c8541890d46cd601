"""Image inputs: data URL -> bytes -> RGB PIL image resized to the Qwen2.5-VL pixel budget."""

from __future__ import annotations

import binascii
import io
import warnings
from dataclasses import dataclass

import pybase64
from PIL import Image, ImageOps, UnidentifiedImageError
from qwen_vl_utils.vision_process import MAX_RATIO, smart_resize

from lingshu_server.errors import InvalidRequestError
from lingshu_server.settings import IMAGE_FACTOR

# Refuse images whose header claims more pixels than this before decoding them.
MAX_DECODED_PIXELS = 256 * 1024 * 1024


@dataclass(frozen=True)
class PixelBudget:
    min_pixels: int
    max_pixels: int


@dataclass
class PreparedImage:
    image: Image.Image  # RGB, both sides multiples of 28, within the budget
    source_format: str  # "PNG", "JPEG", ...
    encoded_bytes: int

    @property
    def num_tokens(self) -> int:
        """Visual tokens the model sees for this image (one per 28x28 pixels)."""
        width, height = self.image.size
        return (width // IMAGE_FACTOR) * (height // IMAGE_FACTOR)


def decode_data_url(url: str, param: str) -> bytes:
    """Bytes of a base64 `data:` URL; anything else is a 400 naming `param`."""
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0] if ":" in url[:16] else "a bare string"
        raise InvalidRequestError(
            f"image URLs must be base64 data: URLs (data:image/png;base64,...); got {scheme}",
            param=param,
            code="invalid_image_url",
        )
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequestError(
            "image data: URL must be base64-encoded (data:<mime>;base64,<data>)",
            param=param,
            code="invalid_image_url",
        )
    try:
        data = pybase64.b64decode(payload.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            "image data: URL does not hold valid base64", param=param, code="invalid_base64"
        ) from None
    if not data:
        raise InvalidRequestError("image data: URL is empty", param=param, code="invalid_image")
    return data


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def target_size(width: int, height: int, budget: PixelBudget) -> tuple[int, int]:
    """(width, height) after qwen-vl-utils' smart_resize for this budget."""
    resized_height, resized_width = smart_resize(
        height, width, IMAGE_FACTOR, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels
    )
    return resized_width, resized_height


def open_image(data: bytes, param: str) -> tuple[Image.Image, str]:
    """The decoded, upright image and its real format (sniffed from the bytes)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_DECODED_PIXELS:
                raise InvalidRequestError(
                    f"image is {width}x{height} pixels, more than the server decodes",
                    param=param,
                    code="image_too_large",
                )
            source_format = image.format or "UNKNOWN"
            image.load()
            image = ImageOps.exif_transpose(image)
    except InvalidRequestError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequestError(
            "the data is not an image in a supported format (PNG, JPEG, WebP, ...)",
            param=param,
            code="invalid_image",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError):
        raise InvalidRequestError(
            "the image is truncated or corrupt", param=param, code="invalid_image"
        ) from None
    return image, source_format


def prepare_image(data: bytes, budget: PixelBudget, param: str) -> PreparedImage:
    """Decode, orient, convert to RGB and resize once, straight to the pixel budget."""
    image, source_format = open_image(data, param)
    width, height = image.size
    if max(width, height) / max(1, min(width, height)) > MAX_RATIO:
        raise InvalidRequestError(
            f"image aspect ratio {width}x{height} exceeds {MAX_RATIO}:1",
            param=param,
            code="invalid_image",
        )
    new_size = target_size(width, height, budget)
    rgb = _to_rgb(image)
    if rgb.size != new_size:
        rgb = rgb.resize(new_size, Image.Resampling.BICUBIC)
    return PreparedImage(image=rgb, source_format=source_format, encoded_bytes=len(data))
