"""DICOMweb image URLs end to end: a real Orthanc, the real server and engine, the OpenAI SDK."""

from __future__ import annotations

import socket
import threading
import uuid

import openai
import pytest

from tests.utils.images import data_url, tokens_for
from tests.utils.pacs_chat import ask, audit_record, fingerprint, image

CT_SLICE_TOKENS = tokens_for(64, 64)


@pytest.fixture
def baseline(sdk) -> int:
    """Prompt tokens of the question alone; each image adds its tokens plus two markers."""
    return ask(sdk).usage.prompt_tokens


def dicom_part(data: bytes, **options) -> dict:
    return image(data_url(data, "application/dicom"), **options)


def chosen_instances(audit_log, sdk, part: dict) -> list[str]:
    """SOP Instance UIDs the server used for `part`, in prompt order, from its audit log."""
    request_id = uuid.uuid4().hex
    ask(sdk, part, request_id=request_id)
    record = audit_record(audit_log, request_id)
    return [entry["dicomweb"]["sop_instance_uid"] for entry in record["images"]]


def test_instance_url_is_one_image(sdk, pacs, baseline):
    ct = pacs.files["CT_small.dcm"]
    completion = ask(sdk, image(pacs.basic_url + pacs.instance_path(ct)))
    assert completion.usage.prompt_tokens == baseline + tokens_for(128, 128) + 2


@pytest.mark.e2e  # fingerprints: what the real engine makes of the pixels
def test_instance_is_windowed_like_the_same_file_sent_as_base64(sdk, pacs):
    ct = pacs.files["CT_small.dcm"]
    url = pacs.basic_url + pacs.instance_path(ct)
    for window in ({"window": "lung"}, {"center": 40, "width": 80}):
        from_pacs = fingerprint(sdk, image(url, dicom=window))
        assert from_pacs == fingerprint(sdk, dicom_part(ct.data, dicom=window))
    assert fingerprint(sdk, image(url, dicom={"window": "lung"})) != fingerprint(
        sdk, image(url, dicom={"window": "bone"})
    )


@pytest.mark.e2e  # fingerprints: what the real engine makes of the pixels
def test_series_sends_the_middle_slice_by_position(sdk, pacs, audit_log, baseline):
    series = pacs.basic_url + pacs.series_path(pacs.ct)
    middle = pacs.ct.slices[12]  # of 24, in anatomical order (InstanceNumber runs backwards)
    assert chosen_instances(audit_log, sdk, image(series)) == [middle.sop_uid]
    assert ask(sdk, image(series)).usage.prompt_tokens == baseline + CT_SLICE_TOKENS + 2
    # what the model saw: that slice's HU, through the same window as its file sent as base64
    window = {"center": middle.hu, "width": 400}
    assert fingerprint(sdk, image(series, dicom=window)) == fingerprint(
        sdk, dicom_part(middle.data, dicom=window)
    )


@pytest.mark.e2e  # fingerprints: what the real engine makes of the pixels
def test_series_with_four_slices_evenly_spaced_in_anatomical_order(sdk, pacs, audit_log, baseline):
    series = pacs.basic_url + pacs.series_path(pacs.ct)
    part = image(series, dicom={"slices": 4, "window": "bone"})
    expected = [pacs.ct.slices[k] for k in (3, 9, 15, 21)]
    assert chosen_instances(audit_log, sdk, part) == [s.sop_uid for s in expected]
    assert ask(sdk, part).usage.prompt_tokens == baseline + 4 * (CT_SLICE_TOKENS + 2)
    as_base64 = [dicom_part(s.data, dicom={"window": "bone"}) for s in expected]
    assert fingerprint(sdk, part) == fingerprint(sdk, *as_base64)


def test_series_without_positions_is_ordered_by_instance_number(sdk, pacs, audit_log):
    series = pacs.basic_url + pacs.series_path(pacs.ct_unpositioned)
    chosen = chosen_instances(audit_log, sdk, image(series, dicom={"slices": 4}))
    assert chosen == [pacs.ct_unpositioned.slices[k].sop_uid for k in (1, 3, 5, 7)]


