"""DICOM bytes -> the 8-bit image a radiologist's viewer would show: HU windowed, inverted
where MONOCHROME1, colour converted to RGB, one frame of a multi-frame file.

Privacy: no header value (names, IDs, dates, descriptions) ever reaches a message or a log;
messages name only the modality, the SOP class and the transfer syntax.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_windowing,
    get_decoder,
    pixel_array,
)
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.protocol.common import WindowSource

# pydicom's value-validation warnings quote header values (names, dates): turn validation off
# (pydicom-wide and thread-safe, unlike catch_warnings) and keep pydicom's log out of ours.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").propagate = False

# name -> (center, width) in Hounsfield units
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (40.0, 350.0),
}

# Transfer syntaxes newer than pydicom 3.0's UID dictionary, so refusals can name them.
_SYNTAX_NAMES = {
    "1.2.840.10008.1.2.4.110": "JPEG XL Lossless",
    "1.2.840.10008.1.2.4.111": "JPEG XL JPEG Recompression",
    "1.2.840.10008.1.2.4.112": "JPEG XL",
    "1.2.840.10008.1.2.8.1": "Deflated Image Frame Compression",
}
# (implicit VR, little endian) as pydicom found a file without file meta -> transfer syntax
# keyed by pydicom's original_encoding, (None, None) before a dataset is read (never here)
_ENCODING_SYNTAX: dict[tuple[bool | None, bool | None], UID] = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# The per-frame attributes of enhanced (multi-frame) images that windowing needs.
_FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


@dataclass(frozen=True, kw_only=True)
class AppliedWindow:
    """The VOI step the decoder really applied to a grayscale frame."""

    source: WindowSource
    center: float | None = None  # None for a VOI LUT, which is a table, not a line
    width: float | None = None
    function: str | None = None  # LINEAR, LINEAR_EXACT or SIGMOID (PS3.3 C.11.2.1.2)
    preset: str | None = None  # the CT_WINDOWS name, for the two preset sources


@dataclass(frozen=True, kw_only=True)
class DicomRendering:
    """What the decoder did to one frame, from the decoder itself. Only display facts: no
    header value that could identify a patient, a study or an institution."""

    modality: str | None  # "CT", "CR", "MR"...; None when absent or not a plain code
    photometric_interpretation: str | None  # as stored (YBR is shown converted to RGB)
    frame: int  # 0-based
    frames: int
    window: AppliedWindow | None  # None for colour images (no window applies)


@dataclass(frozen=True, kw_only=True)
class DicomOptions:
    window: str | None = None  # a CT_WINDOWS preset name
    center: float | None = None  # explicit window center (needs width too)
    width: float | None = None  # explicit window width (> 0)
    frame: int | None = None  # 0-based frame of a multi-frame file; default: the middle one


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file: 'DICM' after the 128-byte preamble."""
    return data[128:132] == b"DICM"


def dicom_to_image(
    data: bytes,
    options: DicomOptions,
    default_ct_window: str,
    param: str,
    max_pixels: int | None = None,
) -> Image.Image:
    """One frame of a DICOM file as a mode "L" or "RGB" image, windowed for display."""
    return render_dicom(data, options, default_ct_window, param, max_pixels)[0]


def render_dicom(
    data: bytes,
    options: DicomOptions,
    default_ct_window: str,
    param: str,
    max_pixels: int | None = None,
) -> tuple[Image.Image, DicomRendering]:
    """`dicom_to_image`, with what the decoder did (frame, window and where it came from)."""
    _check_options(options, param)
    with _untrusted(param):
        ds = _read(data, param)
        _check_pixels(int(ds.Rows), int(ds.Columns), param, max_pixels)
        frames = _frame_count(ds)
        frame = frames // 2 if options.frame is None else options.frame
        if not 0 <= frame < frames:
            raise _error(
                f"DICOM frame {frame} is out of range: valid frames are 0 to {frames - 1}",
                param,
                "invalid_dicom_options",
            )
        return _render_frame(ds, frame, options, default_ct_window)


