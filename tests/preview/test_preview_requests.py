"""`POST /v1/images/preview` as a client meets it: every image source chat takes, the token
count chat uses, chat's errors, caps, auth, limits, metrics and audit, and no patient data
in the answer or the logs. Through the session's real server and the secured one."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.conftest import FILE_KEYS, MAX_BODY
from tests.utils.chat import chat, user
from tests.utils.errors import assert_openai_error
from tests.utils.images import data_url, encode, gradient_image, image_part, png_bomb
from tests.utils.logs import without_request_ids
from tests.utils.metrics import scrape, value
from tests.utils.preview import PREVIEW, png_pixels, preview, without_pixels

# Header values that identify a patient, a study or a place (PS3.15 Annex E's kind); none may
# reach an answer or a log.
IDENTIFYING_VRS = {"PN", "LO", "SH", "DA", "TM", "DT", "UI", "AE", "ST", "LT", "AS"}
KEY = FILE_KEYS[37]  # this module's own key on the secured server (rate limits are per key)
JSON = {"Content-Type": "application/json"}


def sample(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def dicom_with_identity() -> bytes:
    """CT_small with a patient, a referring physician and an institution that are easy to find."""
    ds = pydicom.dcmread(io.BytesIO(sample("CT_small.dcm")))
    ds.PatientName = "Roe^Jane^Preview"
    ds.PatientID = "MRN-PREVIEW-5521"
    ds.PatientBirthDate = "19500101"
    ds.ReferringPhysicianName = "Doe^John^Referrer"
    ds.InstitutionName = "Saint Preview Hospital"
    ds.AccessionNumber = "ACC-PREVIEW-77"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def identifying_values(data: bytes) -> set[str]:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    found = set()
    for element in ds.iterall():
        if element.VR in IDENTIFYING_VRS and element.value not in (None, ""):
            values = element.value if isinstance(element.value, list) else [element.value]
            found |= {str(v) for v in values if len(str(v)) >= 4}
    return found


def test_every_image_source_gives_the_same_pixels(client, image_sources):
    png = (image_sources.web_root / "xray.png").read_bytes()
    answers = [
        preview(client, image_part(data_url(png))),
        preview(client, image_part(f"{image_sources.http_origin}/xray.png")),
        preview(client, image_part(f"file://{image_sources.local_dir}/xray.png")),
        preview(client, {"type": "image_url", "image_url": data_url(png)}),  # the bare form
    ]
    first = png_pixels(answers[0]["images"][0]["image"])
    for answer in answers[1:]:
        assert np.array_equal(png_pixels(answer["images"][0]["image"]), first)
        assert without_pixels(answer) == without_pixels(answers[0])


def image_pad_id() -> int:
    """The id of <|image_pad|>, which the prompt repeats once per visual token."""
    from tokenizers import Tokenizer

    from lingshu_server.demo_model import ensure_demo_model

    tokenizer = Tokenizer.from_file(str(ensure_demo_model() / "tokenizer.json"))
    return tokenizer.token_to_id("<|image_pad|>")


@pytest.mark.parametrize(
    "part",
    [
        image_part(data_url(encode(gradient_image(900, 640, seed=4), "JPEG"), "image/jpeg")),
        image_part(data_url(sample("RG1_UNCR.dcm"), "application/dicom"), detail="low"),
    ],
    ids=["jpeg", "dicom-low-detail"],
)
def test_token_count_is_what_chat_puts_in_the_prompt(client, part):
    tokens = preview(client, part)["tokens"]
    answer = chat(client, [user(part, "Findings?")], max_tokens=1, return_token_ids=True)
    assert answer["prompt_token_ids"].count(image_pad_id()) == tokens


def test_no_identifying_header_value_in_the_answer_or_the_log(client, server):
    data = dicom_with_identity()
    secrets = identifying_values(data) | identifying_values(sample("RG1_UNCR.dcm"))
    assert {"Roe^Jane^Preview", "MRN-PREVIEW-5521", "Saint Preview Hospital"} <= secrets
    answers = [
        preview(client, image_part(data_url(data, "application/dicom"))),
        preview(client, image_part(data_url(sample("RG1_UNCR.dcm"), "application/dicom"))),
    ]
    bad = client.post(PREVIEW, json=image_part(data_url(data[:-3000], "application/dicom")))
    texts = [json.dumps(without_pixels(a)) for a in answers] + [bad.text]
    time.sleep(0.3)
    log = without_request_ids(server.log_text())
    for secret in secrets:
        for text in texts:
            assert secret not in text
        assert secret not in log


# ------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("part", "param", "code"),
    [
        (image_part("data:image/png;base64,AAAA"), "image_url", "invalid_image"),
        (image_part("data:image/png;base64,@@@"), "image_url", "invalid_base64"),
        (image_part("data:image/png,plain"), "image_url", "invalid_image_url"),
        (image_part(data_url(png_bomb(40000, 40000))), "image_url", "image_too_large"),
        (
            image_part(data_url(sample("CT_small.dcm")[:20000], "application/dicom")),
            "image_url",
            "invalid_dicom",
        ),
        (
            image_part(data_url(sample("CT_small.dcm"), "application/dicom"), dicom={"frame": 1}),
            "image_url",
            "invalid_dicom_options",
        ),
        (image_part("https://not-allowed.example/x.png"), "image_url", "image_url_not_allowed"),
        (image_part("file:///etc/passwd"), "image_url", "image_url_not_allowed"),
        (
            image_part(data_url(encode(gradient_image(2000, 8), "PNG"))),
            "image_url",
            "invalid_image",
        ),
    ],
    ids=[
        "corrupt",
        "base64",
        "not-base64",
        "bomb",
        "truncated-dicom",
        "frame",
        "host",
        "file",
        "ratio",
    ],
)
def test_bad_images_get_chats_400(client, part, param, code):
    assert_openai_error(client.post(PREVIEW, json=part), 400, param=param, code=code)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "image_url"}, "image_url"),
        (
            {"type": "image_url", "image_url": {"url": "data:,", "detail": "max"}},
            "image_url.detail",
        ),
        (
            image_part("data:image/png;base64,AAAA", dicom={"window": "liver"}),
            "image_url.dicom.window",
        ),
        (image_part("data:image/png;base64,AAAA", dicom={"center": 40}), "image_url.dicom"),
        (image_part("data:image/png;base64,AAAA", max_pixels="9"), "image_url.max_pixels"),
        ({"type": "video_url", "video_url": {"url": "data:,", "fps": 0}}, "video_url.fps"),
    ],
    ids=["missing", "detail", "window", "half-window", "string-number", "fps"],
)
def test_malformed_parts_name_the_param(client, body, param):
    assert_openai_error(client.post(PREVIEW, json=body), 400, param=param)


@pytest.mark.parametrize("body", [{"type": "text", "text": "hello"}, {"image_url": {"url": "x"}}])
def test_other_parts_are_refused_naming_the_two_kinds(client, body):
    error = assert_openai_error(client.post(PREVIEW, json=body), 400)
    assert "'type'" in error["message"]
    if "type" in body:
        assert "image_url" in error["message"] and "video_url" in error["message"]


def test_bodies_that_are_not_json(client):
    assert_openai_error(client.post(PREVIEW, content=b"{not json", headers=JSON), 400)
    assert_openai_error(client.post(PREVIEW, json=[1, 2]), 400)
    response = client.post(PREVIEW, content=b"{}", headers={"Content-Type": "text/plain"})
    assert_openai_error(response, 415, code="unsupported_media_type")
    assert_openai_error(client.get(PREVIEW), 405)


# --------------------------------------------------------------- the secured server


def test_needs_a_key_and_keeps_the_body_limit(secured):
    url = f"{secured.base_url}{PREVIEW}"
    part = image_part(data_url(encode(gradient_image(64, 64), "PNG")))
    assert_openai_error(httpx.post(url, json=part), 401, code="invalid_api_key")
    wrong = httpx.post(url, json=part, headers={"Authorization": "Bearer sk-wrong"})
    assert_openai_error(wrong, 401, code="invalid_api_key")
    big = image_part(data_url(b"\0" * MAX_BODY))
    response = httpx.post(url, json=big, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert_openai_error(response, 413)


def test_audited_and_counted_like_chat(secured):
    data = dicom_with_identity()
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-Id": "preview-audit-1"}
    with httpx.Client(base_url=secured.base_url, timeout=120) as client:
        before = scrape(client)
        preview(client, image_part(data_url(data, "application/dicom")), **headers)
        after = scrape(client)
    route = {"route": PREVIEW}
    ok = value(after, "lingshu_requests_total", status="200", **route)
    assert ok - value(before, "lingshu_requests_total", status="200", **route) == 1
    dicom_seconds = "lingshu_image_preprocess_seconds_count"
    assert (
        value(after, dicom_seconds, format="DICOM") - value(before, dicom_seconds, format="DICOM")
        == 1
    )

    deadline = time.monotonic() + 10
    record = None
    while record is None and time.monotonic() < deadline:
        # written once the answer is sent: the file may not be there yet
        path = secured.audit_path
        lines = path.read_text().splitlines() if path.exists() else []
        record = next(
            (r for r in map(json.loads, lines) if r["request_id"] == "preview-audit-1"), None
        )
        time.sleep(0.1)
    assert record is not None, "the preview left no audit record"
    assert record["route"] == PREVIEW and record["status"] == 200
    assert record["key_id"].startswith("key-")
    (image,) = record["images"]
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["format"], image["width"], image["height"]) == ("DICOM", 128, 128)
    audit_text = secured.audit_path.read_text()
    for secret in identifying_values(data):
        assert secret not in audit_text
    assert base64.b64encode(data).decode()[300:340] not in audit_text


def test_described_in_the_openapi_document(client):
    document = client.get("/openapi.json").json()
    operation = document["paths"][PREVIEW]["post"]
    assert set(operation["responses"]) >= {"200", "400", "401", "413", "415", "429"}
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PreviewResponse")
    schemas = document["components"]["schemas"]
    assert {"ImagePreview", "VideoPreview", "DicomFacts"} <= set(schemas)
