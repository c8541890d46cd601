"""What a report's renderings say about it, gathered once: the text and its sections, the
model that wrote it, the inputs it read and the study they belong to. The FHIR and SR builders
take these and nothing else.

Patient and study values (`StudyFacts`) are copied from the source DICOM headers for the
renderings only: they are never logged, and the audit log gets hashes and UIDs only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from dataclasses import dataclass

from pydicom.uid import generate_uid

from lingshu_server.services.report_sections import Sections

MANUFACTURER = "lingshu-server"


@dataclass(frozen=True, kw_only=True)
class ModelIdentity:
    """The model as a device: what produced the text, down to its weights."""

    served_name: str  # the name clients ask for
    checkpoint: str  # the checkpoint's folder name or hub id
    weights_sha256: str  # engine/checkpoint_digest.py
    server_version: str
    engine_version: str
    system_fingerprint: str  # the whole configuration (services/fingerprint.py)

    @property
    def device_uid(self) -> str:
        """A DICOM UID for this model and configuration: the same for every report they
        write (another dtype or adapter, for example, is another device)."""
        parts = [
            self.weights_sha256,
            self.server_version,
            self.engine_version,
            self.system_fingerprint,
        ]
        return str(generate_uid(prefix="2.25.", entropy_srcs=parts))


@dataclass(frozen=True, kw_only=True)
class InputImage:
    sha256: str
    format: str  # "DICOM", "PNG", ...


@dataclass(frozen=True, kw_only=True)
class StudyFacts:
    """The study the report is about, from its DICOM headers (patient data: never logged)."""

    study_instance_uid: str
    patient_id: str | None  # None when the header has none (or an empty one)
    study_date: str | None  # DICOM DA, YYYYMMDD
    study_time: str | None  # DICOM TM
    timezone_offset: str | None  # DICOM TimezoneOffsetFromUTC, +HHMM


@dataclass(frozen=True, kw_only=True)
class ReportFacts:
    report_id: str  # a UUID
    issued: dt.datetime  # UTC
    text: str
    sections: Sections
    complete: bool  # the model ended the text itself (not cut off by max_tokens)
    model: ModelIdentity
    inputs: list[InputImage]
    study: StudyFacts | None  # None when no input was DICOM

    @property
    def text_bytes(self) -> bytes:
        return self.text.encode("utf-8")


def ni_uri(sha256_hex: str) -> str:
    """RFC 6920's name for content by its SHA-256: ni:///sha-256;<base64url>."""
    digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_hex)).decode().rstrip("=")
    return f"ni:///sha-256;{digest}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
