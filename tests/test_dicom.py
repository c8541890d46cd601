"""DICOM -> 8-bit image, judged by what a reader of the picture would see, on real sample files."""

from __future__ import annotations

import io
import logging
from functools import cache

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.inputs.dicom import CT_WINDOWS, DicomOptions, dicom_to_image, is_dicom

PARAM = "messages[0].content[1].image_url"
DEFAULT = DicomOptions()
# Hounsfield units of the synthetic CT's five columns: air, lung, soft tissue, bone, dense bone
HU = (-1000, -600, 40, 400, 1000)


@cache
def sample(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, f"{name} is missing from pydicom / pydicom-data"
    with open(path, "rb") as file:
        return file.read()


def render(data: bytes, options: DicomOptions = DEFAULT, default_ct_window: str = "mediastinum"):
    return dicom_to_image(data, options, default_ct_window, PARAM)


def pixels(data: bytes, options: DicomOptions = DEFAULT, **kwargs) -> np.ndarray:
    return np.asarray(render(data, options, **kwargs)).astype(int)


def refusal(data: bytes, options: DicomOptions = DEFAULT) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        render(data, options)
    assert info.value.param == PARAM
    return info.value


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def edited(name: str, **attributes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(sample(name)))
    for keyword, value in attributes.items():
        if keyword == "TransferSyntaxUID":
            ds.file_meta.TransferSyntaxUID = value
        elif value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return to_bytes(ds)


def with_syntax(name: str, uid: str) -> bytes:
    """A compressed file relabelled with another transfer syntax. pydicom 3.0 refuses to write
    syntaxes it doesn't know (JPEG XL), so write HEVC and swap the equally long UID after."""
    hevc = "1.2.840.10008.1.2.4.107"
    data = edited(name, TransferSyntaxUID=hevc)
    assert len(uid) == len(hevc) and data.count(hevc.encode()) == 1
    return data.replace(hevc.encode(), uid.encode())


def synthetic_ct(**attributes) -> bytes:
    """4x5 CT, one HU value per column, stored as (HU + 1024) / 2 (slope 2, intercept -1024)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-ID-42"
    ds.Rows, ds.Columns = 4, len(HU)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    stored = (np.array(HU) + 1024) // 2
    ds.PixelData = np.tile(stored, (4, 1)).astype("<u2").tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return to_bytes(ds)


def linear_window(hu: float, center: float, width: float) -> int:
    """PS3.3 C.11.2.1.2.1 (LINEAR) onto 0..255, written out independently of the module."""
    if hu <= center - 0.5 - (width - 1) / 2:
        return 0
    if hu > center - 0.5 + (width - 1) / 2:
        return 255
    return round(((hu - (center - 0.5)) / (width - 1) + 0.5) * 255)


def columns(image: np.ndarray) -> list[int]:
    return image[0].tolist()


# --- CT windows -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(CT_WINDOWS))
def test_ct_presets_window_hounsfield_units(preset):
    center, width = CT_WINDOWS[preset]
    image = pixels(synthetic_ct(), DicomOptions(window=preset))
    assert image.shape == (4, len(HU))
    assert columns(image) == pytest.approx([linear_window(h, center, width) for h in HU], abs=1)


def test_ct_window_gray_levels_a_reader_expects():
    lung = columns(pixels(synthetic_ct(), DicomOptions(window="lung")))
    assert lung[HU.index(-600)] == pytest.approx(128, abs=1)
    assert lung[HU.index(-1000)] == pytest.approx(59, abs=1)
    assert lung[HU.index(1000)] == 255
    brain = columns(pixels(synthetic_ct(), DicomOptions(window="brain")))
    assert brain[HU.index(40)] == pytest.approx(128, abs=1)
    assert brain[HU.index(400)] == 255
    assert brain[HU.index(-600)] == 0


def test_explicit_center_width_equals_the_preset_and_wins_over_it():
    data = synthetic_ct()
    explicit = pixels(data, DicomOptions(center=-600, width=1500))
    assert np.array_equal(explicit, pixels(data, DicomOptions(window="lung")))
    both = pixels(data, DicomOptions(window="brain", center=-600, width=1500))
    assert np.array_equal(both, explicit)


def test_file_window_is_used_when_the_request_names_none():
    data = synthetic_ct(WindowCenter=[400, 40], WindowWidth=[1800, 80])  # first is the default
    bone = pixels(data, DicomOptions(window="bone"))
    assert np.array_equal(pixels(data, default_ct_window="lung"), bone)
    assert not np.array_equal(pixels(data, DicomOptions(window="lung")), bone)  # request wins


def test_ct_default_preset_when_the_file_has_no_window():
    data = synthetic_ct()
    for preset in ("lung", "brain"):
        expected = pixels(data, DicomOptions(window=preset))
        assert np.array_equal(pixels(data, default_ct_window=preset), expected)


def test_enhanced_ct_takes_rescale_and_window_from_functional_groups():
    data = sample("eCT_Supplemental.dcm")  # shared groups: intercept -1024, window 49/102
    image = pixels(data)
    assert np.array_equal(image, pixels(data, DicomOptions(center=49, width=102)))
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = pydicom.pixels.pixel_array(ds, index=1).astype(float) - 1024
    expected = np.vectorize(lambda v: linear_window(v, 49, 102))(hu)
    assert np.abs(image - expected).max() <= 1


# --- grayscale contrast -----------------------------------------------------------------------


def test_monochrome1_chest_is_inverted():
    chest = render(sample("RG1_UNCR.dcm"))  # CR chest, MONOCHROME1, 15-bit
    assert chest.mode == "L"
    assert chest.size == (1841, 1955)
    as_mono2 = edited("RG1_UNCR.dcm", PhotometricInterpretation="MONOCHROME2")
    inverted = np.asarray(chest).astype(int)
    assert np.array_equal(inverted, 255 - pixels(as_mono2))
    assert np.corrcoef(inverted.ravel()[::97], pixels(as_mono2).ravel()[::97])[0, 1] < -0.99


def test_16_bit_mr_keeps_its_contrast():
    for data in (sample("MR_small.dcm"), edited("MR_small.dcm", WindowCenter=None)):
        image = pixels(data)  # own window 600/1600, then full range without it
        assert image.max() - image.min() > 190
        assert image.std() > 30


def test_constant_image_does_not_fail():
    ds = pydicom.dcmread(io.BytesIO(sample("MR_small.dcm")))
    del ds.WindowCenter, ds.WindowWidth
    ds.PixelData = bytes(len(ds.PixelData))
    image = render(to_bytes(ds))
    assert image.mode == "L"
    assert image.getextrema()[0] == image.getextrema()[1]


# --- frames -----------------------------------------------------------------------------------


def test_multi_frame_defaults_to_the_middle_frame():
    data = sample("emri_small.dcm")  # enhanced MR, 10 frames
    assert np.array_equal(pixels(data), pixels(data, DicomOptions(frame=5)))
    assert not np.array_equal(
        pixels(data, DicomOptions(frame=0)), pixels(data, DicomOptions(frame=5))
    )


@pytest.mark.parametrize("frame", [10, -1])
def test_frame_out_of_range_names_the_valid_range(frame):
    error = refusal(sample("emri_small.dcm"), DicomOptions(frame=frame))
    assert error.code == "invalid_dicom_options"
    assert "0 to 9" in error.message


def test_frame_zero_of_a_single_frame_file():
    assert np.array_equal(
        pixels(sample("CT_small.dcm"), DicomOptions(frame=0)), pixels(sample("CT_small.dcm"))
    )
    assert refusal(sample("CT_small.dcm"), DicomOptions(frame=1)).code == "invalid_dicom_options"


# --- colour -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb.dcm",
        "SC_rgb_16bit.dcm",
        "SC_ybr_full_uncompressed.dcm",
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG baseline, YBR_FULL_422
        "SC_rgb_rle.dcm",
    ],
)
def test_colour_bands_come_out_as_rgb(name):
    image = render(sample(name))
    assert image.mode == "RGB"
    rgb = np.asarray(image).astype(int)
    # SC_rgb: horizontal bands, red at the top, then green, blue, and grays ending in white
    for row, colour in [(5, (255, 0, 0)), (25, (0, 255, 0)), (45, (0, 0, 255)), (95, (255,) * 3)]:
        assert rgb[row, 50].tolist() == pytest.approx(colour, abs=8), (name, row)


@pytest.mark.parametrize(
    "name", ["OT-PAL-8-face.dcm", "examples_palette.dcm", "gdcm-US-ALOKA-16.dcm"]
)
def test_palette_colour_is_applied(name):
    image = render(sample(name))
    assert image.mode == "RGB"
    rgb = np.asarray(image).astype(int)
    assert rgb.max() > 200  # 16-bit palettes scaled to 8 bit, not left dark
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() > 20  # colours, not gray


def test_ultrasound_cine_decodes_one_frame():
    image = render(sample("examples_ybr_color.dcm"))  # 30 frames, JPEG baseline YBR_FULL_422
    assert image.mode == "RGB"
    assert image.size == (320, 240)


# --- compressed transfer syntaxes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("plain", "compressed", "mean_tolerance"),
    [
        ("SC_rgb.dcm", "SC_rgb_jpeg_dcmtk.dcm", 2),  # JPEG baseline
        ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm", 0),  # JPEG lossless SV1
        ("SC_rgb.dcm", "SC_rgb_rle.dcm", 0),
        ("SC_rgb.dcm", "SC_rgb_jls_lossy_line.dcm", 2),  # JPEG-LS near-lossless
        ("MR_small.dcm", "MR_small_RLE.dcm", 0),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm", 0),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm", 0),
        ("US1_UNCR.dcm", "US1_J2KR.dcm", 0),  # JPEG 2000 lossless, YBR_RCT
        ("US1_UNCR.dcm", "US1_J2KI.dcm", 3),  # JPEG 2000 lossy, YBR_ICT
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", 0),
    ],
)
def test_compressed_matches_its_uncompressed_sibling(plain, compressed, mean_tolerance):
    expected, actual = pixels(sample(plain)), pixels(sample(compressed))
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).mean() <= mean_tolerance


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("test-SR.dcm", "modality SR"),
        ("rtplan.dcm", "RT Plan"),
        ("waveform_ecg.dcm", "ECG"),
        ("rtstruct.dcm", "RT Structure Set"),  # no preamble: read as a bare data set
    ],
)
def test_objects_without_pixels_are_no_image(name, words):
    error = refusal(sample(name))
    assert error.code == "dicom_no_image"
    assert words in error.message


@pytest.mark.parametrize(
    ("uid", "name"),
    [
        ("1.2.840.10008.1.2.4.107", "HEVC/H.265"),
        ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    ],
)
def test_transfer_syntax_without_decoder_is_named(uid, name):
    error = refusal(with_syntax("SC_rgb_jpeg_dcmtk.dcm", uid))
    assert error.code == "dicom_unsupported_syntax"
    assert name in error.message


@pytest.mark.parametrize(
    "data",
    [
        sample("MR_small.dcm")[: len(sample("MR_small.dcm")) // 2],
        sample("MR_small.dcm")[:1000],  # cut inside the header: no Pixel Data at all
        sample("US1_J2KR.dcm")[:-40000],  # compressed stream cut short
        sample("JPEG-lossy.dcm"),  # a known-corrupt JPEG stream
        bytes(128) + b"DICM" + np.random.default_rng(0).bytes(2000),
        np.random.default_rng(1).bytes(5000),
        b"",
    ],
    ids=["half", "header-only", "j2k-cut", "bad-jpeg", "random-with-preamble", "random", "empty"],
)
@pytest.mark.filterwarnings("ignore:End of file reached")  # pydicom notes the cut J2K stream
def test_broken_files_are_invalid_dicom(data):
    assert refusal(data).code == "invalid_dicom"


@pytest.mark.parametrize(
    "options",
    [
        DicomOptions(window="liver"),
        DicomOptions(center=40),
        DicomOptions(width=400),
        DicomOptions(center=40, width=0),
        DicomOptions(center=40, width=-5),
        DicomOptions(center=float("nan"), width=400),
    ],
)
def test_bad_options(options):
    assert refusal(synthetic_ct(), options).code == "invalid_dicom_options"


def test_too_many_pixels_refused_before_decoding():
    with pytest.raises(InvalidRequestError) as info:
        dicom_to_image(sample("RG1_UNCR.dcm"), DEFAULT, "lung", PARAM, max_pixels=1_000_000)
    assert info.value.code == "image_too_large"
    assert dicom_to_image(sample("MR_small.dcm"), DEFAULT, "lung", PARAM, max_pixels=64 * 64)


def test_messages_warnings_and_logs_carry_no_patient_data(caplog, recwarn):
    caplog.set_level(logging.DEBUG)
    bad = [
        synthetic_ct()[:-20],  # Doe^Jane / SECRET-ID-42
        with_syntax("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.110"),  # ...^MR1 / 4MR1
        sample("rtplan.dcm"),  # Last^First^mid^pre / id00001
        sample("MR_small.dcm")[:1000],
    ]
    messages = [refusal(data).message for data in bad]
    messages.append(refusal(synthetic_ct(), DicomOptions(frame=3)).message)
    render(sample("SC_rgb_jpeg_dcmtk.dcm"))  # Lestrade^G / ID1
    texts = [*messages, caplog.text, *(str(warning.message) for warning in recwarn)]
    secrets = ["Doe", "Jane", "SECRET-ID", "CompressedSamples", "4MR1", "Last^First", "id00001"]
    secrets += ["Lestrade"]
    for text in texts:
        assert not any(secret.lower() in text.lower() for secret in secrets), text


def test_non_dicom_and_dicom_are_told_apart():
    for name in ("CT_small.dcm", "MR_small.dcm", "US1_J2KR.dcm", "rtplan.dcm"):
        assert is_dicom(sample(name))
    png = io.BytesIO()
    Image.new("RGB", (200, 200)).save(png, "PNG")
    assert not is_dicom(png.getvalue())
    assert not is_dicom(b"")
    assert refusal(png.getvalue()).code == "invalid_dicom"
