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
from qwen_vl_utils.vision_process import MAX_RATIO

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.core.image_budget import (
    RECIPE_DEFAULT,
    ImageSize,
    PixelBudget,
    model_size,
    within,
)
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.dicom import (
    DicomOptions,
    DicomRendering,
    dicom_size,
    is_dicom,
    render_dicom,
)
from lingshu_server.inputs.image_cache import PreparedImageCache

# Our explicit pixel cap (checked from the header) replaces PIL's bomb warning. Set once here:
# warnings.catch_warnings is not thread-safe, and images decode in a thread pool.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

EXIF_ORIENTATION = 0x0112
DICOM_MIME_TYPES = frozenset({"application/dicom", "application/dicom+file"})


@dataclass(frozen=True)
class ImageLimits:
    """The server's image policy: the processor's budget in force, and the safety caps."""

    processor: PixelBudget  # what the engine's processor brings every image within
    low_detail_max_pixels: int
    max_image_bytes: int
    max_request_image_bytes: int
    max_image_pixels: int
    default_ct_window: str
    hash_images: bool = False  # SHA-256 of each image's bytes, only for the audit log

    @classmethod
    def from_settings(cls, settings: Settings, processor: PixelBudget) -> ImageLimits:
        return cls(
            processor=processor,
            low_detail_max_pixels=settings.low_detail_max_pixels,
            max_image_bytes=settings.max_image_bytes,
            max_request_image_bytes=settings.max_request_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            default_ct_window=settings.dicom_default_ct_window,
            hash_images=settings.audit_log_file is not None,
        )

    def budget(
        self, detail: str | None, min_pixels: int | None, max_pixels: int | None
    ) -> PixelBudget:
        """The message budget of the model card's recipe: the `min_pixels`/`max_pixels` that
        qwen-vl-utils' fetch_image resizes the image within, in its one resize.

        The request's values (`detail: low` stands for a max_pixels of
        --low-detail-max-pixels; explicit values win) within the server's budget (the
        processor's, `self.processor`): the model card's second way of setting a budget, on
        the message, so the image is resized once, straight to its final size, and the
        processor, the image already within its limits, keeps it as it is.
        """
        upper = self.low_detail_max_pixels if detail == "low" else RECIPE_DEFAULT.max_pixels
        upper = upper if max_pixels is None else max_pixels
        lower = RECIPE_DEFAULT.min_pixels if min_pixels is None else min_pixels
        return within(PixelBudget(min(lower, upper), upper), self.processor)


@dataclass
class EncodedImage:
    data: bytes
    declared_type: str | None  # the MIME type a data: URL declared, if any


@dataclass(kw_only=True)
class ProbedImage:
    """An image whose header has been read, and nothing decoded: its size and token cost."""

    encoded: EncodedImage
    source_format: str  # "PNG", "JPEG", "DICOM", ...
    source_size: tuple[int, int]  # (width, height) as sent, upright
    size: ImageSize  # where the model card's recipe takes it
    digest: str  # SHA-256 of the encoded bytes

    @property
    def num_tokens(self) -> int:
        return self.size.tokens


@dataclass
class PreparedImage:
    image: Image.Image  # RGB, as qwen-vl-utils' fetch_image makes it
    size: tuple[int, int]  # (width, height) the model sees, after the processor's budget
    source_format: str
    encoded_bytes: int
    source_size: tuple[int, int]
    sha256: str | None  # of the encoded bytes, when an audit log records it
    seconds: float  # probe + decode + resize time
    num_tokens: int  # visual tokens the model sees (one per 28x28 pixels)
    # `image` as the engine takes it: H x W x 3 uint8, C order, writable. vLLM's processor
    # uses such an array as it is; a PIL image costs it a copy (EXIF normalisation, already
    # done here) and a conversion to a strided tensor that is slower to normalise.
    pixels: np.ndarray
    source: dict[str, str] | None = None  # DICOMweb: PACS host and UIDs, for the audit log only
    dicom: DicomRendering | None = None  # DICOM: what the decoder did (frame, window)
    # Names these pixels for the engine's caches (see `pixels_id`): the engine then need not
    # hash the decoded image to recognise it.
    pixels_id: str | None = None

    @property
    def resized_twice(self) -> bool:
        """The engine's processor resizes `image` again, to `size` (see image_budget)."""
        return self.image.size != self.size


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


