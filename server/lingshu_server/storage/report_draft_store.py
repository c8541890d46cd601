"""Drafted reports: each report as it was answered, its SR file (a blob, by SHA-256) and where
that SR would be stored, owned by whoever drafted it and kept for a while, so the explicit
second step (`POST /v1/reports/{id}/store`) works on any replica and after a restart."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lingshu_server.storage.blobs import get_blobs, put_blobs
from lingshu_server.storage.database import Database
from lingshu_server.storage.tables import report_drafts


@dataclass
class StoredDraft:
    id: str
    owner: str
    report: dict[str, Any]  # the report as answered, without its SR file
    sr: bytes  # the SR file
    target_url: str | None  # the SR's WADO-RS URL in its study's PACS; None: not storable


class ReportDraftStore:
    def __init__(self, database: Database, ttl_s: float):
        self.database = database
        self.ttl_s = ttl_s

    async def save(self, draft: StoredDraft, sr_sha256: str) -> None:
        now = time.time()
        async with self.database.transaction() as connection:
            await put_blobs(connection, draft.id, {sr_sha256: draft.sr})
            await connection.execute(
                sa.insert(report_drafts).values(
                    id=draft.id,
                    owner=draft.owner,
                    created_at=now,
                    expires_at=now + self.ttl_s,
                    report=draft.report,
                    sr_sha256=sr_sha256,
                    target_url=draft.target_url,
                )
            )

    async def get(self, owner: str, draft_id: str) -> StoredDraft | None:
        """The draft, if it is this owner's and has not expired."""
        async with self.database.transaction() as connection:
            row = (
                await connection.execute(
                    sa.select(report_drafts).where(
                        report_drafts.c.id == draft_id,
                        report_drafts.c.owner == owner,
                        report_drafts.c.expires_at > time.time(),
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            sr = (await get_blobs(connection, [row.sr_sha256])).get(row.sr_sha256)
        if sr is None:  # swept between the two reads
            return None
        return StoredDraft(
            id=row.id,
            owner=row.owner,
            report=dict(row.report),
            sr=sr,
            target_url=row.target_url,
        )

    async def update_report(self, owner: str, draft_id: str, report: dict[str, Any]) -> None:
        """The report as last answered (its SR stored, say); the draft keeps its expiry."""
        async with self.database.transaction() as connection:
            await connection.execute(
                sa.update(report_drafts)
                .where(report_drafts.c.id == draft_id, report_drafts.c.owner == owner)
                .values(report=report)
            )
