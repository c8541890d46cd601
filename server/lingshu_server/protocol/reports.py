"""Wire models of `POST /v1/reports` and `POST /v1/reports/{report_id}/store`: a study in, a
draft report out, as text with its Findings and Impression, a FHIR R4 Bundle and a DICOM SR
(an extension, not an OpenAI type).

The study is given as chat's content parts (DICOMweb series or instance URLs, DICOM or image
data URLs, optional text); the prompt defaults to the Lingshu model card's report prompt. The
text is generated exactly as chat generates it for the same parts and prompt.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from lingshu_server.core.errors import ErrorBody
from lingshu_server.protocol.common import (
    ImagePart,
    ResponseModel,
    SamplingRequest,
    Text,
    TextPart,
    Usage,
)

# The report prompt of the Lingshu model card's evaluation (MedEvalKit), images first.
REPORT_PROMPT = (
    "You are a helpful assistant. Please generate a report for the given images, including "
    "both findings and impressions. Return the report in the following format: "
    "Findings: {} Impression: {}."
)
ReportOutput = Literal["fhir", "dicom_sr"]
ReportContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ReportRequest(SamplingRequest):
    """A study and what to render from the report drafted for it."""

    content: list[ReportContentPart] = Field(
        min_length=1,
        description="The study, as chat's content parts: `image_url` (DICOMweb series or "
        "instance URLs, DICOM or image data URLs) and `text` (context), in prompt order",
    )
    prompt: Text | None = Field(
        default=None,
        description="Sent after the content; default: the model card's report prompt "
        "(Findings: {} Impression: {})",
    )
    outputs: list[ReportOutput] = Field(
        default_factory=lambda: list[ReportOutput](["fhir"]),
        description='Renderings wanted: "fhir" (an R4 transaction Bundle: DiagnosticReport, '
        'Device, Provenance) and "dicom_sr" (an Enhanced SR in the source study; needs '
        "DICOM images)",
    )
    subject: Text | None = Field(
        default=None,
        pattern=r"^(Patient|Group)/[A-Za-z0-9\-.]{1,64}$",
        description="The FHIR subject, e.g. `Patient/123`; default: an identifier built "
        "from the DICOM PatientID",
    )
    store_to_pacs: bool = Field(
        default=False,
        description="Store the SR by STOW-RS into the PACS the study came from (needs "
        '"dicom_sr" and DICOMweb images); a refusal is a 502 that still holds the report',
    )

    fhir_url: Text | None = Field(
        default=None,
        description="POST the FHIR Bundle, as a transaction, to this FHIR base URL (one of the "
        'server\'s --fhir-urls; needs "fhir"); a refusal is a 502 that still holds the report',
    )

    @field_validator("outputs")
    @classmethod
    def _unique_outputs(cls, outputs: list[ReportOutput]) -> list[ReportOutput]:
        if len(set(outputs)) != len(outputs):
            raise ValueError("each output may be named once")
        return outputs

    @field_validator("n")
    @classmethod
    def _one_report(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("a report request drafts one report: n must be 1")
        return n

    @field_validator("fhir_url")
    @classmethod
    def _post_needs_fhir(cls, url: str | None, info: Any) -> str | None:
        if url is not None and "fhir" not in info.data.get("outputs", []):
            raise ValueError('fhir_url needs "fhir" among the outputs')
        return url

    @field_validator("store_to_pacs")
    @classmethod
    def _store_needs_sr(cls, store: bool, info: Any) -> bool:
        if store and "dicom_sr" not in info.data.get("outputs", []):
            raise ValueError('store_to_pacs needs "dicom_sr" among the outputs')
        return store


class ReportSections(ResponseModel):
    found: bool = Field(
        description="Whether the text follows the format (one Findings: then one "
        "Impression:); when not, both sections are null and only `text` holds the report"
    )
    findings: str | None
    impression: str | None


class SrConcept(ResponseModel):
    code: str
    scheme: str
    meaning: str


class SrContentItem(ResponseModel):
    """One node of the SR's content tree, as read back from the document."""

    relationship: str | None
    value_type: str
    concept: SrConcept
    value: str | None = None
    children: list[SrContentItem] = Field(default_factory=list)


class StoredReport(ResponseModel):
    pacs: str = Field(description="host:port of the PACS that stored it")
    url: str = Field(description="The stored instance's WADO-RS URL")


class DicomSrReport(ResponseModel):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    completion_flag: Literal["COMPLETE", "PARTIAL"]
    verification_flag: Literal["UNVERIFIED"]
    content: list[SrContentItem]
    data: str = Field(description="The SR document: data:application/dicom;base64,...")
    storable: bool = Field(
        description="Whether POST /v1/reports/{id}/store can store it: the study came from "
        "a PACS this server reads"
    )
    stored: StoredReport | None = None


class FhirStoredReport(ResponseModel):
    server: str = Field(description="host:port of the FHIR server that took the Bundle")
    locations: list[str] = Field(
        description="Where each entry went, in the Bundle's order (the transaction-response's "
        "`response.location`: DiagnosticReport/..., Device/..., Provenance/...)"
    )


class ReportResponse(ResponseModel):
    id: str
    object: Literal["report"] = "report"
    created: int
    model: str
    # the configuration that wrote it, as chat completions carry it (services/fingerprint.py)
    system_fingerprint: str
    text: str
    finish_reason: str
    sections: ReportSections
    fhir: dict[str, Any] | None = Field(
        default=None, description="A FHIR R4 Bundle (type transaction)"
    )
    fhir_stored: FhirStoredReport | None = Field(
        default=None, description="Where the FHIR server put the Bundle, with `fhir_url`"
    )
    dicom_sr: DicomSrReport | None = None
    usage: Usage


class ReportChunk(ResponseModel):
    """With `stream: true`: the text as it is generated; the report object comes last."""

    id: str
    object: Literal["report.chunk"] = "report.chunk"
    created: int
    model: str
    system_fingerprint: str
    delta: str


class ReportNotStoredResponse(ResponseModel):
    """502: the PACS refused the SR. The report is still here."""

    error: ErrorBody
    report: ReportResponse
