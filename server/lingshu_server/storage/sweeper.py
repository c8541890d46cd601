"""Retention: stored responses, conversations, report drafts and files past their time are
deleted, with the blobs nobody else uses, by a background task on every replica (deleting twice
is harmless). Uploads still `uploading` an hour after they began were left by a server that
stopped mid-upload: they go too."""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lingshu_server.core.errors import StorageFullError, StorageUnavailableError
from lingshu_server.storage.blobs import release_blobs
from lingshu_server.storage.database import Database
from lingshu_server.storage.file_store import UPLOADING
from lingshu_server.storage.tables import (
    conversation_items,
    conversations,
    file_chunks,
    files,
    report_drafts,
    responses,
)

logger = logging.getLogger(__name__)
SWEEP_INTERVAL_S = 60.0
ABANDONED_UPLOAD_S = 3600.0


async def sweep(database: Database, now: float | None = None) -> int:
    """Delete what expired; returns how many responses, conversations, drafts and files went."""
    cutoff = time.time() if now is None else now
    async with database.transaction() as connection:
        response_ids = await _expired(connection, responses, cutoff)
        conversation_ids = await _expired(connection, conversations, cutoff)
        item_ids = list(
            (
                await connection.execute(
                    sa.select(conversation_items.c.id).where(
                        conversation_items.c.conversation_id.in_(conversation_ids)
                    )
                )
            ).scalars()
        )
        draft_ids = await _expired(connection, report_drafts, cutoff)
        if response_ids:
            await connection.execute(sa.delete(responses).where(responses.c.id.in_(response_ids)))
        if draft_ids:
            await connection.execute(
                sa.delete(report_drafts).where(report_drafts.c.id.in_(draft_ids))
            )
        if conversation_ids:
            await connection.execute(
                sa.delete(conversation_items).where(
                    conversation_items.c.conversation_id.in_(conversation_ids)
                )
            )
            await connection.execute(
                sa.delete(conversations).where(conversations.c.id.in_(conversation_ids))
            )
        await release_blobs(connection, response_ids + item_ids + draft_ids)
        file_ids = await _expired_files(connection, cutoff)
        if file_ids:
            await connection.execute(
                sa.delete(file_chunks).where(file_chunks.c.file_id.in_(file_ids))
            )
            await connection.execute(sa.delete(files).where(files.c.id.in_(file_ids)))
    gone = len(response_ids) + len(conversation_ids) + len(draft_ids) + len(file_ids)
    if gone:
        logger.info("expired stored state deleted", extra={"fields": {"objects": gone}})
    return gone


async def _expired(connection: AsyncConnection, table: sa.Table, cutoff: float) -> list[str]:
    query = sa.select(table.c.id).where(table.c.expires_at <= cutoff)
    return list((await connection.execute(query)).scalars())


async def _expired_files(connection: AsyncConnection, cutoff: float) -> list[str]:
    abandoned = sa.and_(
        files.c.state == UPLOADING, files.c.created_at <= cutoff - ABANDONED_UPLOAD_S
    )
    query = sa.select(files.c.id).where(sa.or_(files.c.expires_at <= cutoff, abandoned))
    return list((await connection.execute(query)).scalars())


async def sweep_forever(database: Database, interval_s: float) -> None:
    while True:
        if database.opened:  # a server that stores nothing never opens its database
            try:
                await sweep(database)
            except (StorageUnavailableError, StorageFullError):
                pass  # /health says so; the next round tries again
        await asyncio.sleep(interval_s)
