"""Drafted reports kept for their explicit second step (`POST /v1/reports/{id}/store`): the
report as the caller saw it and its SR file exactly as drafted, for the caller who drafted it
only, in the database of stored state, so any replica can store it, after a restart too.

The SR file is a blob (by its SHA-256) and leaves the report's JSON; where it would be stored is
kept as its WADO-RS URL and matched against the configured PACS when it is read back, so a PACS
taken out of --dicomweb-urls meanwhile is no destination any more.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lingshu_server.core.errors import APIError, StorageFullError, StorageUnavailableError
from lingshu_server.inputs.dicomweb import DicomWebSource
from lingshu_server.inputs.pacs_client import DicomWebRef
from lingshu_server.protocol.reports import ReportResponse
from lingshu_server.services.report_facts import sha256_hex
from lingshu_server.services.report_sr import sr_data_url
from lingshu_server.services.request_records import note_stored
from lingshu_server.storage.report_draft_store import ReportDraftStore, StoredDraft

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Draft:
    report: ReportResponse
    sr: bytes
    target: DicomWebRef | None  # where the SR goes (its own UIDs): None when not storable


class ReportDrafts:
    def __init__(self, store: ReportDraftStore, dicomweb: DicomWebSource):
        self._store = store
        self._dicomweb = dicomweb

    async def keep(
        self, report: ReportResponse, *, owner: str, sr: bytes, target: DicomWebRef | None
    ) -> bool:
        """Keep the draft; False when the database cannot take it now (the report is still
        answered, but its second step is not offered)."""
        draft = StoredDraft(
            id=report.id,
            owner=owner,
            report=_without_sr(report),
            sr=sr,
            target_url=target.url if target is not None else None,
        )
        digest = sha256_hex(sr)
        try:
            await self._store.save(draft, digest)
        except (StorageUnavailableError, StorageFullError) as exc:
            _not_kept(report.id, exc)
            return False
        note_stored("create", report.id, [digest])
        return True

    async def get(self, report_id: str, owner: str) -> Draft | None:
        stored = await self._store.get(owner, report_id)
        if stored is None:
            return None
        note_stored("read", report_id, [sha256_hex(stored.sr)])
        body = stored.report
        body["dicom_sr"]["data"] = sr_data_url(stored.sr)
        target = (
            self._dicomweb.match(stored.target_url, "report_id")
            if stored.target_url is not None
            else None
        )
        return Draft(report=ReportResponse.model_validate(body), sr=stored.sr, target=target)

    async def update(self, report: ReportResponse, owner: str) -> None:
        """The report as last answered (its SR stored), for a later second step."""
        try:
            await self._store.update_report(owner, report.id, _without_sr(report))
        except (StorageUnavailableError, StorageFullError) as exc:
            _not_kept(report.id, exc)


def _not_kept(report_id: str, exc: APIError) -> None:
    logger.warning(
        "report draft not kept", extra={"fields": {"report_id": report_id, "error": exc.code}}
    )


def _without_sr(report: ReportResponse) -> dict[str, Any]:
    """The report's JSON with its SR file left out (that is a blob)."""
    assert report.dicom_sr is not None
    sr = report.dicom_sr.model_copy(update={"data": ""})
    return report.model_copy(update={"dicom_sr": sr}).model_dump(mode="json")
