"""The batch runner: each replica claims one active batch at a time (a lease in the database,
renewed by heartbeat) and runs its lines, a bounded number at once, at the batch priority.

Nothing is lost and nothing is done twice: a line's output is written, with its count, only
while this replica holds the lease, and a batch taken up again (after a restart, or by another
replica when this one died) runs only the lines not yet written. A batch ends `completed` only
when every line is written; `cancelled` when a client cancels it (no new line starts within a
heartbeat, finished lines stay); `expired` when its completion window ends, the lines never run
written to its error file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lingshu_server.core.errors import StorageFullError, StorageUnavailableError
from lingshu_server.core.metrics import BATCH_STATUSES, Metrics
from lingshu_server.protocol.batches import output_line
from lingshu_server.services.batch_requests import BatchLines, LineAnswer, RetryLineError
from lingshu_server.storage.batch_store import BatchStore, LeaseLostError, StoredBatch
from lingshu_server.storage.file_store import FileStore

logger = logging.getLogger(__name__)

HEARTBEAT_S = 1.0  # a running batch's lease renewed and its status read: a cancel is seen within
POLL_S = 2.0  # how often an idle replica looks for a batch to run
# A line the server could not run now (overloaded, engine or database away), tried again after
# these pauses; then it is written with the error it got.
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
STORAGE_ERRORS = (StorageUnavailableError, StorageFullError)
EXPIRED = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@dataclass
class _Stop:
    """Why a batch's run stops early: cancelled, expired, lost (another replica holds it),
    storage (the database cannot take its lines now)."""

    reason: str | None = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.event.set()


class BatchRunner:
    def __init__(
        self,
        *,
        store: BatchStore,
        files: FileStore,
        lines: BatchLines,
        max_in_flight: int,
        lease_s: float,
        metrics: Metrics,
    ):
        self.replica = f"replica-{uuid.uuid4().hex[:16]}"
        self._store = store
        self._files = files
        self._lines = lines
        self._max_in_flight = max_in_flight
        self._lease_s = lease_s
        self._metrics = metrics
        self._wake = asyncio.Event()
        self.in_flight = 0  # lines generating or waiting for the engine now
        self.pending = 0  # lines of the running batch not yet started

    def wake(self) -> None:
        """A batch was created or cancelled: look now rather than at the next poll."""
        self._wake.set()

    async def run_forever(self, has_state: Callable[[], bool]) -> None:
        """Claim and run batches until cancelled; `has_state` says whether there is a database
        to look in yet (the embedded one is made on first use)."""
        while True:
            ran = False
            try:
                if has_state():
                    await self._count_batches()
                    batch = await self._store.claim(self.replica, self._lease_s)
                    if batch is not None:
                        ran = True
                        await self._run(batch)
            except asyncio.CancelledError:
                raise
            except (*STORAGE_ERRORS, LeaseLostError):
                pass  # said once by the database; the batch is taken up again later
            except Exception as exc:
                logger.error("batch runner error", extra={"fields": {"error": type(exc).__name__}})
            if not ran:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_S)

    async def _count_batches(self) -> None:
        counts = await self._store.counts_by_status()
        for status in BATCH_STATUSES:
            self._metrics.batches.labels(status).set(counts.get(status, 0))

    async def _run(self, batch: StoredBatch) -> None:
        logger.info(
            "batch claimed",
            extra={"fields": {"batch": batch.id, "status": batch.status, "replica": self.replica}},
        )
        try:
            if batch.status == "validating":
                started = await self._start(batch)
                if started is None:
                    return
                batch = started
            if batch.status == "cancelling":
                await self._end(batch, "cancelled")
            elif time.time() >= batch.expires_at:
                await self._expire(batch)
            else:
                await self._run_lines(batch)
        except asyncio.CancelledError:
            # the server is stopping: the batch is let go at once, for whoever starts next
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._release(batch)), 2.0)
            raise
        finally:
            self.pending = 0

    async def _release(self, batch: StoredBatch) -> None:
        await self._store.release(batch.id, self.replica)

    async def _start(self, batch: StoredBatch) -> StoredBatch | None:
        """validating -> in_progress, or failed when its input file is no longer there."""
        stored = await self._files.get(batch.input_file_id, batch.owner)
        if stored is None or stored.batch_endpoint != batch.endpoint:
            await self._end(
                batch,
                "failed",
                errors=[
                    {
                        "code": "invalid_input_file",
                        "message": f"the input file {batch.input_file_id} is gone, or is not "
                        f"a batch file for {batch.endpoint}",
                        "param": "input_file_id",
                        "line": None,
                    }
                ],
            )
            return None
        # a batch file's line count is its requests' (blank lines aside), counted at upload
        await self._store.start(batch, self.replica, self._lease_s, total=stored.line_count)
        return await self._store.get(batch.id)

    async def _end(
        self, batch: StoredBatch, status: str, *, errors: list[dict[str, Any]] | None = None
    ) -> None:
        await self._store.finish(batch, self.replica, status, errors=errors)
        logger.info(
            "batch ended",
            extra={
                "fields": {"batch": batch.id, "status": status, "replica": self.replica},
            },
        )

    async def _heartbeat(self, batch: StoredBatch, stop: _Stop) -> None:
        while stop.reason is None:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                now = await self._store.heartbeat(batch.id, self.replica, self._lease_s)
            except LeaseLostError:
                stop.set("lost")
                return
            except STORAGE_ERRORS:
                continue  # the lease may run out meanwhile: writes then say so
            if now.status == "cancelling":
                stop.set("cancelled")
            elif time.time() >= now.expires_at:
                stop.set("expired")

    async def _run_lines(self, batch: StoredBatch) -> None:
        stop = _Stop()
        done = await self._store.done_lines(batch)
        self.pending = max(0, batch.total - len(done))
        heartbeat = asyncio.create_task(self._heartbeat(batch, stop))
        slots = asyncio.Semaphore(self._max_in_flight)
        running: set[asyncio.Task[None]] = set()
        try:
            async for number, raw in self._files.lines(batch.input_file_id):
                if stop.reason is not None:
                    break
                if number in done:
                    continue
                if not await _slot_or_stop(slots, stop):
                    break
                self.pending = max(0, self.pending - 1)
                task = asyncio.create_task(self._line(batch, number, raw, stop))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
            if stop.reason is not None:
                for task in running:
                    task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        except BaseException:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        finally:
            heartbeat.cancel()
        if stop.reason == "cancelled":
            await self._end(batch, "cancelled")
        elif stop.reason == "expired":
            await self._expire(batch)
        elif stop.reason is None and len(await self._store.done_lines(batch)) >= batch.total:
            await self._end(batch, "completed")
        elif stop.reason != "lost":
            await self._release(batch)  # lines left unwritten: taken up again shortly

    async def _line(self, batch: StoredBatch, number: int, raw: bytes, stop: _Stop) -> None:
        self.in_flight += 1
        try:
            answer = await self._answer(batch, raw)
            text = json.dumps(
                output_line(
                    answer.line_id,
                    answer.custom_id,
                    status_code=answer.status_code,
                    request_id=answer.line_id,
                    body=answer.body,
                )
            ).encode()
            await self._record(batch, number, text, failed=not answer.ok, stop=stop)
        finally:
            self.in_flight -= 1

    async def _answer(self, batch: StoredBatch, raw: bytes) -> LineAnswer:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                return await self._lines.run(batch.endpoint, raw, batch.caller)
            except RetryLineError as exc:
                if delay is None:
                    error = exc.error
                    line = json.loads(raw)
                    return LineAnswer(
                        str(line["custom_id"]),
                        f"batch_req_{uuid.uuid4().hex}",
                        int(error.status),
                        error.body().model_dump(mode="json"),
                    )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _record(
        self, batch: StoredBatch, number: int, text: bytes, *, failed: bool, stop: _Stop
    ) -> None:
        try:
            written = await self._store.record(
                batch, self.replica, line=number, text=text, failed=failed
            )
        except LeaseLostError:
            stop.set("lost")
            return
        except STORAGE_ERRORS:
            stop.set("storage")  # this line runs again when the batch is taken up again
            return
        if written:
            self._metrics.batch_lines.labels("failed" if failed else "completed").inc()

    async def _expire(self, batch: StoredBatch) -> None:
        """The window ended: every line not written goes to the error file as expired."""
        done = await self._store.done_lines(batch)
        async for number, raw in self._files.lines(batch.input_file_id):
            if number in done:
                continue
            text = json.dumps(
                output_line(
                    f"batch_req_{uuid.uuid4().hex}",
                    str(json.loads(raw)["custom_id"]),
                    status_code=None,
                    request_id=None,
                    body=None,
                    error=EXPIRED,
                )
            ).encode()
            if await self._store.record(batch, self.replica, line=number, text=text, failed=True):
                self._metrics.batch_lines.labels("failed").inc()
        await self._end(batch, "expired")


async def _slot_or_stop(slots: asyncio.Semaphore, stop: _Stop) -> bool:
    """Wait for a free slot (True, taken) or for the run to stop (False)."""
    acquire = asyncio.ensure_future(slots.acquire())
    stopped = asyncio.ensure_future(stop.event.wait())
    try:
        await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not acquire.done():
        acquire.cancel()
        return False
    if stop.reason is not None:
        slots.release()
        return False
    return True
