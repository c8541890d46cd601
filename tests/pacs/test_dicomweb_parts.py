"""The pure parts of the DICOMweb source, without a server: URL matching, series ordering and
choosing, multipart answers, the cache's bounds, credentials files and settings checks."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.core.settings import Settings
from lingshu_server.inputs.dicom_series import (
    SeriesSlice,
    anatomical_order,
    evenly_spaced,
    parse_series_metadata,
)
from lingshu_server.inputs.dicomweb import DicomWebSource
from lingshu_server.inputs.fetch_cache import FetchCache
from lingshu_server.inputs.pacs_auth import PacsAuth, PacsCredentialsError
from lingshu_server.inputs.pacs_client import dicom_from_response
from tests.utils.ct_series import synthetic_ct_series

PARAM = "messages[0].content[0].image_url"
PATH = "/studies/1.2.3/series/4.5/instances/6.7.8"


@pytest.fixture
def source():
    settings = Settings(
        dicomweb_urls=["https://pacs.example/dicom-web/", "http://10.0.0.9:8042"],
        dicomweb_auth=["none"],
    )
    with ThreadPoolExecutor(1) as pool:
        yield DicomWebSource.from_settings(settings, pool, CollectorRegistry())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://pacs.example/dicom-web" + PATH, ("1.2.3", "4.5", "6.7.8")),
        ("https://PACS.example:443/dicom-web" + PATH, ("1.2.3", "4.5", "6.7.8")),
        ("https://pacs.example/dicom-web/studies/1.2.3/series/4.5", ("1.2.3", "4.5", None)),
        ("http://10.0.0.9:8042" + PATH, ("1.2.3", "4.5", "6.7.8")),
        ("http://pacs.example/dicom-web" + PATH, None),  # another scheme
        ("https://pacs.example:8443/dicom-web" + PATH, None),  # another port
        ("https://pacs.example/dicom-web2" + PATH, None),  # not under the base path
        ("https://other.example/dicom-web" + PATH, None),
        ("data:image/png;base64,AAAA", None),
    ],
)
def test_urls_under_a_configured_base(source, url, expected):
    ref = source.match(url, PARAM)
    assert (ref and (ref.study, ref.series, ref.instance)) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/studies/1.2.3",
        "/studies/1.2.3/series/4.5/instances/6.7.8/rendered",
        "/studies/1.2.3/series/4.5/instances/6.7.8?accept=image/jpeg",
        "/studies/1.2.3/series/../../admin",
        "/studies/1.2.3/series/4.5/instances/6.7.8%2F..",
    ],
)
def test_other_paths_under_a_base_are_400(source, path):
    with pytest.raises(InvalidRequestError) as caught:
        source.match("https://pacs.example/dicom-web" + path, PARAM)
    assert caught.value.code == "invalid_image_url"
    assert caught.value.param == PARAM


def test_audit_record_names_host_and_uids(source):
    assert source.audit_record("https://pacs.example/dicom-web" + PATH) == {
        "pacs": "pacs.example:443",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "4.5",
        "sop_instance_uid": "6.7.8",
    }
    assert source.audit_record("https://elsewhere.example/x.png") is None


def test_metadata_as_pydicom_writes_it_orders_by_position():
    series = synthetic_ct_series(6, size=8, name="unit")
    metadata = []
    for item in series.slices:
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(item.data))
        del ds.PixelData  # WADO-RS metadata carries no pixels
        metadata.append(ds.to_json_dict())
    parsed = parse_series_metadata(json.dumps(metadata[::-1]).encode())
    assert all(s.has_pixels for s in parsed)
    ordered = anatomical_order(parsed)
    assert [s.sop_uid for s in ordered] == [s.sop_uid for s in series.slices]
    assert [s.instance_number for s in ordered] == [6, 5, 4, 3, 2, 1]


def _slice(uid: str, number: int | None = None, position=None, orientation=None) -> SeriesSlice:
    return SeriesSlice(
        sop_uid=uid,
        instance_number=number,
        position=position,
        orientation=orientation,
        has_pixels=True,
    )


def test_order_along_an_oblique_slice_normal():
    # rows along x, columns tilted 45 degrees in y-z: the normal points along (0, -0.7, 0.7)
    tilt = (1.0, 0.0, 0.0, 0.0, 0.7071, 0.7071)
    slices = [_slice(str(i), 10 - i, (0.0, -d, d), tilt) for i, d in enumerate((3, 1, 2, 0))]
    assert [s.sop_uid for s in anatomical_order(slices)] == ["3", "1", "2", "0"]


def test_order_falls_back_to_instance_number_then_uid():
    slices = [_slice("9", 2), _slice("8", None), _slice("7", 1), _slice("6", 2, (0, 0, 1))]
    assert [s.sop_uid for s in anatomical_order(slices)] == ["7", "6", "9", "8"]


@pytest.mark.parametrize(
    ("total", "count", "chosen"),
    [(24, 1, [12]), (24, 4, [3, 9, 15, 21]), (5, 2, [1, 3]), (3, 4, [0, 1, 2]), (1, 1, [0])],
)
def test_evenly_spaced_slices(total, count, chosen):
    items = [_slice(str(i)) for i in range(total)]
    assert [int(s.sop_uid) for s in evenly_spaced(items, count)] == chosen


DICOM = b"\0" * 128 + b"DICM\r\n--not-the-boundary\r\n"


@pytest.mark.parametrize("preamble", [b"", b"\r\n", b"a preamble\r\n"])
def test_first_part_of_a_multipart_answer(preamble):
    body = (
        preamble + b"--b:1\r\nContent-Type: application/dicom\r\n\r\n" + DICOM + b"\r\n"
        b"--b:1\r\nContent-Type: application/dicom\r\n\r\nsecond\r\n--b:1--\r\n"
    )
    content_type = 'multipart/related; type="application/dicom"; boundary="b:1"'
    assert dicom_from_response(body, content_type) == DICOM


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"--b\r\nContent-Type: application/dicom\r\n\r\nDICM", "multipart/related; boundary=b"),
        (b"no parts at all", "multipart/related; boundary=b"),
        (b"\xff\xd8\xff", "image/jpeg"),
    ],
)
def test_truncated_or_rendered_answers_are_refused(body, content_type):
    with pytest.raises(ValueError):
        dicom_from_response(body, content_type)


def test_a_bare_application_dicom_answer_is_taken_whole():
    assert dicom_from_response(DICOM, "application/dicom") == DICOM


def test_cache_bounds_entries_bytes_and_time():
    now = [0.0]
    cache = FetchCache(max_bytes=100, max_entries=3, ttl_s=10, clock=lambda: now[0])
    for key in "abc":
        cache.put(key, key.encode(), 30)
    assert cache.get("a") == b"a"  # now the most recently used
    cache.put("d", b"d", 30)  # over 3 entries and 100 bytes: "b", the least recent, goes
    assert (cache.get("b"), len(cache), cache.bytes) == (None, 3, 90)
    cache.put("huge", b"x", 101)  # alone over the byte limit: not kept
    assert cache.get("huge") is None
    now[0] = 10.5
    assert cache.get("a") is None and cache.bytes == 60


def test_caller_identity_separates_forwarded_credentials_only_when_forwarding(tmp_path):
    secret = tmp_path / "basic"
    secret.write_text("lingshu:first\n")
    auth = PacsAuth.parse(f"basic:{secret}")
    assert auth.header() == "Basic " + base64.b64encode(b"lingshu:first").decode()
    secret.write_text("lingshu:rotated-password\n")
    assert auth.header() == "Basic " + base64.b64encode(b"lingshu:rotated-password").decode()
    secret.unlink()  # a Secret briefly gone while it is swapped: the last value stays
    assert auth.header() == "Basic " + base64.b64encode(b"lingshu:rotated-password").decode()
    assert PacsAuth.parse("none").header() is None
    with pytest.raises(PacsCredentialsError, match="missing"):  # at start-up, not later
        PacsAuth.parse(f"bearer:{tmp_path / 'missing'}")


@pytest.mark.parametrize(
    ("urls", "auth"),
    [
        (["https://pacs/dicom-web"], ["basic"]),  # no file
        (["https://pacs/dicom-web"], ["kerberos"]),
        (["https://a/dicom-web", "https://b/dicom-web"], ["none", "none", "none"]),
        (["ftp://pacs/dicom-web"], ["none"]),
        (["https://user:pw@pacs/dicom-web"], ["none"]),
        (["https://pacs/dicom-web?token=1"], ["none"]),
    ],
)
def test_bad_dicomweb_settings_are_refused_at_start(urls, auth):
    with pytest.raises(ValidationError):
        Settings(dicomweb_urls=urls, dicomweb_auth=auth)