def dicom_size(data: bytes, param: str, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) of a DICOM image from its header, without decoding a pixel."""
    with _untrusted(param):
        ds = _read(data, param, header_only=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
    _check_pixels(rows, columns, param, max_pixels)
    return columns, rows


@dataclass(frozen=True, kw_only=True)
class DicomMotion:
    """A DICOM file as a video, from its header: frame size, frame count and timing."""

    width: int
    height: int
    frames: int
    fps: float | None  # None: the file gives no timing (a volume, not a cine loop)


def dicom_motion(data: bytes, param: str, max_pixels: int | None = None) -> DicomMotion:
    """Size, frames and frame rate (Frame Time, Frame Time Vector, Cine Rate or Recommended
    Display Frame Rate, in that order) without decoding a pixel."""
    with _untrusted(param):
        ds = _read(data, param)
        rows, columns, frames = int(ds.Rows), int(ds.Columns), _frame_count(ds)
        fps = _frame_rate(ds)
    _check_pixels(rows, columns, param, max_pixels)
    return DicomMotion(width=columns, height=rows, frames=frames, fps=fps)


def dicom_frames(
    data: bytes,
    indices: Sequence[int],
    options: DicomOptions,
    default_ct_window: str,
    param: str,
    max_pixels: int | None = None,
) -> Iterator[tuple[Image.Image, DicomRendering]]:
    """The frames at `indices`, each windowed as `render_dicom` windows one; the file is
    parsed once."""
    _check_options(options, param)
    with _untrusted(param):
        ds = _read(data, param)
        _check_pixels(int(ds.Rows), int(ds.Columns), param, max_pixels)
        frames = _frame_count(ds)
    for index in indices:
        if not 0 <= index < frames:
            raise _error(f"DICOM frame {index} is out of range", param, "invalid_dicom_options")
        with _untrusted(param):
            rendered = _render_frame(ds, index, options, default_ct_window)
        yield rendered  # outside the guard: the consumer's errors stay its own


@contextmanager
def _untrusted(param: str) -> Iterator[None]:
    """Any parse or decode failure of untrusted bytes is a 400, never a 500."""
    try:
        yield
    except InvalidRequestError:
        raise
    except Exception:
        raise _error("the DICOM file is truncated or corrupt", param, "invalid_dicom") from None


def _frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames") or 1)


def _frame_rate(ds: Dataset) -> float | None:
    """Frames per second from the cine timing attributes (PS3.3 C.7.6.5), if any."""
    frame_time = _first(ds.get("FrameTime"))  # ms between frames
    if frame_time is not None and math.isfinite(frame_time) and frame_time > 0:
        return 1000.0 / frame_time
    vector = ds.get("FrameTimeVector")  # ms since the previous frame; the first is 0
    if isinstance(vector, MultiValue | list) and len(vector) > 1:
        increments = [float(v) for v in list(vector)[1:]]
        total = sum(increments)
        if math.isfinite(total) and total > 0:
            return 1000.0 * len(increments) / total
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _first(ds.get(keyword))
        if rate is not None and math.isfinite(rate) and rate > 0:
            return rate
    return None


def _check_pixels(rows: int, columns: int, param: str, max_pixels: int | None) -> None:
    if max_pixels is not None and rows * columns > max_pixels:
        raise _error(
            f"DICOM image is {columns}x{rows} pixels, more than the server decodes",
            param,
            "image_too_large",
        )


def _error(message: str, param: str, code: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _check_options(options: DicomOptions, param: str) -> None:
    def bad(message: str) -> InvalidRequestError:
        return _error(message, param, "invalid_dicom_options")

    if options.window is not None and options.window not in CT_WINDOWS:
        raise bad(f"unknown DICOM window {options.window!r}; use one of {', '.join(CT_WINDOWS)}")
    if (options.center is None) != (options.width is None):
        raise bad("a DICOM window needs both center and width")
    if options.center is not None and not math.isfinite(options.center):
        raise bad("the DICOM window center must be a finite number")
    if options.width is not None and not (math.isfinite(options.width) and options.width > 0):
        raise bad("the DICOM window width must be a number greater than 0")


def _render_frame(
    ds: Dataset, frame: int, options: DicomOptions, default_ct_window: str
) -> tuple[Image.Image, DicomRendering]:
    _flatten_frame_groups(ds, frame)
    pixels = pixel_array(ds, index=frame)  # decodes this frame only; YBR_FULL(_422) -> RGB

    photometric = str(ds.PhotometricInterpretation).strip().upper()

    def rendering(window: AppliedWindow | None) -> DicomRendering:
        return DicomRendering(
            modality=_modality_code(ds),
            photometric_interpretation=_code(photometric),
            frame=frame,
            frames=_frame_count(ds),
            window=window,
        )

    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return Image.fromarray(_scale_to_uint8(rgb, 8 * rgb.itemsize), "RGB"), rendering(None)
    if pixels.ndim == 3:  # RGB, or YBR already converted to RGB by the decoder
        image = Image.fromarray(_scale_to_uint8(pixels, int(ds.BitsStored)), "RGB")
        return image, rendering(None)
    gray, window = _window_grayscale(pixels, ds, options, default_ct_window)
    if photometric == "MONOCHROME1":  # low values are white; pydicom leaves this to us
        gray = 255 - gray
    return Image.fromarray(gray, "L"), rendering(window)


# Values longer than this are left unread when only the header matters (the pixel data above all).
_HEADER_ONLY_DEFER = 4096


def _read(data: bytes, param: str, header_only: bool = False) -> Dataset:
    """Parse the file and check it holds an image whose pixels a plugin here can decode.

    `header_only` leaves long values (the pixel data) unread: sizing an image before the
    context check then costs a header parse, not a copy of every pixel byte."""
    # A file without its preamble still starts with a little-endian (0002/0008,xxxx) tag.
    raw_dataset = data[:2] in (b"\x02\x00", b"\x08\x00")
    if not is_dicom(data) and not raw_dataset:
        raise _error("the data is not a DICOM file", param, "invalid_dicom")
    defer = _HEADER_ONLY_DEFER if header_only else None
    ds = pydicom.dcmread(BytesIO(data), force=not is_dicom(data), defer_size=defer)

    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        sop_class = _sop_class_name(ds)
        # A truncated image file loses its pixels too; call it truncated, not "no image".
        if "Rows" in ds or "Image" in sop_class or not (sop_class or "Modality" in ds):
            raise _error(
                "the DICOM file has no pixel data; it may be truncated", param, "invalid_dicom"
            )
        described = ", ".join(filter(None, (_modality(ds), sop_class)))
        raise _error(f"DICOM file holds no image ({described})", param, "dicom_no_image")

    if "TransferSyntaxUID" not in ds.file_meta:  # no file meta: how pydicom found it encoded
        ds.file_meta.TransferSyntaxUID = _ENCODING_SYNTAX[ds.original_encoding]
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:
        decodable = False
    if not decodable:
        name = _SYNTAX_NAMES.get(syntax, syntax.name) if syntax.is_valid else "(unreadable UID)"
        raise _error(
            f"DICOM transfer syntax {name} is not supported (no decoder installed)",
            param,
            "dicom_unsupported_syntax",
        )
    return ds


def _sop_class_name(ds: Dataset) -> str:
    """'Comprehensive SR', 'RT Plan'...: a standard SOP class's name, else ''."""
    uid = UID(str(ds.get("SOPClassUID", "")))
    if not uid.is_valid or uid.name == str(uid):  # private or malformed: not worth echoing
        return ""
    return uid.name.removesuffix(" Storage")


