"""A report as FHIR R4: a transaction Bundle of a DiagnosticReport, the Device that wrote it and
the Provenance that ties the two to the input images' hashes. A client can POST it to its FHIR
server as it is: the references between the entries are `urn:uuid:` full URLs, and the Device is
created only if none with its identifier exists yet.

The report is marked as AI output as HL7's AI Transparency guide asks (`meta.security` code
AIAST), `status: preliminary` (no clinician has verified it). The text travels as data only:
base64 in `presentedForm`, the impression in `conclusion`; nothing in it is read as structure.
Every Bundle is validated by fhir.resources' R4B models (R4B's DiagnosticReport, Device and
Provenance are R4's for what is used here) before it leaves.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from lingshu_server.services.report_facts import MANUFACTURER, ReportFacts, StudyFacts, ni_uri

LOINC = "http://loinc.org"
AI_ASSERTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}
RADIOLOGY = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
    "code": "RAD",
    "display": "Radiology",
}
MEDICAL_RECORD_NUMBER = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
    "code": "MR",
    "display": "Medical record number",
}
URI_SYSTEM = "urn:ietf:rfc:3986"
DICOM_UID_SYSTEM = "urn:dicom:uid"


def instant(moment: dt.datetime) -> str:
    """FHIR instant, in UTC to the second."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def effective_date_time(study: StudyFacts | None) -> str | None:
    """The study's date, with its time when the header gives a timezone (FHIR needs one)."""
    if study is None or not study.study_date:
        return None
    try:
        day = dt.datetime.strptime(study.study_date[:8], "%Y%m%d").date()
    except ValueError:
        return None
    time, offset = (study.study_time or "")[:6], study.timezone_offset or ""
    if len(time) == 6 and time.isdigit() and len(offset) == 5 and offset[1:].isdigit():
        moment = f"{time[:2]}:{time[2:4]}:{time[4:6]}{offset[:3]}:{offset[3:]}"
        try:
            return dt.datetime.fromisoformat(f"{day.isoformat()}T{moment}").isoformat()
        except ValueError:
            return day.isoformat()
    return day.isoformat()


def subject(
    reference: str | None, study: StudyFacts | None, patient_id_system: str | None
) -> dict[str, Any] | None:
    if reference is not None:
        return {"reference": reference}
    if study is None or not study.patient_id:
        return None
    identifier: dict[str, Any] = {"type": {"coding": [MEDICAL_RECORD_NUMBER]}}
    if patient_id_system:
        identifier["system"] = patient_id_system
    identifier["value"] = study.patient_id
    return {"identifier": identifier}


def _urn(seed: str) -> str:
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, seed)}"


def diagnostic_report(facts: ReportFacts, subject_ref: dict[str, Any] | None) -> dict[str, Any]:
    text = facts.text_bytes
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "meta": {"security": [AI_ASSERTED]},
        "identifier": [{"system": URI_SYSTEM, "value": f"urn:uuid:{facts.report_id}"}],
        "status": "preliminary",
        "category": [{"coding": [RADIOLOGY]}],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]
        },
    }
    if subject_ref is not None:
        report["subject"] = subject_ref
    effective = effective_date_time(facts.study)
    if effective is not None:
        report["effectiveDateTime"] = effective
    report["issued"] = instant(facts.issued)
    if facts.study is not None:
        uid = facts.study.study_instance_uid
        report["imagingStudy"] = [
            {"identifier": {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}}
        ]
    if facts.sections.impression is not None:
        report["conclusion"] = facts.sections.impression
    report["presentedForm"] = [
        {
            "contentType": "text/plain; charset=utf-8",
            "data": base64.b64encode(text).decode("ascii"),
            "size": len(text),
            # FHIR's Attachment.hash is the base64 of the data's SHA-1
            "hash": base64.b64encode(hashlib.sha1(text).digest()).decode("ascii"),
            "title": "Draft report (AI-generated, unverified)",
        }
    ]
    return report


def device(facts: ReportFacts) -> dict[str, Any]:
    model = facts.model
    return {
        "resourceType": "Device",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{model.device_uid}"}],
        "manufacturer": MANUFACTURER,
        "deviceName": [
            {"name": model.served_name, "type": "user-friendly-name"},
            {"name": model.checkpoint, "type": "model-name"},
        ],
        "type": {"text": "AI vision-language model (report drafting)"},
        "version": [
            {"type": {"text": "weights-sha256"}, "value": model.weights_sha256},
            {"type": {"text": "lingshu-server"}, "value": model.server_version},
            {"type": {"text": "vllm"}, "value": model.engine_version},
            {"type": {"text": "system-fingerprint"}, "value": model.system_fingerprint},
        ],
    }


def provenance(facts: ReportFacts, report_url: str, device_url: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": report_url}],
        "recorded": instant(facts.issued),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "CREATE",
                    "display": "create",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/"
                            "provenance-participant-type",
                            "code": "author",
                            "display": "Author",
                        }
                    ]
                },
                "who": {"reference": device_url, "display": facts.model.served_name},
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": URI_SYSTEM, "value": ni_uri(image.sha256)},
                    "display": f"input image {i + 1} ({image.format})",
                },
            }
            for i, image in enumerate(facts.inputs)
        ],
    }


def fhir_bundle(
    facts: ReportFacts, *, subject_reference: str | None, patient_id_system: str | None
) -> dict[str, Any]:
    """The transaction Bundle (as JSON), checked against the R4B models."""
    report_url = f"urn:uuid:{facts.report_id}"
    device_url = _urn(f"device:{facts.model.device_uid}")
    provenance_url = _urn(f"provenance:{facts.report_id}")
    device_identifier = f"{DICOM_UID_SYSTEM}|urn:oid:{facts.model.device_uid}"
    ref = subject(subject_reference, facts.study, patient_id_system)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": instant(facts.issued),
        "entry": [
            {
                "fullUrl": report_url,
                "resource": diagnostic_report(facts, ref),
                "request": {"method": "POST", "url": "DiagnosticReport"},
            },
            {
                "fullUrl": device_url,
                "resource": device(facts),
                "request": {
                    "method": "POST",
                    "url": "Device",
                    "ifNoneExist": f"identifier={device_identifier}",
                },
            },
            {
                "fullUrl": provenance_url,
                "resource": provenance(facts, report_url, device_url),
                "request": {"method": "POST", "url": "Provenance"},
            },
        ],
    }
    Bundle.model_validate(bundle)  # a wrong Bundle is a bug here, not the client's problem
    return bundle
