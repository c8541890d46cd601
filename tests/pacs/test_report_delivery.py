"""Where a report goes, decided by the systems that take it (real Orthanc, the stand-in FHIR
server), on the fake engine: a Bundle POSTed as a transaction to an allow-listed FHIR server
with each auth mode, refusals with the server's OperationOutcome, a server away, an unlisted
URL refused before anything is generated; an SR the PACS acknowledges but drops is no stored
SR; a draft kept in the database is stored by another replica, for its own API key only."""

from __future__ import annotations

import base64
import uuid

import httpx
import pytest

from tests.pacs.conftest import API_KEYS, READ_ONLY_USER, USERS, basic, start_fake_pacs_server
from tests.utils.images import image_data_url
from tests.utils.pacs_chat import audit_record, image, read_back

KEY = API_KEYS[0]
FHIR_FORWARD = "X-FHIR-Authorization"
SAMPLING = {"temperature": 0, "max_tokens": 8}


def fhir_report(client: httpx.Client, fhir_url: str, **headers: str) -> httpx.Response:
    body = {"content": [image(image_data_url(64, 64))], "fhir_url": fhir_url, **SAMPLING}
    return client.post("/v1/reports", json=body, headers=headers)


def test_bundle_posted_as_a_transaction_with_each_auth_mode(client, fhir, audit_log):
    request_id = uuid.uuid4().hex
    posted = fhir_report(client, fhir.basic_url, **{"X-Request-Id": request_id})
    assert posted.status_code == 200, posted.text
    report = posted.json()
    stored = report["fhir_stored"]
    assert stored["server"] == fhir.basic_url.split("/")[2]
    kinds = [location.split("/")[0] for location in stored["locations"]]
    assert kinds == ["DiagnosticReport", "Device", "Provenance"]
    # the server holds the report as sent, its references resolved to the ids it gave
    held = fhir.server.store.read(stored["locations"][0])
    assert base64.b64decode(held["presentedForm"][0]["data"]).decode() == report["text"]
    assert held["meta"]["security"][0]["code"] == "AIAST"
    provenance = fhir.server.store.read(stored["locations"][2])
    assert provenance["target"][0]["reference"] == "/".join(stored["locations"][0].split("/")[:2])
    assert provenance["agent"][0]["who"]["reference"] == "/".join(
        stored["locations"][1].split("/")[:2]
    )
    record = audit_record(audit_log, request_id)["report"]
    assert record["fhir_server"] == stored["server"] and len(record["fhir_bundle_sha256"]) == 64

    # the same model is the same Device (ifNoneExist): a bearer token, then a forwarded user
    by_token = fhir_report(client, fhir.bearer_url).json()["fhir_stored"]
    forwarded = fhir_report(client, fhir.forward_url, **{FHIR_FORWARD: basic("bob", USERS["bob"])})
    assert forwarded.status_code == 200, forwarded.text
    devices = {by_token["locations"][1], forwarded.json()["fhir_stored"]["locations"][1]}
    assert devices == {stored["locations"][1]}
    users = [t["user"] for t in fhir.server.store.transactions[-3:]]
    assert users == ["lingshu", "bearer", "bob"]


@pytest.mark.parametrize(
    ("route", "headers", "status", "code", "said"),
    [
        (
            "forward_url",
            {FHIR_FORWARD: basic(READ_ONLY_USER, USERS[READ_ONLY_USER])},
            502,
            "fhir_refused",
            f"(HTTP 403 with the credentials sent in {FHIR_FORWARD}): error forbidden: "
            f"{READ_ONLY_USER} may not write",
        ),
        (
            "forward_url",
            {},
            502,
            "fhir_refused",
            f"send your FHIR server credentials in the {FHIR_FORWARD} header",
        ),
        (
            "refusing_url",
            {},
            502,
            "fhir_refused",
            "(HTTP 422): error business-rule: transactions are not accepted here",
        ),
        ("dead_url", {}, 502, "fhir_unavailable", "could not reach the FHIR server"),
    ],
    ids=["read-only-user", "no-credentials", "refused-by-policy", "unreachable"],
)
def test_a_refusing_or_absent_fhir_server_is_a_502_that_holds_the_report(
    client, fhir, route, headers, status, code, said
):
    answer = fhir_report(client, getattr(fhir, route), **headers)
    assert answer.status_code == status
    error, report = answer.json()["error"], answer.json()["report"]
    assert (error["type"], error["code"], error["param"]) == ("server_error", code, "fhir_url")
    assert error["message"].startswith("the report was drafted but not stored: ")
    assert said in error["message"]
    assert report["text"] and report["fhir"]["type"] == "transaction"
    assert report["fhir_stored"] is None
    if code == "fhir_unavailable":
        assert answer.headers["Retry-After"] == "10"


