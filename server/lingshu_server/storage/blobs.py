"""Content-addressed blobs in the database: each distinct content once, by its SHA-256, with the
stored objects that use it listed beside it. A blob is deleted with its last reference."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from lingshu_server.storage.tables import blob_refs, blobs


def insert_ignoring_duplicates(connection: AsyncConnection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect (replicas may race)."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


async def put_blobs(
    connection: AsyncConnection, object_id: str, contents: Mapping[str, bytes]
) -> None:
    """Store each content (by its SHA-256) unless present, and record that `object_id` uses it."""
    if not contents:
        return
    present = set(
        (
            await connection.execute(
                sa.select(blobs.c.sha256).where(blobs.c.sha256.in_(list(contents)))
            )
        ).scalars()
    )
    now = time.time()
    new = [
        {"sha256": sha, "size": len(data), "data": data, "created_at": now}
        for sha, data in contents.items()
        if sha not in present
    ]
    if new:
        await connection.execute(insert_ignoring_duplicates(connection, blobs), new)
    await connection.execute(
        insert_ignoring_duplicates(connection, blob_refs),
        [{"object_id": object_id, "sha256": sha} for sha in contents],
    )


async def get_blobs(connection: AsyncConnection, hashes: Iterable[str]) -> dict[str, bytes]:
    wanted = list(set(hashes))
    if not wanted:
        return {}
    rows = await connection.execute(
        sa.select(blobs.c.sha256, blobs.c.data).where(blobs.c.sha256.in_(wanted))
    )
    return {sha: bytes(data) for sha, data in rows}


async def release_blobs(connection: AsyncConnection, object_ids: Iterable[str]) -> list[str]:
    """Drop the objects' references; delete the blobs nobody references any more. Returns
    the hashes deleted."""
    ids = list(object_ids)
    if not ids:
        return []
    used = set(
        (
            await connection.execute(
                sa.select(blob_refs.c.sha256).where(blob_refs.c.object_id.in_(ids))
            )
        ).scalars()
    )
    if not used:
        return []
    await connection.execute(sa.delete(blob_refs).where(blob_refs.c.object_id.in_(ids)))
    still = set(
        (
            await connection.execute(
                sa.select(blob_refs.c.sha256).where(blob_refs.c.sha256.in_(list(used)))
            )
        ).scalars()
    )
    orphans = sorted(used - still)
    if orphans:
        try:
            async with connection.begin_nested():
                await connection.execute(sa.delete(blobs).where(blobs.c.sha256.in_(orphans)))
        except sa.exc.IntegrityError:
            return []  # another request referenced them meanwhile: they stay, in use
    return orphans
