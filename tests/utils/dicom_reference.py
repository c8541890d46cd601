"""pydicom's own display pipeline, the reference for the server's DICOM pixels.

Written with pydicom's public functions only: decode the frame (`Dataset.pixel_array`),
`apply_modality_lut` (stored values -> HU for CT), then `apply_voi_lut` (the file's VOI LUT or
window; for CT without one the default preset window, otherwise the image's full range), scale
that output range to 0..255, and invert MONOCHROME1. Colour images: pydicom's RGB (YBR
converted by the decoder, palettes through `apply_color_lut`), scaled from their bit depth.
"""

from __future__ import annotations

import copy

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from lingshu_server.inputs.dicom import CT_WINDOWS

DEFAULT_CT_WINDOW = "mediastinum"  # the server's default --dicom-default-ct-window


def window_to_8bit(
    values: np.ndarray, ds: pydicom.Dataset, center: float, width: float
) -> np.ndarray:
    """Stored values windowed at (center, width), whatever the file says, to 0..255."""
    ds = copy.deepcopy(ds)
    for keyword in ("VOILUTSequence", "VOILUTFunction"):
        if keyword in ds:
            del ds[keyword]
    ds.WindowCenter, ds.WindowWidth = center, width
    return _to_8bit(apply_voi_lut(values, ds), *_window_output_range(ds))


def _window_output_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The output range pydicom's windowing maps onto, found by asking pydicom itself."""
    extremes = apply_voi_lut(np.array([-1e12, 1e12]), ds)
    return float(extremes[0]), float(extremes[1])


def _to_8bit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) * 255.0 / max(high - low, 1e-12)
    return np.clip(np.rint(scaled), 0, 255)


def with_frame_groups(ds: pydicom.Dataset, frame: int) -> pydicom.Dataset:
    """Enhanced multi-frame files carry rescale and window per frame in functional groups
    (PS3.3 C.7.6.16), which pydicom's LUT functions do not read: lift the frame's values."""
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    for group in [*shared[:1], *per_frame[frame : frame + 1]]:
        for sequence in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
            if sequence in group:
                ds.update(group[sequence][0])
    return ds


def reference_pixels(path: str, window: tuple[float, float] | None = None) -> np.ndarray:
    """pydicom's pipeline for the middle frame; `window` (center, width) replaces the file's."""
    ds = pydicom.dcmread(path, force=True)
    frames = int(ds.get("NumberOfFrames") or 1)
    ds = with_frame_groups(ds, frames // 2)
    pixels = ds.pixel_array
    if frames > 1:
        pixels = pixels[frames // 2]
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(pixels, ds)
        return _to_8bit(rgb, 0, 2 ** (8 * rgb.itemsize) - 1)
    if pixels.ndim == 3:
        return _to_8bit(pixels, 0, 2 ** int(ds.BitsStored) - 1)
    values = apply_modality_lut(pixels, ds)
    lut = ds.get("VOILUTSequence")
    if window is not None:
        windowed = window_to_8bit(values, ds, *window)
    elif lut:
        windowed = _to_8bit(apply_voi_lut(values, ds), 0, 2 ** int(lut[0].LUTDescriptor[2]) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        windowed = _to_8bit(apply_voi_lut(values, ds), *_window_output_range(ds))
    elif str(ds.get("Modality", "")).upper() == "CT":
        windowed = window_to_8bit(values, ds, *CT_WINDOWS[DEFAULT_CT_WINDOW])
    else:
        windowed = _to_8bit(values, float(values.min()), float(values.max()))
    if photometric == "MONOCHROME1":
        windowed = 255 - windowed
    return windowed
