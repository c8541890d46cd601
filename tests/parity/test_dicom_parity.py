"""DICOM: the server's windowed image equals pydicom's own pipeline (tests/utils/
dicom_reference.py), file by file: every file of pydicom's and pydicom-data's test sets that
has pixels is checked.
"""

from __future__ import annotations

import contextlib
from importlib.resources import files
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.inputs.dicom import DicomOptions, dicom_to_image
from tests.utils.dicom_reference import DEFAULT_CT_WINDOW, reference_pixels


def _pixel_files() -> list[str]:
    """Every test file (pydicom's and pydicom-data's) that holds pixels (PixelData and Rows).

    Listed from the installed packages' folders (pydicom's own lister would try to download the
    files it knows of online), from their headers alone: decoding each one here would cost the
    collection of every test run seconds; whether pydicom decodes it is the test's business."""
    roots = [Path(pydicom.data.__file__).parent / "test_files", files("data_store") / "data"]
    found = {}
    candidates = (str(p) for root in roots for p in Path(str(root)).rglob("*") if p.is_file())
    for path in candidates:
        try:
            ds = pydicom.dcmread(path, force=True, defer_size=1024)
            if "PixelData" in ds and "Rows" in ds:
                found.setdefault(Path(path).name, path)
        except Exception:
            continue
    return sorted(found.values(), key=lambda p: Path(p).name)


PIXEL_FILES = _pixel_files()


@pytest.mark.parametrize("path", PIXEL_FILES, ids=lambda p: Path(p).name)
def test_windowed_image_equals_pydicoms_pipeline(path):
    data = Path(path).read_bytes()
    try:
        expected = reference_pixels(path)
    except Exception:
        # pydicom's own pipeline cannot decode it: the server answers a clear 400 or an image,
        # never anything else (a crash would be a 500)
        with contextlib.suppress(InvalidRequestError):
            dicom_to_image(data, DicomOptions(), DEFAULT_CT_WINDOW, "p")
        return
    try:
        ours = np.asarray(
            dicom_to_image(data, DicomOptions(), DEFAULT_CT_WINDOW, "p"), dtype=np.float64
        )
    except InvalidRequestError as exc:
        pytest.fail(f"pydicom decodes {Path(path).name} but the server refused it: {exc.message}")
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() <= 1  # the same image, up to rounding
