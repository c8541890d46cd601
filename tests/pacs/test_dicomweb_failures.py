"""What a caller is told when the PACS cannot give an image: unknown UIDs, no pixels, a slow,
unreachable or stopped PACS. Errors arrive in OpenAI's shape through the SDK."""

from __future__ import annotations

import time

import openai
import pytest

from tests.pacs.conftest import SLOW_S, TIMEOUT_S
from tests.utils.orthanc import start_orthanc
from tests.utils.pacs_chat import ask, image

UNKNOWN = "1.2.826.0.1.3680043.8.498.999"


@pytest.mark.parametrize(
    ("path", "part"),
    [
        ("/studies/{unknown}/series/{series}/instances/{sop}", "study"),
        ("/studies/{study}/series/{unknown}/instances/{sop}", "series"),
        ("/studies/{study}/series/{series}/instances/{unknown}", "instance"),
        ("/studies/{study}/series/{unknown}", "series"),
        ("/studies/{unknown}/series/{series}", "study"),
    ],
)
def test_unknown_uid_is_400_naming_the_part(sdk, pacs, path, part):
    ct = pacs.files["CT_small.dcm"]
    url = pacs.basic_url + path.format(
        study=ct.study, series=ct.series, sop=ct.sop, unknown=UNKNOWN
    )
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, {"type": "text", "text": "Compare:"}, image(url))
    error = caught.value
    assert error.code == "dicomweb_not_found"
    assert error.param == "messages[0].content[1].image_url"
    assert f"has no such {part}:" in error.message
    assert UNKNOWN not in error.message


def test_instance_without_pixels_is_400_with_the_reason(sdk, pacs):
    report = pacs.files["test-SR.dcm"]
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, image(pacs.basic_url + pacs.instance_path(report)))
    assert caught.value.code == "dicom_no_image"
    assert "SR" in caught.value.message
    series = f"/studies/{report.study}/series/{report.series}"
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, image(pacs.basic_url + series))
    assert caught.value.code == "dicom_no_image"
    assert "the series holds no images" in caught.value.message


def test_slow_pacs_is_504_with_retry_after(sdk, pacs):
    url = pacs.slow_url + pacs.instance_path(pacs.files["CT_small.dcm"])
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sdk, image(url))
    assert TIMEOUT_S <= time.monotonic() - started < SLOW_S
    error = caught.value
    assert error.status_code == 504
    assert error.code == "dicomweb_timeout"
    assert f"did not answer within {TIMEOUT_S} s" in error.message
    assert int(error.response.headers["retry-after"]) > 0


def test_unreachable_pacs_is_502_with_retry_after(sdk, pacs):
    with pytest.raises(openai.APIStatusError) as caught:
        ask(sdk, image(pacs.dead_url + pacs.instance_path(pacs.files["CT_small.dcm"])))
    assert caught.value.status_code == 502
    assert caught.value.code == "dicomweb_unavailable"
    assert "could not reach the PACS at 127.0.0.1:" in caught.value.message
    assert int(caught.value.response.headers["retry-after"]) > 0


def test_open_pacs_without_credentials_then_stopped_mid_run(sdk, pacs, tmp_path):
    """`none` auth against an Orthanc without access control, which then goes away."""
    ct, mri = pacs.files["CT_small.dcm"], pacs.files["emri_small.dcm"]
    orthanc = start_orthanc(tmp_path / "open-pacs", users=None, port=pacs.open_port)
    try:
        orthanc.upload([ct.data, mri.data])
        assert ask(sdk, image(pacs.open_url + pacs.instance_path(ct))).usage.prompt_tokens > 0
    finally:
        orthanc.stop()
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as caught:
            ask(sdk, image(pacs.open_url + pacs.instance_path(mri)), stream=stream)
        assert caught.value.status_code == 502
        assert caught.value.code == "dicomweb_unavailable"
        assert int(caught.value.response.headers["retry-after"]) > 0
    # the question asked before the outage can still be followed up: its instance is cached
    assert ask(sdk, image(pacs.open_url + pacs.instance_path(ct))).usage.prompt_tokens > 0