def _code(value: str) -> str | None:
    """A DICOM code string (CS: up to 16 of A-Z, 0-9, space, _), else None: a hostile file
    must not get free text into a message or an answer."""
    value = value.strip()
    return value if re.fullmatch(r"[A-Z0-9_ ]{1,16}", value) else None


def _modality_code(ds: Dataset) -> str | None:
    return _code(str(ds.get("Modality", "")))


def _modality(ds: Dataset) -> str:
    modality = _modality_code(ds)
    return f"modality {modality}" if modality else ""


def _flatten_frame_groups(ds: Dataset, frame: int) -> None:
    """Enhanced multi-frame files keep rescale and window in functional groups; copy the
    chosen frame's onto the top level, where pydicom's LUT functions look for them."""
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups = [*shared[:1], *per_frame[frame : frame + 1]]  # per-frame values win
    for group in groups:
        for keyword in _FRAME_GROUPS:
            for item in group.get(keyword, [])[:1]:
                for element in item:
                    ds[element.tag] = element


def _window_grayscale(
    pixels: np.ndarray, ds: Dataset, options: DicomOptions, default_ct_window: str
) -> tuple[np.ndarray, AppliedWindow]:
    """Modality LUT (-> HU for CT), then the first window that applies, as uint8."""
    values = apply_modality_lut(pixels, ds)
    if options.center is not None and options.width is not None:
        return _window(values, "request", options.center, options.width)
    if options.window is not None:
        center, width = CT_WINDOWS[options.window]
        return _window(values, "request_preset", center, width, preset=options.window)
    voi_lut = ds.get("VOILUTSequence")
    if voi_lut and "LUTDescriptor" in voi_lut[0] and "LUTData" in voi_lut[0]:
        mapped = apply_voi(np.rint(values).astype(np.int64), ds)
        gray = _scale_to_uint8(mapped, int(voi_lut[0].LUTDescriptor[2]))
        return gray, AppliedWindow(source="file_voi_lut")
    file_center, file_width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if file_center is not None and file_width is not None and file_width > 0:
        function = str(ds.get("VOILUTFunction") or "LINEAR")
        return _window(values, "file_window", file_center, file_width, function)
    if str(ds.get("Modality", "")).upper() == "CT":
        center, width = CT_WINDOWS[default_ct_window]
        return _window(values, "default_preset", center, width, preset=default_ct_window)
    low, high = float(values.min()), float(values.max())
    if high <= low:  # a constant image has no contrast to show
        return np.zeros(values.shape, dtype=np.uint8), AppliedWindow(source="full_range")
    return _window(values, "full_range", (low + high) / 2, high - low, "LINEAR_EXACT")


