"""Batches as stored: the batch objects, their counts, and the lease that lets one replica at a
time run a batch.

A finished line is written once: its output (or error) line goes into the batch's output (or
error) file at the input line's number, in the same transaction as the count it adds to, and
only while the replica still holds the lease. A line already written (a replica that died
between its engine answer and the commit, then came back) is not written or counted again.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from lingshu_server.storage.database import Database
from lingshu_server.storage.file_store import FileStore
from lingshu_server.storage.paging import Page
from lingshu_server.storage.tables import BATCH_TIMES, batches, file_chunks

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")


class LeaseLostError(Exception):
    """This replica no longer holds the batch (another took it over, or it was deleted)."""


@dataclass(frozen=True)
class Caller:
    """Who created a batch: its lines run as them (their stored objects, their quotas)."""

    owner: str
    tenant: str | None = None
    key_id: str | None = None
    identity: str | None = None


@dataclass(frozen=True)
class StoredBatch:
    id: str
    owner: str
    tenant: str | None
    key_id: str | None
    identity: str | None
    endpoint: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    status: str
    created_at: float
    expires_at: float
    in_progress_at: float | None
    finalizing_at: float | None
    completed_at: float | None
    failed_at: float | None
    expired_at: float | None
    cancelling_at: float | None
    cancelled_at: float | None
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict[str, Any]] | None
    total: int
    completed: int
    failed: int
    lease_owner: str | None
    lease_until: float | None

    @property
    def caller(self) -> Caller:
        return Caller(self.owner, self.tenant, self.key_id, self.identity)


_COLUMNS = [field.name for field in fields(StoredBatch)]


def _batch(row: Any) -> StoredBatch:
    return StoredBatch(**{name: getattr(row, name) for name in _COLUMNS})


class BatchStore:
    def __init__(self, database: Database, files: FileStore):
        self.database = database
        self.files = files

    async def create(
        self,
        caller: Caller,
        *,
        endpoint: str,
        input_file_id: str,
        completion_window: str,
        window_s: float,
        metadata: dict[str, str] | None,
    ) -> StoredBatch:
        now = time.time()
        times = dict.fromkeys(BATCH_TIMES)
        batch = StoredBatch(
            id=f"batch_{uuid.uuid4().hex}",
            owner=caller.owner,
            tenant=caller.tenant,
            key_id=caller.key_id,
            identity=caller.identity,
            endpoint=endpoint,
            input_file_id=input_file_id,
            completion_window=completion_window,
            metadata=metadata,
            status="validating",
            created_at=now,
            expires_at=now + window_s,
            output_file_id=None,
            error_file_id=None,
            errors=None,
            total=0,
            completed=0,
            failed=0,
            lease_owner=None,
            lease_until=None,
            **times,
        )
        async with self.database.transaction() as connection:
            await connection.execute(sa.insert(batches).values(**dataclasses.asdict(batch)))
        return batch

    async def get(self, batch_id: str, owner: str | None = None) -> StoredBatch | None:
        """The batch, if it is `owner`'s (any owner's: None, for the runner)."""
        query = sa.select(batches).where(batches.c.id == batch_id)
        if owner is not None:
            query = query.where(batches.c.owner == owner)
        async with self.database.transaction() as connection:
            row = (await connection.execute(query)).first()
        return _batch(row) if row is not None else None

    async def listing(self, owner: str, *, after: str | None, limit: int) -> Page:
        """The owner's batches, newest first, `limit` after the batch `after`."""
        query = sa.select(batches).where(batches.c.owner == owner)
        async with self.database.transaction() as connection:
            if after is not None:
                cursor = (
                    await connection.execute(
                        sa.select(batches.c.created_at, batches.c.id).where(
                            batches.c.id == after, batches.c.owner == owner
                        )
                    )
                ).first()
                if cursor is None:
                    return Page([], has_more=False)
                query = query.where(
                    sa.or_(
                        batches.c.created_at < cursor.created_at,
                        sa.and_(batches.c.created_at == cursor.created_at, batches.c.id < after),
                    )
                )
            query = query.order_by(batches.c.created_at.desc(), batches.c.id.desc())
            rows = (await connection.execute(query.limit(limit + 1))).all()
        found = [_batch(row) for row in rows]
        return Page([{"batch": batch} for batch in found[:limit]], has_more=len(found) > limit)

    async def request_cancel(self, batch_id: str, owner: str) -> StoredBatch | None:
        """A batch still validating or in progress becomes `cancelling` (its runner stops it);
        any other batch is returned as it is."""
        async with self.database.transaction() as connection:
            await connection.execute(
                sa.update(batches)
                .where(
                    batches.c.id == batch_id,
                    batches.c.owner == owner,
                    batches.c.status.in_(("validating", "in_progress")),
                )
                .values(status="cancelling", cancelling_at=time.time())
            )
        return await self.get(batch_id, owner)

    # ------------------------------------------------------------ the runner's side

    async def claim(self, replica: str, lease_s: float) -> StoredBatch | None:
        """The oldest active batch no live replica holds, now held by `replica`."""
        now = time.time()
        async with self.database.transaction() as connection:
            candidates = (
                await connection.execute(
                    sa.select(batches.c.id)
                    .where(
                        batches.c.status.in_(ACTIVE),
                        sa.or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
                    )
                    .order_by(batches.c.created_at)
                    .limit(8)
                )
            ).all()
            for (batch_id,) in candidates:
                taken = await connection.execute(
                    sa.update(batches)
                    .where(
                        batches.c.id == batch_id,
                        batches.c.status.in_(ACTIVE),
                        sa.or_(batches.c.lease_until.is_(None), batches.c.lease_until < now),
                    )
                    .values(lease_owner=replica, lease_until=now + lease_s)
                )
                if taken.rowcount == 1:
                    row = (
                        await connection.execute(sa.select(batches).where(batches.c.id == batch_id))
                    ).one()
                    return _batch(row)
        return None

    async def heartbeat(self, batch_id: str, replica: str, lease_s: float) -> StoredBatch:
        """Renew the lease; the batch as it is now (a client may have cancelled it)."""
        async with self.database.transaction() as connection:
            await _renew(connection, batch_id, replica, lease_s)
            row = (
                await connection.execute(sa.select(batches).where(batches.c.id == batch_id))
            ).one()
        return _batch(row)

    async def release(self, batch_id: str, replica: str) -> None:
        """Give the lease up (the batch stays as it is, for any replica to go on with)."""
        async with self.database.transaction() as connection:
            await connection.execute(
                sa.update(batches)
                .where(batches.c.id == batch_id, batches.c.lease_owner == replica)
                .values(lease_owner=None, lease_until=None)
            )

    async def start(self, batch: StoredBatch, replica: str, lease_s: float, total: int) -> None:
        """validating -> in_progress, its output and error files made and its lines counted
        (nothing, if a client cancelled it meanwhile)."""
        async with self.database.transaction() as connection:
            await _renew(connection, batch.id, replica, lease_s)
            started = await connection.execute(
                sa.update(batches)
                .where(batches.c.id == batch.id, batches.c.status == "validating")
                .values(status="in_progress", in_progress_at=time.time(), total=total)
            )
            if started.rowcount != 1:
                return
            made = {
                column: await self.files.create_output(
                    connection,
                    owner=batch.owner,
                    purpose="batch_output",
                    filename=f"{batch.id}_{kind}.jsonl",
                )
                for column, kind in (("output_file_id", "output"), ("error_file_id", "error"))
            }
            await connection.execute(
                sa.update(batches)
                .where(batches.c.id == batch.id)
                .values({column: stored.id for column, stored in made.items()})
            )

    async def done_lines(self, batch: StoredBatch) -> set[int]:
        """The input line numbers already written to the output or error file."""
        ids = [i for i in (batch.output_file_id, batch.error_file_id) if i is not None]
        async with self.database.transaction() as connection:
            rows = await connection.execute(
                sa.select(file_chunks.c.seq).where(file_chunks.c.file_id.in_(ids))
            )
            return {seq for (seq,) in rows}

    async def record(
        self, batch: StoredBatch, replica: str, *, line: int, text: bytes, failed: bool
    ) -> bool:
        """Write one finished line and count it, if this replica still holds the batch (else
        LeaseLostError, nothing written). False: that line was already written."""
        file_id = batch.error_file_id if failed else batch.output_file_id
        assert file_id is not None
        counter = batches.c.failed if failed else batches.c.completed
        try:
            async with self.database.transaction() as connection:
                if not await self.files.append_line(connection, file_id, line, text):
                    return False
                counted = await connection.execute(
                    sa.update(batches)
                    .where(batches.c.id == batch.id, batches.c.lease_owner == replica)
                    .values({counter: counter + 1})
                )
                if counted.rowcount != 1:
                    raise LeaseLostError(batch.id)  # rolls the line back with the transaction
        except sa.exc.IntegrityError:
            return False  # written at the same moment by a replica that held it before
        return True

    async def finish(
        self,
        batch: StoredBatch,
        replica: str,
        status: str,
        *,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        """The batch ends as `status` (completed, failed, expired, cancelled), its lease let
        go; with `finalizing_at` on the way to completed."""
        now = time.time()
        values: dict[str, Any] = {
            "status": status,
            f"{status}_at": now,
            "lease_owner": None,
            "lease_until": None,
        }
        if status == "completed":
            values["finalizing_at"] = now
        if errors is not None:
            values["errors"] = errors
        async with self.database.transaction() as connection:
            ended = await connection.execute(
                sa.update(batches)
                .where(batches.c.id == batch.id, batches.c.lease_owner == replica)
                .values(**values)
            )
            if ended.rowcount != 1:
                raise LeaseLostError(batch.id)

    async def counts_by_status(self) -> dict[str, int]:
        async with self.database.transaction(quiet=True) as connection:
            rows = await connection.execute(
                sa.select(batches.c.status, sa.func.count()).group_by(batches.c.status)
            )
            counts: dict[str, int] = {str(status): int(count) for status, count in rows}
        return counts


async def _renew(connection: AsyncConnection, batch_id: str, replica: str, lease_s: float) -> None:
    renewed = await connection.execute(
        sa.update(batches)
        .where(batches.c.id == batch_id, batches.c.lease_owner == replica)
        .values(lease_until=time.time() + lease_s)
    )
    if renewed.rowcount != 1:
        raise LeaseLostError(batch_id)
