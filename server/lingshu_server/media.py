"""Image inputs: bytes -> upright RGB PIL image resized once to the Qwen2.5-VL pixel budget.

The real format is sniffed from the bytes (a JPEG labelled image/png still works); DICOM is
recognised by its preamble or its declared type and windowed by the dicom module.
"""

from __future__ import annotations

import binascii
import hashlib
import io
import struct
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pybase64
from PIL import Image, ImageOps, UnidentifiedImageError
from qwen_vl_utils.vision_process import MAX_RATIO, smart_resize

from lingshu_server.dicom import DicomOptions, dicom_to_image, is_dicom
from lingshu_server.errors import InvalidRequestError
from lingshu_server.settings import IMAGE_FACTOR, Settings

# Our explicit pixel cap (checked from the header) replaces PIL's bomb warning. Set once here:
# warnings.catch_warnings is not thread-safe, and images decode in a thread pool.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

EXIF_ORIENTATION = 0x0112
DICOM_MIME_TYPES = frozenset({"application/dicom", "application/dicom+file"})


@dataclass(frozen=True)
class PixelBudget:
    min_pixels: int
    max_pixels: int


@dataclass(frozen=True)
class ImageLimits:
    """The server's image policy, from Settings."""

    min_pixels: int
    max_pixels: int
    low_detail_max_pixels: int
    max_image_bytes: int
    max_request_image_bytes: int
    max_image_pixels: int
    default_ct_window: str
    hash_images: bool = False  # SHA-256 of each image's bytes, only for the audit log

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(
            min_pixels=settings.min_pixels,
            max_pixels=settings.max_pixels,
            low_detail_max_pixels=min(settings.low_detail_max_pixels, settings.max_pixels),
            max_image_bytes=settings.max_image_bytes,
            max_request_image_bytes=settings.max_request_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            default_ct_window=settings.dicom_default_ct_window,
            hash_images=settings.audit_log_file is not None,
        )

    def budget(
        self, detail: str | None, min_pixels: int | None, max_pixels: int | None
    ) -> PixelBudget:
        """`detail` picks a budget; explicit min/max pixels win but stay within the server caps."""
        upper = self.low_detail_max_pixels if detail == "low" else self.max_pixels
        if max_pixels is not None:
            upper = max_pixels
        lower = self.min_pixels if min_pixels is None else min_pixels
        upper = min(max(upper, self.min_pixels), self.max_pixels)
        lower = min(max(lower, self.min_pixels), upper)
        return PixelBudget(lower, upper)


@dataclass
class EncodedImage:
    data: bytes
    declared_type: str | None  # the MIME type a data: URL declared, if any