def _not_an_image(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        "the data is not an image in a supported format (PNG, JPEG, WebP, BMP, GIF, TIFF or DICOM)",
        param=param,
        code="invalid_image",
    )


def _corrupt(param: str) -> InvalidRequestError:
    return InvalidRequestError(
        "the image is truncated or corrupt", param=param, code="invalid_image"
    )


# What PIL raises for bytes it cannot parse (untrusted input: all of it is a 400).
_PIL_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)


def _is_dicom(encoded: EncodedImage) -> bool:
    return is_dicom(encoded.data) or encoded.declared_type in DICOM_MIME_TYPES


def _header(
    data: bytes, param: str, max_pixels: int, probe: bool = False
) -> tuple[Image.Image, str, int]:
    """PIL's lazily opened image (header only), its format and its EXIF orientation.

    `probe`: read the orientation without decoding pixels where PIL would decode them for it
    (see `_png_orientation_before_pixels`)."""
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise _too_large(width, height, param)
        exif = None
        if probe and image.format == "PNG":
            exif = _png_orientation_before_pixels(image, data)
        if exif is None:
            exif = image.getexif()
        return image, image.format or "UNKNOWN", exif.get(EXIF_ORIENTATION, 1)
    except InvalidRequestError:
        raise
    except Image.DecompressionBombError:
        raise _too_large(0, 0, param) from None
    except UnidentifiedImageError:
        raise _not_an_image(param) from None
    except _PIL_ERRORS:
        raise _corrupt(param) from None


# Chunks that can carry EXIF or XMP (and so an orientation) for PIL.
_PNG_METADATA_CHUNKS = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt"})


def _png_orientation_before_pixels(image: Image.Image, data: bytes) -> Image.Exif | None:
    """The EXIF of a PNG whose metadata all precede its pixels, read as PIL reads it, or None.

    PIL's PNG getexif() decodes the whole image first, in case an eXIf or text chunk follows
    the pixel data: for a 2048x2048 PNG, a second full decode just to size it. When no such
    chunk follows (the chunk headers tell, nothing is decompressed), every chunk PIL would read
    is already in `image.info`, and PIL's own reading gives the same answer without decoding.
    """
    position, after_pixels = 8, False
    while position + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"IDAT":
            after_pixels = True
        elif kind == b"IEND":
            return Image.Image.getexif(image)
        elif after_pixels and kind in _PNG_METADATA_CHUNKS:
            return None
        position += 12 + length
    return None  # truncated or unusual: PIL decides, as for any other image


def probe_image(
    encoded: EncodedImage, limits: ImageLimits, budget: PixelBudget, param: str
) -> ProbedImage:
    """Size, format and token cost from the header alone: a decompression bomb or a request
    over the context costs nothing to refuse."""
    if _is_dicom(encoded):
        width, height = dicom_size(encoded.data, param, limits.max_image_pixels)
        source_format = "DICOM"
    else:
        image, source_format, orientation = _header(
            encoded.data, param, limits.max_image_pixels, probe=True
        )
        width, height = image.size
        if orientation in (5, 6, 7, 8):  # EXIF turns it by 90 degrees
            width, height = height, width
    check_aspect_ratio(width, height, param)
    size = model_size(width, height, budget, limits.processor)
    digest = hashlib.sha256(encoded.data).hexdigest()
    return ProbedImage(
        encoded=encoded,
        source_format=source_format,
        source_size=(width, height),
        size=size,
        digest=digest,
    )


def probe_data_url(url: str, limits: ImageLimits, budget: PixelBudget, param: str) -> ProbedImage:
    """`probe_image` of a base64 data: URL's bytes (one call for the worker pool)."""
    return probe_image(decode_data_url(url, param, limits.max_image_bytes), limits, budget, param)


def open_image(data: bytes, param: str, max_pixels: int) -> Image.Image:
    """The decoded, upright image (the first frame of an animation, the first page of a TIFF)."""
    image, _, orientation = _header(data, param, max_pixels)
    try:
        image.seek(0)  # GIF, TIFF, animated WebP: the first frame or page
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)  # a copy, so only when it turns something
    except _PIL_ERRORS:
        raise _corrupt(param) from None
    return image


# Integer images whose values span at most this many levels are stretched through a lookup
# table: the same arithmetic, once per level instead of once per pixel.
STRETCH_LUT_LEVELS = 1 << 20


