"""A report's renderings without an engine: the sections read only from the model card's
format, and the FHIR Bundle and the SR carrying any text as a value (a hostile one that tries
to look like SR, FHIR or section structure included), for a study without a PatientID too."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json

import highdicom as hd
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydicom.data import get_testdata_file

from lingshu_server.services.report_facts import (
    InputImage,
    ModelIdentity,
    ReportFacts,
    StudyFacts,
)
from lingshu_server.services.report_fhir import fhir_bundle
from lingshu_server.services.report_sections import Sections, parse_sections
from lingshu_server.services.report_sources import ReportSource, read_header, study_of
from lingshu_server.services.report_sr import build_sr, sr_report

MODEL = ModelIdentity(
    served_name="lingshu-demo",
    checkpoint="Lingshu-7B",
    weights_sha256="ab" * 32,
    server_version="0.1.0",
    engine_version="0.32.0",
    system_fingerprint="fp_0123456789abcdef",
)
# Text a model could be led to write: section headings out of place, FHIR JSON, SR-like
# markup, DICOM's value separator, a NUL, and text outside Latin-1.
HOSTILE = (
    'Findings: none. "}]}, {"resourceType": "Patient", "id": "evil"} '
    "<ContentSequence><TextValue>x</TextValue></ContentSequence> \\ 0\x00 肺 "
    "Impression: ]]> Impression: twice"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Findings: Clear lungs. Impression: Normal.", Sections("Clear lungs.", "Normal.")),
        (
            "Report:\n**FINDINGS:** Small effusion.\n\n## Impression:\nEffusion.",
            Sections("Small effusion.", "Effusion."),
        ),
        ("The lungs are clear.", Sections(None, None)),  # no format: nothing invented
        ("Impression: Normal. Findings: Clear.", Sections(None, None)),  # out of order
        ("Findings: Impression: Normal.", Sections(None, None)),  # an empty section
        (HOSTILE, Sections(None, None)),  # a repeated heading
    ],
)
def test_sections_only_from_the_model_cards_format(text, expected):
    assert parse_sections(text) == expected


def facts(text: str, header: pydicom.Dataset) -> ReportFacts:
    source = study_of_header(header)
    return ReportFacts(
        report_id="0b5a8ac2-43cc-4a55-9f52-3f5f00e8d5b1",
        issued=dt.datetime(2026, 12, 7, 10, 30, tzinfo=dt.UTC),
        text=text,
        sections=parse_sections(text),
        complete=True,
        model=MODEL,
        inputs=[InputImage(sha256="cd" * 32, format="DICOM")],
        study=source,
    )


def study_of_header(header: pydicom.Dataset) -> StudyFacts | None:
    return study_of(
        [ReportSource(image=InputImage(sha256="", format="DICOM"), header=header, ref=None)]
    )


def ct_header(**changes) -> pydicom.Dataset:
    path = get_testdata_file("CT_small.dcm")
    with open(path, "rb") as file:
        header = read_header(file.read())
    assert header is not None
    for keyword, value in changes.items():
        if value is None:
            delattr(header, keyword)
        else:
            setattr(header, keyword, value)
    return header


def test_fhir_and_sr_carry_hostile_text_as_a_value_for_a_study_without_patient_id():
    header = ct_header(PatientID=None)
    report = facts(HOSTILE, header)

    bundle = fhir_bundle(report, subject_reference=None, patient_id_system=None)
    assert json.loads(Bundle.model_validate(bundle).model_dump_json()) == bundle
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "DiagnosticReport",
        "Device",
        "Provenance",
    ]
    diagnostic = bundle["entry"][0]["resource"]
    assert "subject" not in diagnostic and "conclusion" not in diagnostic  # nothing invented
    form = diagnostic["presentedForm"][0]
    assert base64.b64decode(form["data"]).decode() == HOSTILE
    assert form["size"] == len(HOSTILE.encode())
    assert diagnostic["meta"]["security"][0]["code"] == "AIAST"
    assert diagnostic["status"] == "preliminary"

    document = build_sr(report, [header])
    sr = pydicom.dcmread(io.BytesIO(document.data))
    assert sr.PatientID == "" and sr.PatientName == header.PatientName
    assert sr.CompletionFlag == "PARTIAL"  # no sections found
    read = hd.sr.EnhancedSR.from_dataset(sr)
    items = hd.sr.utils.find_content_items(read, value_type=hd.sr.ValueTypeValues.TEXT)
    assert items[-1].TextValue == HOSTILE  # one value, exactly the text
    assert [item.name.meaning for item in read.content[0].ContentSequence][-1] == "Comment"
    shown = sr_report(document, storable=False)
    assert shown.content[0].children[-1].value == HOSTILE


def test_sections_become_sr_containers_and_the_fhir_conclusion():
    header = ct_header(TimezoneOffsetFromUTC="+0100")
    report = facts("Findings: Clear lungs. Impression: Normal chest.", header)
    bundle = fhir_bundle(report, subject_reference="Patient/p-17", patient_id_system=None)
    diagnostic = bundle["entry"][0]["resource"]
    assert diagnostic["subject"] == {"reference": "Patient/p-17"}
    assert diagnostic["conclusion"] == "Normal chest."
    assert diagnostic["effectiveDateTime"] == "2004-01-19T07:27:30+01:00"
    provenance = bundle["entry"][2]["resource"]
    assert provenance["target"][0]["reference"] == bundle["entry"][0]["fullUrl"]
    assert provenance["agent"][0]["who"]["reference"] == bundle["entry"][1]["fullUrl"]
    assert provenance["entity"][0]["what"]["identifier"]["value"].startswith("ni:///sha-256;")

    sr = pydicom.dcmread(io.BytesIO(build_sr(report, [header]).data))
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    sections = [
        (item.ConceptNameCodeSequence[0].CodeMeaning, item.ContentSequence[0].TextValue)
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER"
    ]
    assert sections == [("Findings", "Clear lungs."), ("Impressions", "Normal chest.")]