@dataclass
class PreparedImage:
    image: Image.Image  # RGB; the engine's processor brings it to `size` if it is not already
    size: tuple[int, int]  # (width, height) the model sees: multiples of 28, within the budget
    source_format: str  # "PNG", "JPEG", "DICOM", ...
    encoded_bytes: int
    source_size: tuple[int, int]  # (width, height) as sent, upright
    sha256: str | None  # of the encoded bytes, when an audit log records it
    seconds: float  # decode + resize time
    source: dict[str, str] | None = None  # DICOMweb: PACS host and UIDs, for the audit log only

    @property
    def num_tokens(self) -> int:
        """Visual tokens the model sees for this image (one per 28x28 pixels)."""
        width, height = self.size
        return (width // IMAGE_FACTOR) * (height // IMAGE_FACTOR)


def data_url_decoded_size(url: str) -> int:
    """Bytes a base64 data: URL decodes to, without decoding or copying its payload."""
    start = url.find(",", 0, 512) + 1
    end = len(url)
    while end > start and url[end - 1] in "= \n\r\t":
        end -= 1
    return (end - start) * 3 // 4


def decode_data_url(url: str, param: str, max_bytes: int | None = None) -> EncodedImage:
    """Bytes of a base64 `data:` URL; anything malformed is a 400 naming `param`."""
    comma = url.find(",", 0, 512)  # the header is short; never scan (or copy) the payload
    header = url[:comma] if comma >= 0 else ""
    if not header.startswith("data:") or not header.endswith(";base64"):
        raise InvalidRequestError(
            "image data: URL must be base64-encoded (data:<mime>;base64,<data>)",
            param=param,
            code="invalid_image_url",
        )
    if max_bytes is not None and data_url_decoded_size(url) > max_bytes:
        raise InvalidRequestError(
            f"image is larger than the server accepts ({max_bytes} bytes per image)",
            param=param,
            code="image_too_large",
        )
    try:
        data = pybase64.b64decode(url[comma + 1 :].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            "image data: URL does not hold valid base64", param=param, code="invalid_base64"
        ) from None
    if not data:
        raise InvalidRequestError("image data: URL is empty", param=param, code="invalid_image")
    declared = header[len("data:") : -len(";base64")].split(";", 1)[0].strip().lower() or None
    return EncodedImage(data=data, declared_type=declared)


def check_aspect_ratio(width: int, height: int, param: str) -> None:
    if max(width, height) / max(1, min(width, height)) > MAX_RATIO:
        raise InvalidRequestError(
            f"image is {width}x{height}: aspect ratios beyond {MAX_RATIO}:1 are not supported",
            param=param,
            code="invalid_image",
        )


def _too_large(width: int, height: int, param: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"image is {width}x{height} pixels, more than the server decodes",
        param=param,
        code="image_too_large",
    )


def open_image(
    data: bytes, param: str, max_pixels: int, budget: PixelBudget | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """The decoded, upright image, its real format (sniffed) and its full upright size.

    The size in the header is checked before any pixel is decoded, so a small file that
    declares a huge image (a decompression bomb) costs nothing. With a budget, a large JPEG
    is decoded at reduced scale (DCT scaling), never below the size the budget resizes it to.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(width, height, param)
        check_aspect_ratio(width, height, param)
        source_format = image.format or "UNKNOWN"
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        full_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
        if source_format == "JPEG" and budget is not None:
            image.draft(image.mode, target_size(width, height, budget))
        image.seek(0)  # GIF, TIFF, animated WebP: the first frame or page
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)  # a copy, so only when it turns something
    except InvalidRequestError:
        raise
    except Image.DecompressionBombError:
        raise InvalidRequestError(
            "image declares more pixels than the server decodes",
            param=param,
            code="image_too_large",
        ) from None
    except UnidentifiedImageError:
        raise InvalidRequestError(
            "the data is not an image in a supported format "
            "(PNG, JPEG, WebP, BMP, GIF, TIFF or DICOM)",
            param=param,
            code="invalid_image",
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error):
        raise InvalidRequestError(
            "the image is truncated or corrupt", param=param, code="invalid_image"
        ) from None
    return image, source_format, full_size


def stretch_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale -> 8 bit over the image's own range, keeping contrast.

    (PIL's own conversion clips everything above 255 to white.)
    """
    pixels = np.asarray(image, dtype=np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        return Image.new("L", image.size, 0)
    scaled = (pixels - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return stretch_to_8bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
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


def decode_image(
    encoded: EncodedImage,
    limits: ImageLimits,
    budget: PixelBudget,
    dicom: DicomOptions,
    param: str,
) -> tuple[Image.Image, str, tuple[int, int]]:
    """The upright image, its format and full size (a JPEG may be decoded at reduced scale)."""
    data = encoded.data
    if is_dicom(data) or encoded.declared_type in DICOM_MIME_TYPES:
        image = dicom_to_image(
            data, dicom, limits.default_ct_window, param, max_pixels=limits.max_image_pixels
        )
        return image, "DICOM", image.size
    return open_image(data, param, limits.max_image_pixels, budget)


def prepare_image(
    encoded: EncodedImage,
    limits: ImageLimits,
    budget: PixelBudget,
    dicom: DicomOptions,
    param: str,
) -> PreparedImage:
    """Decode, orient and convert to RGB; resize at most once, straight to the budget.

    The engine's own image processor resizes every image to the server-wide budget (the same
    qwen-vl-utils rule). When this request's budget lands on that same size, resizing here too
    would only do the work twice, so the image goes on as decoded; otherwise (a smaller budget,
    a JPEG decoded at reduced scale) it is resized here to a size the engine keeps as it is.
    """
    started = time.perf_counter()
    image, source_format, (width, height) = decode_image(encoded, limits, budget, dicom, param)
    check_aspect_ratio(width, height, param)
    new_size = target_size(width, height, budget)
    rgb = to_rgb(image)
    engine_budget = PixelBudget(limits.min_pixels, limits.max_pixels)
    if rgb.size != new_size and target_size(*rgb.size, engine_budget) != new_size:
        # reducing_gap: a large downscale first shrinks by a whole factor (box filter, cheap),
        # then resamples bicubically; at 3.0 PIL documents it as indistinguishable from a
        # plain bicubic resize, at a fraction of the cost for 2048² inputs.
        rgb = rgb.resize(new_size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return PreparedImage(
        image=rgb,
        size=new_size,
        source_format=source_format,
        encoded_bytes=len(encoded.data),
        source_size=(width, height),
        sha256=hashlib.sha256(encoded.data).hexdigest() if limits.hash_images else None,
        seconds=time.perf_counter() - started,
    )
