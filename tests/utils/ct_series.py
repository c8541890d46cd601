"""A synthetic CT series built with pydicom: known Hounsfield values per slice, known positions.

Slice k in anatomical order (along the slice normal) shows a disk of `hu_of(k)` HU in air
(-1000 HU). InstanceNumbers run against the anatomy (as for a feet-first scan), so ordering
by position and ordering by InstanceNumber choose different slices; `shuffled()` gives the
files in a scrambled order for uploading.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

AIR_HU = -1000
INTERCEPT = -1024
SLICE_SPACING_MM = 2.5


def hu_of(index: int) -> int:
    return -400 + 50 * index


@dataclass(frozen=True)
class CtSlice:
    data: bytes  # the DICOM file
    sop_uid: str
    hu: int  # the disk's Hounsfield value
    instance_number: int
    size: int  # rows = columns


@dataclass(frozen=True)
class CtSeries:
    study_uid: str
    series_uid: str
    slices: list[CtSlice]  # anatomical order

    def shuffled(self, seed: int = 7) -> list[bytes]:
        files = [s.data for s in self.slices]
        random.Random(seed).shuffle(files)
        return files


def slice_pixels(hu: int, size: int) -> np.ndarray:
    """Hounsfield units of one slice: a centred disk of `hu` in air."""
    y, x = np.mgrid[0:size, 0:size]
    centre = (size - 1) / 2
    disk = (x - centre) ** 2 + (y - centre) ** 2 <= (size / 3) ** 2
    return np.where(disk, hu, AIR_HU).astype(np.int32)


def synthetic_ct_series(
    count: int = 24, size: int = 64, with_position: bool = True, name: str = "ct"
) -> CtSeries:
    """`count` CT slices of `size`x`size`; without positions, only InstanceNumber orders them."""
    study_uid = generate_uid(entropy_srcs=[name, "study"])
    series_uid = generate_uid(entropy_srcs=[name, "series"])
    slices = []
    for k in range(count):
        sop_uid = generate_uid(entropy_srcs=[name, "slice", str(k)])
        hu = hu_of(k)
        # with positions, InstanceNumber runs against the anatomy; without, it is the order
        number = count - k if with_position else k + 1
        ds = _ct_dataset(study_uid, series_uid, sop_uid, number, slice_pixels(hu, size))
        if with_position:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-80.0, -80.0, -100.0 + SLICE_SPACING_MM * k]
            ds.SliceLocation = -100.0 + SLICE_SPACING_MM * k
        slices.append(CtSlice(_file_bytes(ds), sop_uid, hu, number, size))
    return CtSeries(study_uid, series_uid, slices)


def _ct_dataset(
    study_uid: str, series_uid: str, sop_uid: str, number: int, hu: np.ndarray
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYNTH-0001"
    ds.Modality = "CT"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.SeriesNumber = 2
    ds.InstanceNumber = number
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = SLICE_SPACING_MM
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1
    ds.PixelData = (hu - INTERCEPT).astype("<u2").tobytes()
    return ds


def _file_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def as_cine(slices: list[CtSlice], frame_time_ms: float) -> bytes:
    """The slices, in the order given, as one multi-frame CT whose frames are `frame_time_ms`
    apart: what a series sent as a video should look like to the model."""
    first = slices[0]
    pixels = np.stack([slice_pixels(s.hu, s.size) for s in slices])
    ds = _ct_dataset("1.2.3.4", "1.2.3.4.5", "1.2.3.4.5.6", 1, pixels[0])
    ds.NumberOfFrames = len(slices)
    ds.FrameTime = frame_time_ms
    ds.Rows = ds.Columns = first.size
    ds.PixelData = (pixels - INTERCEPT).astype("<u2").tobytes()
    return _file_bytes(ds)
