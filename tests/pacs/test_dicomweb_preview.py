"""Previews of DICOMweb image URLs: an instance from the PACS looks exactly as the same file
sent as base64, a series part shows every slice chat would send (in anatomical order), the PACS
refusals are chat's, and the audit log records which instances were looked at."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from tests.pacs.conftest import API_KEYS
from tests.utils.errors import assert_openai_error
from tests.utils.images import data_url
from tests.utils.pacs_chat import audit_record, image
from tests.utils.preview import PREVIEW, png_pixels, preview

KEY = API_KEYS[1]


@pytest.fixture
def client(pacs_server):
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=pacs_server.base_url, headers=headers, timeout=120) as http:
        yield http


def test_instance_looks_like_the_same_file_sent_as_base64(client, pacs):
    ct = pacs.files["CT_small.dcm"]
    window = {"window": "lung"}
    from_pacs = preview(client, image(pacs.basic_url + pacs.instance_path(ct), dicom=window))
    inline = preview(client, image(data_url(ct.data, "application/dicom"), dicom=window))
    (ours,), (theirs,) = from_pacs["images"], inline["images"]
    assert np.array_equal(png_pixels(ours["image"]), png_pixels(theirs["image"]))
    assert ours["dicom"] == theirs["dicom"] and ours["tokens"] == theirs["tokens"]


def test_series_shows_each_slice_chat_sends(client, pacs, audit_log):
    series = pacs.basic_url + pacs.series_path(pacs.ct)
    request_id = uuid.uuid4().hex
    part = image(series, dicom={"slices": 4, "window": "bone"})
    answer = preview(client, part, **{"X-Request-Id": request_id})
    expected = [pacs.ct.slices[k] for k in (3, 9, 15, 21)]  # as chat chooses them
    assert len(answer["images"]) == 4
    assert answer["tokens"] == sum(image["tokens"] for image in answer["images"])
    for shown, slice_ in zip(answer["images"], expected, strict=True):
        inline = preview(
            client, image(data_url(slice_.data, "application/dicom"), dicom={"window": "bone"})
        )
        assert np.array_equal(png_pixels(shown["image"]), png_pixels(inline["images"][0]["image"]))
    record = audit_record(audit_log, request_id)
    assert record["route"] == PREVIEW
    assert [i["dicomweb"]["sop_instance_uid"] for i in record["images"]] == [
        s.sop_uid for s in expected
    ]


def test_pacs_refusals_are_chats(client, pacs):
    ct = pacs.files["CT_small.dcm"]
    missing = pacs.instance_path(ct).replace(ct.sop, "1.2.3.999")
    response = client.post(PREVIEW, json=image(pacs.basic_url + missing))
    assert_openai_error(response, 400, param="image_url", code="dicomweb_not_found")
    sr = pacs.files["test-SR.dcm"]
    response = client.post(PREVIEW, json=image(pacs.basic_url + pacs.instance_path(sr)))
    assert_openai_error(response, 400, param="image_url", code="dicom_no_image")
