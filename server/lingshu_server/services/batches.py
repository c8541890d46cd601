"""The Batch API: batches created, read, listed and cancelled by their owner; the runner
(services/batch_runner.py) does the work."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from lingshu_server.core import request_context
from lingshu_server.core.errors import ConflictError, InvalidRequestError, NotFoundError
from lingshu_server.protocol.batches import (
    BatchCreateRequest,
    BatchErrors,
    BatchList,
    BatchObject,
    BatchStatus,
    RequestCounts,
    window_seconds,
)
from lingshu_server.services.request_records import current_owner, note_stored
from lingshu_server.storage.batch_store import BatchStore, Caller, StoredBatch
from lingshu_server.storage.file_store import FileStore

CANCELLABLE = ("validating", "in_progress", "cancelling", "cancelled")


class BatchService:
    def __init__(self, store: BatchStore, files: FileStore, *, wake: Callable[[], None]):
        self._store = store
        self._files = files
        self._wake = wake  # the runner: look for work now

    async def create(self, request: BatchCreateRequest) -> BatchObject:
        owner = current_owner()
        stored = await self._files.get(request.input_file_id, owner)
        if stored is None:
            raise InvalidRequestError(
                f"No file found with id '{request.input_file_id}'.", param="input_file_id"
            )
        if stored.purpose != "batch":
            raise InvalidRequestError(
                f"The file {stored.id} has purpose '{stored.purpose}'; a batch reads a file "
                "uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        if stored.batch_endpoint != request.endpoint:
            raise InvalidRequestError(
                f"The file's lines call {stored.batch_endpoint}, not the batch's endpoint "
                f"{request.endpoint}.",
                param="endpoint",
            )
        batch = await self._store.create(
            _caller(owner),
            endpoint=request.endpoint,
            input_file_id=stored.id,
            completion_window=request.completion_window,
            window_s=window_seconds(request.completion_window),
            metadata=request.metadata,
        )
        note_stored("created", batch.id)
        self._wake()
        return batch_object(batch)

    async def retrieve(self, batch_id: str) -> BatchObject:
        batch = await self._store.get(batch_id, current_owner())
        if batch is None:
            raise _missing(batch_id)
        note_stored("read", batch.id)
        return batch_object(batch)

    async def list(self, *, after: str | None, limit: int) -> BatchList:
        page = await self._store.listing(current_owner(), after=after, limit=limit)
        data = [batch_object(item["batch"]) for item in page.data]
        return BatchList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=page.has_more,
        )

    async def cancel(self, batch_id: str) -> BatchObject:
        batch = await self._store.request_cancel(batch_id, current_owner())
        if batch is None:
            raise _missing(batch_id)
        if batch.status not in CANCELLABLE:
            raise ConflictError(
                f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id"
            )
        note_stored("cancelled", batch.id)
        self._wake()
        return batch_object(batch)


def _caller(owner: str) -> Caller:
    ctx = request_context.get()
    if ctx is None:
        return Caller(owner)
    return Caller(owner, tenant=ctx.tenant, key_id=ctx.key_id, identity=ctx.identity)


def _missing(batch_id: str) -> NotFoundError:
    return NotFoundError(f"No batch found with id '{batch_id}'.", param="batch_id")


def _time(seconds: float | None) -> int | None:
    return int(seconds) if seconds is not None else None


def batch_object(batch: StoredBatch) -> BatchObject:
    """The batch as OpenAI shows it."""
    return BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        errors=BatchErrors.model_validate({"data": batch.errors}) if batch.errors else None,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=cast(BatchStatus, batch.status),  # written only from BatchStatus values
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=int(batch.created_at),
        in_progress_at=_time(batch.in_progress_at),
        expires_at=_time(batch.expires_at),
        finalizing_at=_time(batch.finalizing_at),
        completed_at=_time(batch.completed_at),
        failed_at=_time(batch.failed_at),
        expired_at=_time(batch.expired_at),
        cancelling_at=_time(batch.cancelling_at),
        cancelled_at=_time(batch.cancelled_at),
        request_counts=RequestCounts(
            total=batch.total, completed=batch.completed, failed=batch.failed
        ),
        metadata=batch.metadata,
    )
