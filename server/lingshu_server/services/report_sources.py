"""A report's input images, read before anything is generated: each one's SHA-256 and format,
and for DICOM its header (without pixels) and the PACS it came from, through chat's own path
(ChatPromptBuilder's expand and probe: the same caps, errors and per-caller fetch cache, so the
generation that follows fetches nothing twice).

The headers hold patient data: they go to the SR builder and nowhere else (never a log).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from lingshu_server.core.errors import InvalidRequestError
from lingshu_server.inputs.dicomweb import DicomWebSource
from lingshu_server.inputs.pacs_client import DicomWebRef
from lingshu_server.protocol.common import ImagePart
from lingshu_server.services.chat_prompt import ChatPromptBuilder
from lingshu_server.services.report_facts import InputImage, StudyFacts

# What an SR needs of each source instance to reference it
REFERENCE_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True, kw_only=True)
class ReportSource:
    image: InputImage
    header: Dataset | None  # DICOM only
    ref: DicomWebRef | None  # a DICOMweb instance: where it came from


def read_header(data: bytes) -> Dataset | None:
    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, ValueError, EOFError, OSError):
        return None
    return header if all(keyword in header for keyword in REFERENCE_KEYWORDS) else None


async def read_sources(
    *,
    parts: list[tuple[str, ImagePart]],
    prompts: ChatPromptBuilder,
    dicomweb: DicomWebSource,
    pool: Executor,
) -> list[ReportSource]:
    parts = await prompts.expand_images(parts)
    probed = await prompts.probe_images(parts)
    loop = asyncio.get_running_loop()
    headers = await asyncio.gather(
        *(
            loop.run_in_executor(pool, read_header, image.encoded.data)
            if image.source_format == "DICOM"
            else asyncio.sleep(0, None)
            for image in probed
        )
    )
    return [
        ReportSource(
            image=InputImage(sha256=image.digest, format=image.source_format),
            header=header,
            ref=dicomweb.match(part.image_url.url, param),
        )
        for image, header, (param, part) in zip(probed, headers, parts, strict=True)
    ]


def study_of(sources: Sequence[ReportSource]) -> StudyFacts | None:
    """The one study the DICOM inputs belong to (None without DICOM); a 400 for several."""
    headers = [source.header for source in sources if source.header is not None]
    if not headers:
        return None
    studies = {str(header.StudyInstanceUID) for header in headers}
    if len(studies) > 1:
        raise InvalidRequestError(
            f"the DICOM images belong to {len(studies)} studies; a report covers one study",
            param="content",
            code="report_spans_studies",
        )
    first = headers[0]
    return StudyFacts(
        study_instance_uid=str(first.StudyInstanceUID),
        patient_id=str(first.get("PatientID") or "") or None,
        study_date=str(first.get("StudyDate") or "") or None,
        study_time=str(first.get("StudyTime") or "") or None,
        timezone_offset=str(first.get("TimezoneOffsetFromUTC") or "") or None,
    )