def _first(value: Any) -> float | None:
    """The first value of a DS element that may hold several (alternative windows)."""
    if isinstance(value, MultiValue | list):
        value = value[0] if value else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _window(
    values: np.ndarray,
    source: WindowSource,
    center: float,
    width: float,
    function: str = "LINEAR",
    preset: str | None = None,
) -> tuple[np.ndarray, AppliedWindow]:
    """DICOM windowing (PS3.3 C.11.2.1.2) straight to 0..255, through pydicom's apply_windowing:
    an 8-bit unsigned output with no rescale makes its output range exactly 0..255."""
    function = function.strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    if function == "LINEAR" and width < 1:  # LINEAR needs width >= 1; EXACT is the same line
        function = "LINEAR_EXACT"
    applied = AppliedWindow(
        source=source, center=center, width=width, function=function, preset=preset
    )
    voi = Dataset()
    voi.PhotometricInterpretation = "MONOCHROME2"
    voi.BitsStored = 8
    voi.PixelRepresentation = 0
    voi.WindowCenter = center
    voi.WindowWidth = width
    voi.VOILUTFunction = function
    return np.clip(np.rint(apply_windowing(values, voi)), 0, 255).astype(np.uint8), applied


def _scale_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Samples of `bits` bits (0..2**bits-1) as 0..255."""
    if values.dtype == np.uint8 and bits == 8:
        return np.ascontiguousarray(values)
    scaled = values.astype(np.float64) * (255.0 / (2**bits - 1))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