def test_only_configured_fhir_urls_and_before_any_generation(client, pacs_server, fhir):
    generated = len(pacs_server.engine.requests)
    unlisted = fhir_report(client, fhir.basic_url.replace("/basic/", "/elsewhere/"))
    assert unlisted.status_code == 400
    assert unlisted.json()["error"]["code"] == "fhir_url_not_allowed"
    assert unlisted.json()["error"]["param"] == "fhir_url"
    no_bundle = client.post(
        "/v1/reports",
        json={
            "content": [image(image_data_url(64, 64))],
            "outputs": [],
            "fhir_url": fhir.basic_url,
        },
    )
    assert no_bundle.status_code == 400 and no_bundle.json()["error"]["param"] == "fhir_url"
    malformed = fhir_report(client, fhir.forward_url, **{FHIR_FORWARD: "Bearer " + "x" * 9000})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "fhir_unauthorized"
    assert len(pacs_server.engine.requests) == generated
    # a trailing slash names the same base
    assert fhir_report(client, fhir.basic_url + "/").status_code == 200


def test_an_sr_the_pacs_acknowledges_but_drops_is_not_stored(client, pacs, fhir):
    """Orthanc answers the STOW-RS with the instance among those stored, then its import
    filter drops it: the search that follows finds nothing, so a 502 that holds the report
    (with its Bundle, posted beside it)."""
    dropped = pacs.dropped_sr_study
    answer = client.post(
        "/v1/reports",
        json={
            "content": [image(pacs.basic_url + pacs.instance_path(dropped))],
            "outputs": ["fhir", "dicom_sr"],
            "store_to_pacs": True,
            "fhir_url": fhir.basic_url,
            **SAMPLING,
        },
    )
    assert answer.status_code == 502
    error, report = answer.json()["error"], answer.json()["report"]
    assert error["code"] == "dicomweb_store_refused"
    assert "acknowledged the report but does not hold it" in error["message"]
    assert report["dicom_sr"]["stored"] is None and report["dicom_sr"]["storable"] is True
    assert report["fhir_stored"]["locations"][0].startswith("DiagnosticReport/")


def test_a_draft_is_stored_by_another_replica_for_its_own_key_only(
    client, pacs, fhir, pacs_server_dir, audit_log
):
    """The draft lives in the database: a second replica (a fresh app, as after a restart)
    stores that very SR; another API key finds nothing."""
    ct = pacs.ct.slices[11]
    url = pacs.basic_url + f"/studies/{pacs.ct.study_uid}/series/{pacs.ct.series_uid}"
    drafted = client.post(
        "/v1/reports",
        json={
            "content": [image(f"{url}/instances/{ct.sop_uid}")],
            "outputs": ["dicom_sr"],
            **SAMPLING,
        },
    )
    assert drafted.status_code == 200, drafted.text
    report = drafted.json()
    assert report["dicom_sr"]["storable"] and report["dicom_sr"]["stored"] is None
    replica = start_fake_pacs_server(pacs_server_dir, "replica.log", audit_log, pacs, fhir)
    try:
        with httpx.Client(base_url=replica.base_url, timeout=60) as http:
            other = http.post(
                f"/v1/reports/{report['id']}/store",
                headers={"Authorization": f"Bearer {API_KEYS[1]}"},
            )
            assert other.status_code == 404
            assert other.json()["error"]["code"] == "report_not_found"
            stored = http.post(
                f"/v1/reports/{report['id']}/store", headers={"Authorization": f"Bearer {KEY}"}
            )
    finally:
        replica.stop()
    assert stored.status_code == 200, stored.text
    assert stored.json()["dicom_sr"]["data"] == report["dicom_sr"]["data"]
    assert stored.json()["text"] == report["text"]
    sr = read_back(pacs, stored.json()["dicom_sr"]["stored"]["url"])
    assert sr.SOPInstanceUID == report["dicom_sr"]["sop_instance_uid"]
    assert sr.StudyInstanceUID == pacs.ct.study_uid
