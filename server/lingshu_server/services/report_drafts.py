"""Drafted reports kept for their explicit second step (`POST /v1/reports/{id}/store`): the SR
exactly as the caller saw it, for an hour, for the caller who drafted it only.

In memory, per replica (a load balancer must send the second step to the same replica, or the
client stores with `store_to_pacs` in one request): the stored-state layer can take it over.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from lingshu_server.inputs.pacs_client import DicomWebRef
from lingshu_server.protocol.reports import ReportResponse

DRAFT_TTL_S = 3600.0
MAX_DRAFTS = 256


@dataclass(kw_only=True)
class Draft:
    owner: str
    report: ReportResponse
    sr: bytes
    target: DicomWebRef | None  # where the SR goes (its own UIDs): None when not storable
    expires: float


class ReportDrafts:
    def __init__(self, ttl_s: float = DRAFT_TTL_S, max_entries: int = MAX_DRAFTS):
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._drafts: OrderedDict[str, Draft] = OrderedDict()

    def put(
        self, report: ReportResponse, *, owner: str, sr: bytes, target: DicomWebRef | None
    ) -> None:
        self._expire()
        self._drafts[report.id] = Draft(
            owner=owner,
            report=report,
            sr=sr,
            target=target,
            expires=time.monotonic() + self._ttl_s,
        )
        while len(self._drafts) > self._max_entries:
            self._drafts.popitem(last=False)

    def get(self, report_id: str, owner: str) -> Draft | None:
        self._expire()
        draft = self._drafts.get(report_id)
        return draft if draft is not None and draft.owner == owner else None

    def _expire(self) -> None:
        now = time.monotonic()
        while self._drafts:
            oldest = next(iter(self._drafts.values()))
            if oldest.expires > now:
                return
            self._drafts.popitem(last=False)
