"""A report as a DICOM Enhanced SR, built with highdicom, in the source study: a text report
(the structure MONAI Deploy writes; TID 1500 needs measurements a text report does not have).

- The patient and study modules are copied from the first source image (highdicom); attributes
  the source lacks are written empty (type 2), so a study without a PatientID still gets an SR.
- A new series; `VerificationFlag` UNVERIFIED, `PreliminaryFlag` PRELIMINARY, `CompletionFlag`
  COMPLETE only when the model ended the text itself and it followed the format.
- Content: a device observer context (the model), then Findings and Impressions containers
  each holding one TEXT item, or, when the text has no sections, one Comment TEXT item
  holding all of it. The text is a value (UT, UTF-8): nothing in it becomes structure.
- The model is in the Contributing Equipment Sequence as IHE AI Results asks (manufacturer,
  model name, software versions, Device UID); every source instance is referenced in the
  Current Requested Procedure Evidence Sequence.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass

import highdicom as hd
from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    ObserverContext,
    TextContentItem,
)
from highdicom.sr import RelationshipTypeValues as Relationship
from pydicom import Dataset, dcmread
from pydicom.sr.codedict import codes

from lingshu_server.protocol.reports import DicomSrReport, SrConcept, SrContentItem
from lingshu_server.services.report_facts import MANUFACTURER, ReportFacts

REPORT_TITLE = CodedConcept("18748-4", "LN", "Diagnostic imaging study")
FINDINGS = CodedConcept("121070", "DCM", "Findings")
FINDING = CodedConcept("121071", "DCM", "Finding")
IMPRESSIONS = CodedConcept("121072", "DCM", "Impressions")
IMPRESSION = CodedConcept("121073", "DCM", "Impression")
COMMENT = CodedConcept("121106", "DCM", "Comment")
SERIES_NUMBER = 9001
SERIES_DESCRIPTION = "AI draft report (unverified)"
# Type 2 attributes highdicom reads from the first source: empty when the source lacks them.
_PATIENT_AND_STUDY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
_MAX_LO = 64


@dataclass(frozen=True)
class SrDocument:
    data: bytes
    dataset: Dataset


def _source(header: Dataset) -> Dataset:
    source = deepcopy(header)
    for keyword in _PATIENT_AND_STUDY:
        if keyword not in source:
            setattr(source, keyword, None)
    return source


def _text_section(container: CodedConcept, item: CodedConcept, text: str) -> ContainerContentItem:
    section = ContainerContentItem(name=container, relationship_type=Relationship.CONTAINS)
    section.ContentSequence = ContentSequence(
        [TextContentItem(name=item, value=text, relationship_type=Relationship.CONTAINS)]
    )
    return section


def _content(facts: ReportFacts) -> ContainerContentItem:
    model = facts.model
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=model.device_uid,
            name=model.served_name[:_MAX_LO],
            manufacturer_name=MANUFACTURER,
            model_name=model.checkpoint[:_MAX_LO],
        ),
    )
    sections = facts.sections
    body: list[ContainerContentItem | TextContentItem]
    if sections.findings is not None and sections.impression is not None:
        body = [
            _text_section(FINDINGS, FINDING, sections.findings),
            _text_section(IMPRESSIONS, IMPRESSION, sections.impression),
        ]
    else:
        body = [
            TextContentItem(name=COMMENT, value=facts.text, relationship_type=Relationship.CONTAINS)
        ]
    root = ContainerContentItem(name=REPORT_TITLE)
    root.ContentSequence = ContentSequence([*observer, *body])
    return root


def _equipment(facts: ReportFacts) -> hd.ContributingEquipment:
    model = facts.model
    equipment = hd.ContributingEquipment(
        MANUFACTURER,
        codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model.checkpoint[:_MAX_LO],
        software_versions=[
            f"lingshu-server {model.server_version}"[:_MAX_LO],
            f"vllm {model.engine_version}"[:_MAX_LO],
            model.weights_sha256,  # 64 hex digits: an LO value exactly
            f"system_fingerprint {model.system_fingerprint}"[:_MAX_LO],
        ],
        contribution_description="Drafted the report text (AI-generated, unverified)",
    )
    equipment.DeviceUID = model.device_uid
    return equipment


def build_sr(facts: ReportFacts, headers: Sequence[Dataset]) -> SrDocument:
    """The SR for `facts`, in the study of `headers` (the source images' headers, one study)."""
    sections_found = facts.sections.found
    sr = hd.sr.EnhancedSR(
        evidence=[_source(headers[0]), *headers[1:]],
        content=_content(facts),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=facts.complete and sections_found,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
        contributing_equipment=[_equipment(facts)],
        specific_character_set="ISO_IR 192",  # UTF-8: the model writes any language
    )
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return SrDocument(buffer.getvalue(), sr)


def _concept(item: Dataset) -> SrConcept:
    code = item.ConceptNameCodeSequence[0]
    return SrConcept(
        code=str(code.CodeValue),
        scheme=str(code.CodingSchemeDesignator),
        meaning=str(code.CodeMeaning),
    )


def _value(item: Dataset) -> str | None:
    match item.ValueType:
        case "TEXT":
            return str(item.TextValue)
        case "UIDREF":
            return str(item.UID)
        case "CODE":
            return str(item.ConceptCodeSequence[0].CodeMeaning)
    return None


def content_tree(items: Sequence[Dataset]) -> list[SrContentItem]:
    """The content items of an SR (read back from the document, not from what was meant)."""
    return [
        SrContentItem(
            relationship=str(item.RelationshipType) if "RelationshipType" in item else None,
            value_type=str(item.ValueType),
            concept=_concept(item),
            value=_value(item),
            children=content_tree(item.get("ContentSequence", [])),
        )
        for item in items
    ]


def sr_data_url(data: bytes) -> str:
    return "data:application/dicom;base64," + base64.b64encode(data).decode("ascii")


def sr_report(document: SrDocument, *, storable: bool) -> DicomSrReport:
    """The SR as the report response shows it: its UIDs, flags, content tree and bytes."""
    read = dcmread(io.BytesIO(document.data))
    return DicomSrReport(
        study_instance_uid=str(read.StudyInstanceUID),
        series_instance_uid=str(read.SeriesInstanceUID),
        sop_instance_uid=str(read.SOPInstanceUID),
        sop_class_uid=str(read.SOPClassUID),
        completion_flag=read.CompletionFlag,
        verification_flag=read.VerificationFlag,
        content=content_tree([read]),
        data=sr_data_url(document.data),
        storable=storable,
    )
