"""Reports on the real engine and the real PACS: the text is chat's for the same study and
prompt, the SR stored by STOW-RS reads back by WADO-RS as a valid SR of the right study and
patient, the FHIR Bundle validates, round-trips and is taken by a FHIR server as a transaction,
the Device names the weights hashed at start-up, a PACS that refuses the SR is a 502 that still
holds the report (then the explicit second step stores it with other credentials), and the
audit log gets ids and hashes, never the text."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid

import highdicom as hd
import httpx
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle

from lingshu_server.core.cache_dir import default_cache_dir
from lingshu_server.demo_model import ensure_demo_model
from lingshu_server.engine.checkpoint_digest import checkpoint_digest
from lingshu_server.protocol.reports import REPORT_PROMPT
from tests.pacs.conftest import API_KEYS, READ_ONLY_USER, USERS, basic
from tests.utils.pacs_chat import audit_record, image, read_back

pytestmark = pytest.mark.e2e  # the report's text is the engine's

KEY = API_KEYS[0]
FORWARD = "X-DICOMweb-Authorization"
SAMPLING = {"temperature": 0, "max_tokens": 12}


def sse_data(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_report_is_chats_text_stored_and_read_back(client, pacs, fhir, audit_log):
    ct = pacs.files["CT_small.dcm"]
    part = image(pacs.basic_url + pacs.instance_path(ct))
    request_id = uuid.uuid4().hex
    response = client.post(
        "/v1/reports",
        json={
            "content": [part],
            "outputs": ["fhir", "dicom_sr"],
            "store_to_pacs": True,
            "fhir_url": fhir.basic_url,
            **SAMPLING,
        },
        headers={"X-Request-Id": request_id},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    chat = client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {"role": "user", "content": [part, {"type": "text", "text": REPORT_PROMPT}]}
            ],
            **SAMPLING,
        },
    ).json()
    assert report["text"] == chat["choices"][0]["message"]["content"]
    cached = [
        answer["usage"].pop("prompt_tokens_details")["cached_tokens"] for answer in (report, chat)
    ]
    assert report["usage"] == chat["usage"]
    assert cached[1] >= cached[0]  # the chat repeats the report's prompt: the prefix cache has it
    assert report["system_fingerprint"] == chat["system_fingerprint"]

    # the SR, as the PACS holds it
    stored = report["dicom_sr"]["stored"]
    assert stored["pacs"] == pacs.basic_url.removeprefix("http://").split("/")[0]
    sr = read_back(pacs, stored["url"])
    source = pydicom.dcmread(io.BytesIO(ct.data), stop_before_pixels=True)
    assert sr.SOPInstanceUID == report["dicom_sr"]["sop_instance_uid"]
    assert sr.Modality == "SR" and sr.SeriesInstanceUID != source.SeriesInstanceUID
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate"):
        assert sr[keyword].value == source[keyword].value, keyword
    assert (sr.VerificationFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    document = hd.sr.EnhancedSR.from_dataset(sr)
    assert document.get_evidence() == [
        (
            source.StudyInstanceUID,
            source.SeriesInstanceUID,
            source.SOPInstanceUID,
            source.SOPClassUID,
        )
    ]
    texts = [
        item.TextValue
        for item in hd.sr.utils.find_content_items(
            sr, value_type=hd.sr.ValueTypeValues.TEXT, recursive=True
        )
    ]
    sections = report["sections"]
    if sections["found"]:
        assert texts[-2:] == [sections["findings"], sections["impression"]]
        assert sr.CompletionFlag == ("COMPLETE" if report["finish_reason"] == "stop" else "PARTIAL")
    else:  # the demo model's text is noise: all of it, as one comment
        assert texts[-1] == report["text"] and sr.CompletionFlag == "PARTIAL"
    (model,) = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "lingshu-server"]
    device = next(e for e in report["fhir"]["entry"] if e["resource"]["resourceType"] == "Device")
    weights = device["resource"]["version"][0]["value"]
    assert weights in model.SoftwareVersions
    # hashed at start-up, from the digests cached on disk (a restart reads no weights)
    assert weights == checkpoint_digest(str(ensure_demo_model()), default_cache_dir())
    # the configuration that wrote it: the report's system_fingerprint, in both renderings
    fingerprint = report["system_fingerprint"]
    assert fingerprint.startswith("fp_")
    assert {"type": {"text": "system-fingerprint"}, "value": fingerprint} in device["resource"][
        "version"
    ]
    assert f"system_fingerprint {fingerprint}" in model.SoftwareVersions
    assert device["resource"]["identifier"][0]["value"] == f"urn:oid:{model.DeviceUID}"
    assert model.PurposeOfReferenceCodeSequence[0].CodeMeaning == "Processing Equipment"

    # the FHIR Bundle: valid R4B, and unchanged through the models
    bundle = report["fhir"]
    assert json.loads(Bundle.model_validate(bundle).model_dump_json()) == bundle
    diagnostic = bundle["entry"][0]["resource"]
    assert diagnostic["subject"]["identifier"]["value"] == source.PatientID
    assert (
        diagnostic["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{source.StudyInstanceUID}"
    )
    assert base64.b64decode(diagnostic["presentedForm"][0]["data"]).decode() == report["text"]
    # ... and as the FHIR server holds it
    held = fhir.server.store.read(report["fhir_stored"]["locations"][0])
    assert held["presentedForm"] == diagnostic["presentedForm"]
    assert held.get("conclusion") == diagnostic.get("conclusion")

    # the audit log: ids and hashes, nothing of the text or the patient
    record = audit_record(audit_log, request_id)
    assert record["report"] == {
        "report_id": report["id"],
        "text_sha256": hashlib.sha256(report["text"].encode()).hexdigest(),
        "sr_sop_instance_uid": sr.SOPInstanceUID,
        "sr_sha256": record["report"]["sr_sha256"],
        "stored_sop_instance_uid": sr.SOPInstanceUID,
        "stored_pacs": stored["pacs"],
        "fhir_server": report["fhir_stored"]["server"],
        "fhir_bundle_sha256": hashlib.sha256(
            json.dumps(bundle, ensure_ascii=False).encode()
        ).hexdigest(),
    }
    line = json.dumps(record)
    assert str(source.PatientName) not in line and report["text"].strip() not in line


def test_refused_by_the_pacs_then_stored_by_another_user(pacs_server, pacs):
    """alice may read the study but not store into it: a 502 with the PACS's reason and the
    report; then the explicit second step, with bob's credentials, stores that same SR."""
    ct = pacs.ct.slices[7]
    part = image(
        pacs.forward_url
        + f"/studies/{pacs.ct.study_uid}/series/{pacs.ct.series_uid}/instances/{ct.sop_uid}"
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    alice = {**headers, FORWARD: basic(READ_ONLY_USER, USERS[READ_ONLY_USER])}
    body = {"content": [part], "outputs": ["dicom_sr"], "store_to_pacs": True, **SAMPLING}
    with httpx.Client(base_url=pacs_server.base_url, timeout=120) as http:
        refused = http.post("/v1/reports", json=body, headers=alice)
        assert refused.status_code == 502
        error, report = refused.json()["error"], refused.json()["report"]
        assert error["code"] == "dicomweb_store_refused" and error["type"] == "server_error"
        assert "refused to store the report with the credentials sent in" in error["message"]
        assert error["message"].endswith("HTTP 403 Forbidden")
        assert report["text"] and report["dicom_sr"]["stored"] is None

        streamed = http.post("/v1/reports", json={**body, "stream": True}, headers=alice)
        events = sse_data(streamed.text)
        final, failure = json.loads(events[-3]), json.loads(events[-2])
        assert "".join(json.loads(e)["delta"] for e in events[:-3]) == final["text"]
        assert final["object"] == "report" and failure["error"]["code"] == "dicomweb_store_refused"

        bob = {**headers, FORWARD: basic("bob", USERS["bob"])}
        stored = http.post(f"/v1/reports/{report['id']}/store", headers=bob)
        assert stored.status_code == 200, stored.text
        assert stored.json()["dicom_sr"]["stored"]["url"].endswith(
            report["dicom_sr"]["sop_instance_uid"]
        )
        assert stored.json()["text"] == report["text"]
        other_key = {"Authorization": f"Bearer {API_KEYS[1]}", FORWARD: bob[FORWARD]}
        unknown = http.post(f"/v1/reports/{report['id']}/store", headers=other_key)
        assert unknown.status_code == 404  # a draft is its own caller's only
    sr = read_back(pacs, stored.json()["dicom_sr"]["stored"]["url"])
    drafted = base64.b64decode(report["dicom_sr"]["data"].split(",", 1)[1])
    assert sr.SOPInstanceUID == pydicom.dcmread(io.BytesIO(drafted)).SOPInstanceUID
    assert sr.StudyInstanceUID == pacs.ct.study_uid