@pytest.mark.e2e  # fingerprints: what the real engine makes of the pixels
def test_multi_frame_instance_uses_the_chosen_frame(sdk, pacs):
    mri = pacs.files["emri_small.dcm"]
    url = pacs.basic_url + pacs.instance_path(mri)
    assert fingerprint(sdk, image(url)) == fingerprint(sdk, dicom_part(mri.data))  # middle
    third = fingerprint(sdk, image(url, dicom={"frame": 3}))
    assert third == fingerprint(sdk, dicom_part(mri.data, dicom={"frame": 3}))
    assert third != fingerprint(sdk, image(url))


@pytest.mark.parametrize(
    ("name", "width", "height"),
    [
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", 1024, 768),  # stored JPEG lossless, decoded here
        ("RG1_UNCR.dcm", 1841, 1955),  # pydicom-data's CR chest, MONOCHROME1
    ],
)
def test_instances_in_their_stored_transfer_syntax(sdk, pacs, baseline, name, width, height):
    instance = pacs.files[name]
    completion = ask(sdk, image(pacs.basic_url + pacs.instance_path(instance)))
    assert completion.usage.prompt_tokens == baseline + tokens_for(width, height) + 2


def test_pixel_budget_applies_to_pacs_images(sdk, pacs, baseline):
    chest = pacs.basic_url + pacs.instance_path(pacs.files["RG1_UNCR.dcm"])
    low = ask(sdk, image(chest, detail="low"))
    assert low.usage.prompt_tokens == baseline + tokens_for(1841, 1955, 256 * 28 * 28) + 2


def test_pacs_images_count_against_the_context(sdk, pacs):
    chest = image(pacs.basic_url + pacs.instance_path(pacs.files["RG1_UNCR.dcm"]))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, chest, chest)  # two full-size chests: ~9,000 tokens > the demo's 8,192
    assert caught.value.code == "context_length_exceeded"


def test_each_slice_counts_against_the_image_limit(sdk, pacs):
    series = pacs.basic_url + pacs.series_path(pacs.ct)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, image(series, dicom={"slices": 5}))
    assert caught.value.code == "too_many_images"
    assert caught.value.param == "messages[0].content[0].image_url.dicom.slices"
    ct = image(pacs.basic_url + pacs.instance_path(pacs.files["CT_small.dcm"]))
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, ct, image(series, dicom={"slices": 4}))
    assert caught.value.code == "too_many_images"
    assert "4 per request" in caught.value.message


def test_slices_only_for_series_urls(sdk, pacs):
    instance = pacs.basic_url + pacs.instance_path(pacs.files["CT_small.dcm"])
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, image(instance, dicom={"slices": 2}))
    assert caught.value.code == "invalid_dicom_options"


@pytest.mark.parametrize(
    "path",
    ["/studies/{study}", "/studies/{study}/series/{series}/instances/{sop}?x=1", "/rendered"],
)
def test_urls_under_a_pacs_that_name_no_series_or_instance(sdk, pacs, path):
    ct = pacs.files["CT_small.dcm"]
    url = pacs.basic_url + path.format(study=ct.study, series=ct.series, sop=ct.sop)
    with pytest.raises(openai.BadRequestError) as caught:
        ask(sdk, image(url))
    assert caught.value.code == "invalid_image_url"
    assert caught.value.param == "messages[0].content[0].image_url"


def test_url_outside_the_configured_pacs_is_refused_without_connecting(sdk, pacs):
    connections: list[object] = []
    answered = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)

        def accept() -> None:
            # until the answer came, and one more wait: a connection the server had made would
            # be waiting in the backlog by then
            while True:
                last = answered.is_set()
                try:
                    connections.append(listener.accept()[0])
                except TimeoutError:
                    if last:
                        return

        watcher = threading.Thread(target=accept)
        watcher.start()
        ct = pacs.files["CT_small.dcm"]
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web" + pacs.instance_path(ct)
        try:
            with pytest.raises(openai.BadRequestError) as caught:
                ask(sdk, image(url))
        finally:
            answered.set()
            watcher.join()
    assert caught.value.code == "image_url_not_allowed"
    assert connections == []
