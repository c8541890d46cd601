"""Synthetic benchmark images: structured content (so codecs work as on real images), a fixed
seed, and a cheap unique variant per request.

Every request must carry a different image: vLLM caches processed multimodal inputs and prefix
KV blocks by image content, so repeating one image would measure cache hits, not image handling.
A variant differs from the case's base image in its last rows only, which keeps building
hundreds of 2048x2048 payloads fast: JPEGs are re-encoded (tens of ms), and PNGs resume a copy of
a zlib stream that has already compressed the shared rows.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

FORMATS = ("jpeg", "png", "png16", "dicom")
MIME_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "png16": "image/png",  # 16-bit grayscale, as a digitised radiograph is often stored
    "dicom": "application/dicom",  # a CT slice: int16 stored values, Hounsfield units by rescale
}
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 6  # zlib's default, as PIL and most tools write
VARIANT_ROWS = 8  # rows at the bottom that make each variant unique


@functools.lru_cache(maxsize=4)
def base_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB uint8 array shaped like a radiograph: soft gradients, bright rounded structures,
    rib-like bands, fine noise and a colour cast. Read-only; copy before changing it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(1, width - 1), y / max(1, height - 1)
    gray = 40 + 60 * u + 30 * v
    for _ in range(5):
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        rx, ry = rng.uniform(0.08, 0.3, size=2)
        level = rng.uniform(40, 110)
        dist = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
        gray += level / (1 + np.exp(6 * (dist - 1)))  # a blob with a soft edge
    frequency = rng.uniform(8, 14)
    gray += 18 * np.sin(2 * np.pi * (frequency * v + 1.5 * (u - 0.5) ** 2))
    gray += rng.normal(0, 3, size=(height, width)).astype(np.float32)
    rgb = np.stack([gray, 0.92 * gray + 12 * u + 8, 0.85 * gray + 20 * v + 18], axis=-1)
    array = np.clip(rgb, 0, 255).astype(np.uint8)
    array.flags.writeable = False
    return array


def variant_image(width: int, height: int, seed: int, index: int) -> np.ndarray:
    """The base image with its last rows overwritten by noise seeded from `index`."""
    array = base_image(width, height, seed).copy()
    rows = min(VARIANT_ROWS, height)
    rng = np.random.default_rng([seed, index])
    array[-rows:] = rng.integers(0, 256, size=(rows, width, 3), dtype=np.uint8)
    return array


def encode_variant(width: int, height: int, fmt: str, seed: int, index: int) -> bytes:
    """Encoded bytes of variant `index` of the (width, height, seed) base image."""
    if fmt == "jpeg":
        buffer = io.BytesIO()
        image = Image.fromarray(variant_image(width, height, seed, index), "RGB")
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue()
    if fmt == "png":
        return _png_variant(width, height, seed, index)
    if fmt == "png16":
        buffer = io.BytesIO()
        Image.fromarray(_gray16_variant(width, height, seed, index)).save(
            buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL
        )
        return buffer.getvalue()
    if fmt == "dicom":
        return _ct_variant(width, height, seed, index)
    raise ValueError(f"unknown image format {fmt!r}; expected one of {FORMATS}")


def _paeth_filter(rows: np.ndarray, previous: np.ndarray | None) -> bytes:
    """PNG filter type 4 (Paeth) on RGB rows, each prefixed with its filter byte."""
    raw = rows.reshape(rows.shape[0], -1).astype(np.int16)
    up = np.zeros_like(raw)
    up[1:] = raw[:-1]
    if previous is not None:
        up[0] = previous.reshape(-1)
    left = np.zeros_like(raw)
    left[:, 3:] = raw[:, :-3]
    up_left = np.zeros_like(raw)
    up_left[:, 3:] = up[:, :-3]
    estimate = left + up - up_left
    dist_left, dist_up = np.abs(estimate - left), np.abs(estimate - up)
    dist_up_left = np.abs(estimate - up_left)
    predictor = np.where(
        (dist_left <= dist_up) & (dist_left <= dist_up_left),
        left,
        np.where(dist_up <= dist_up_left, up, up_left),
    )
    filtered = ((raw - predictor) % 256).astype(np.uint8)
    framed = np.empty((raw.shape[0], raw.shape[1] + 1), dtype=np.uint8)
    framed[:, 0] = 4
    framed[:, 1:] = filtered
    return framed.tobytes()


@functools.lru_cache(maxsize=2)
def _png_prefix(width: int, height: int, seed: int) -> tuple[bytes, zlib._Compress]:
    """The zlib output for the shared rows, and the compressor positioned after them."""
    base = base_image(width, height, seed)
    shared = height - min(VARIANT_ROWS, height)
    compressor = zlib.compressobj(PNG_COMPRESS_LEVEL)
    prefix = compressor.compress(_paeth_filter(base[:shared], None)) if shared else b""
    return prefix, compressor


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_variant(width: int, height: int, seed: int, index: int) -> bytes:
    prefix, compressor = _png_prefix(width, height, seed)
    array = variant_image(width, height, seed, index)
    shared = height - min(VARIANT_ROWS, height)
    previous = array[shared - 1] if shared else None
    stream = compressor.copy()
    body = prefix + stream.compress(_paeth_filter(array[shared:], previous)) + stream.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


def _gray16_variant(width: int, height: int, seed: int, index: int) -> np.ndarray:
    """12 bits of signal in a uint16 grayscale image (the variant's green channel, x16)."""
    gray = variant_image(width, height, seed, index)[..., 1].astype(np.uint16) * 16
    rng = np.random.default_rng([seed, index, 16])
    return gray + rng.integers(0, 16, size=gray.shape, dtype=np.uint16)


CT_INTERCEPT = -1024  # stored value 0 is -1024 HU, as most CT scanners write it


def ct_hounsfield(width: int, height: int, seed: int, index: int) -> np.ndarray:
    """Hounsfield units from -1000 (air) to about +1000 (bone), shaped like the variant."""
    return variant_image(width, height, seed, index)[..., 1].astype(np.int16) * 8 - 1000


def _ct_variant(width: int, height: int, seed: int, index: int) -> bytes:
    """A CT slice as a DICOM Part 10 file: MONOCHROME2, 16-bit stored, slope 1, intercept
    -1024, no window in the header (so the server's default CT window applies)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(seed), str(index)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = height, width
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, CT_INTERCEPT
    stored = (ct_hounsfield(width, height, seed, index) - CT_INTERCEPT).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