def stretch_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grayscale -> 8 bit over the image's own range, keeping contrast.

    (PIL's own conversion, which the model card's recipe uses, clips everything above 255 to
    white: a 12-bit X-ray would arrive almost blank.)
    """
    pixels = np.asarray(image)
    low, high = pixels.min(), pixels.max()
    if high <= low:
        return Image.new("L", image.size, 0)
    if pixels.dtype.kind in "ui" and int(high) - int(low) < STRETCH_LUT_LEVELS:
        levels = np.arange(int(low), int(high) + 1, dtype=np.float64)
        table = _stretch(levels, float(low), float(high))
        return Image.fromarray(table[pixels - low], "L")
    return Image.fromarray(_stretch(pixels.astype(np.float64), float(low), float(high)), "L")


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB exactly as qwen-vl-utils' to_rgb makes it (RGBA on white through its alpha; every
    other mode by PIL's conversion), except high-bit-depth grayscale, which is stretched."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return stretch_to_8bit(image).convert("RGB")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def decode_image(
    probed: ProbedImage,
    limits: ImageLimits,
    dicom: DicomOptions,
    param: str,
    cache: PreparedImageCache | None = None,
) -> PreparedImage:
    """Decode, orient and convert to RGB, then resize as qwen-vl-utils' fetch_image does.

    The result is the recipe's image, pixel for pixel, for a message that carries the budget
    (`ImageLimits.budget`): one resize, to a size within the processor's limits, which the
    engine's processor keeps as it is. Where smart_resize's rounding lands outside them
    (`resized_twice`), the engine's processor resizes again, as the model card's does.

    With a `cache`, an image whose bytes were prepared the same way recently is not decoded
    again (a follow-up question re-sends its conversation's images).
    """
    started = time.perf_counter()
    encoded, size, digest = probed.encoded, probed.size, probed.digest
    name = pixels_id(digest, size, probed.source_format, dicom, limits.default_ct_window)
    cached = cache.get(name) if cache is not None else None
    if cached is not None:
        rgb, rendering = cached
    else:
        rendering = None
        if probed.source_format == "DICOM":
            image, rendering = render_dicom(
                encoded.data, dicom, limits.default_ct_window, param, limits.max_image_pixels
            )
        else:
            image = open_image(encoded.data, param, limits.max_image_pixels)
        rgb = to_rgb_resized(image, size.recipe)
        if cache is not None:
            cache.put(name, rgb, rendering)
    return PreparedImage(
        image=rgb,
        size=size.final,
        source_format=probed.source_format,
        encoded_bytes=len(encoded.data),
        source_size=probed.source_size,
        sha256=digest if limits.hash_images else None,
        seconds=time.perf_counter() - started,
        num_tokens=size.tokens,
        pixels=np.array(rgb),
        dicom=rendering,
        pixels_id=name,
    )


def to_rgb_resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`to_rgb`, then a bicubic resize to `size` (where it differs), as fetch_image does.

    A grayscale image is resized before it is made RGB: PIL resizes every band with the same
    arithmetic, so the result is the same image for a third of the work (the parity tests
    hold both orders to the model card's pixels)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = stretch_to_8bit(image)
    if image.mode == "L":
        if image.size != size:
            image = image.resize(size, Image.Resampling.BICUBIC)
        return image.convert("RGB")
    rgb = to_rgb(image)
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BICUBIC)


def pixels_id(
    digest: str, size: ImageSize, source_format: str, dicom: DicomOptions, ct_window: str
) -> str:
    """A name for the pixels the engine gets: the encoded bytes' SHA-256 and everything else
    that decides the pixels (the size the one resize goes to, and the processor's; for DICOM
    the window). Two images share a name only when
    they are the same bytes prepared the same way, so the engine's caches (processed inputs,
    prefix blocks) stay exact, and the engine skips hashing every decoded pixel."""
    rendering = f"{dicom}/{ct_window}" if source_format == "DICOM" else source_format
    return f"lingshu:{digest}:{size.recipe}:{size.final}:{rendering}"


def prepare_image(
    encoded: EncodedImage,
    limits: ImageLimits,
    budget: PixelBudget,
    dicom: DicomOptions,
    param: str,
    cache: PreparedImageCache | None = None,
) -> PreparedImage:
    """Probe then decode one image (the two steps a request's images take, for one image)."""
    started = time.perf_counter()
    probed = probe_image(encoded, limits, budget, param)
    prepared = decode_image(probed, limits, dicom, param, cache)
    prepared.seconds = time.perf_counter() - started
    return prepared
