"""Quotas shared by every replica, counted in the stored-state database (`--database-url`).

Admitting a request reads the subject's buckets with their rows locked (`SELECT ... FOR UPDATE`
on PostgreSQL; SQLite's transactions take its write lock at their start), refills them to the
wall clock, decides with the same rules as the local counter (core/quotas.py `Buckets`) and
writes them back, in one transaction. Tokens are charged as a stream produces them, so they
are added up in memory and written every FLUSH_INTERVAL_S, at shutdown, and with the subject's
next admission: a generation step never waits for the database. Requests at once stay per
replica (a replica that crashes must not leave slots taken in a shared count).

While the database is away, counting falls back to this replica's memory (fail open: a
database outage does not stop the API; /health reports it). The fallback is logged once when
it starts and once when the database is back; requests and tokens counted in that time stay in
the replica's own count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from lingshu_server.core.errors import (
    QuotaExceededError,
    StorageFullError,
    StorageUnavailableError,
)
from lingshu_server.core.quotas import Buckets, LocalQuotaCounter, QuotaState, TenantQuota
from lingshu_server.storage.database import Database
from lingshu_server.storage.tables import quota_buckets

logger = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
AWAY = (StorageUnavailableError, StorageFullError)


@dataclass
class _Charge:
    quota: TenantQuota
    tokens: int


class DatabaseQuotaCounter:
    """A QuotaCounter whose buckets live in the database; `start()` the background flush with
    the app and `aclose()` it at shutdown (a last flush)."""

    def __init__(
        self,
        database: Database,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ):
        self.database = database
        self.clock = clock
        self.flush_interval_s = flush_interval_s
        # this replica's requests at once, and its count while the database is away
        self.local = LocalQuotaCounter()
        self._pending: dict[str, _Charge] = {}
        self._away = False
        self._closing = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    # ---------- QuotaCounter ----------

    async def admit(self, subject: str, quota: TenantQuota) -> QuotaState:
        if self._away:
            return self.local.admit_now(subject, quota)
        slot_free = self.local.slots.take(subject, quota)
        held = self._pending.pop(subject, None)
        try:
            outcome = await self._admit_shared(subject, quota, held, slot_free=slot_free)
        except BaseException as exc:
            if slot_free:
                self.local.slots.release(subject)
            if held is not None:  # not written: still to be counted
                self._hold(subject, held.quota, held.tokens)
            if isinstance(exc, AWAY):
                self._went_away()
                return self.local.admit_now(subject, quota)
            raise
        if isinstance(outcome, QuotaExceededError):
            if slot_free:
                self.local.slots.release(subject)
            raise outcome
        return outcome

    def charge(self, subject: str, quota: TenantQuota, tokens: int) -> None:
        if tokens <= 0:
            return
        if self._away:
            self.local.charge(subject, quota, tokens)
        else:
            self._hold(subject, quota, tokens)

    def release(self, subject: str) -> None:
        self.local.release(subject)

    # ---------- the background flush ----------

    def start(self) -> None:
        self._closing.clear()
        self._flusher = asyncio.create_task(self._flush_every_interval())

    async def aclose(self) -> None:
        """Stop the background flush after a last one (the requests have finished by now)."""
        self._closing.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None

    async def flush(self) -> None:
        """Write the tokens charged since the last flush; while the database is away, see
        whether it is back."""
        if not self._pending and not self._away:
            return
        taken, self._pending = self._pending, {}
        try:
            await self._write_charges(taken)
        except BaseException as exc:
            for subject, held in taken.items():
                self._hold(subject, held.quota, held.tokens)
            if isinstance(exc, AWAY):
                self._went_away()
                return
            raise
        if self._away:
            self._away = False
            logger.info(
                "quotas shared again",
                extra={"fields": {"database": self.database.described}},
            )

    async def _flush_every_interval(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # a bug in a query: say so, drop these charges, keep flushing
                logger.exception("quota flush failed")
                self._pending.clear()

    # ---------- internals ----------

    def _hold(self, subject: str, quota: TenantQuota, tokens: int) -> None:
        held = self._pending.get(subject)
        self._pending[subject] = _Charge(quota, tokens + (held.tokens if held else 0))

    def _went_away(self) -> None:
        """Count here from now on; what was waiting to be written is counted here too."""
        if not self._away:
            self._away = True
            logger.warning(
                "quotas counted in this replica while the database is unavailable",
                extra={"fields": {"database": self.database.described}},
            )
        for subject, held in self._pending.items():
            self.local.charge(subject, held.quota, held.tokens)
        self._pending.clear()

    async def _admit_shared(
        self, subject: str, quota: TenantQuota, held: _Charge | None, *, slot_free: bool
    ) -> QuotaState | QuotaExceededError:
        """Admit (or refuse) in one transaction, with the subject's tokens not yet written."""
        async with self.database.transaction(quiet=True) as connection:
            buckets = (await self._lock(connection, {subject: quota}))[subject]
            if held is not None:
                buckets.charge(held.tokens)
            outcome: QuotaState | QuotaExceededError
            try:
                outcome = buckets.admit(slot_free=slot_free)
            except QuotaExceededError as refusal:
                outcome = refusal  # the charge is written all the same
            await self._store(connection, {subject: buckets})
        return outcome

    async def _write_charges(self, taken: Mapping[str, _Charge]) -> None:
        async with self.database.transaction(quiet=True) as connection:
            if not taken:  # only asking whether the database is back
                await connection.execute(sa.text("SELECT 1"))
                return
            subjects = await self._lock(connection, {s: held.quota for s, held in taken.items()})
            for subject, held in taken.items():
                subjects[subject].charge(held.tokens)
            await self._store(connection, subjects)

    async def _lock(
        self, connection: AsyncConnection, quotas: Mapping[str, TenantQuota]
    ) -> dict[str, Buckets]:
        """The subjects' buckets refilled to now, their rows locked until the transaction
        ends; a missing row is made full first (by whichever replica gets there first)."""
        stored = await _select_for_update(connection, quotas)
        now = self.clock()
        missing = [
            {"subject": subject, "rate": name, "level": float(capacity), "updated": now}
            for subject, quota in quotas.items()
            for name, capacity, _period in quota.rates()
            if (subject, name) not in stored
        ]
        if missing:
            insert = postgresql.insert if self.database.kind == "postgresql" else sqlite.insert
            await connection.execute(insert(quota_buckets).on_conflict_do_nothing(), missing)
            stored = await _select_for_update(connection, quotas)
        return {
            subject: Buckets.restore(
                quota,
                now,
                {name: stored[(subject, name)] for name, _capacity, _period in quota.rates()},
            )
            for subject, quota in quotas.items()
        }

    @staticmethod
    async def _store(connection: AsyncConnection, subjects: Mapping[str, Buckets]) -> None:
        rows = [
            {"b_subject": subject, "b_rate": name, "b_level": bucket.level, "b_at": bucket.updated}
            for subject, buckets in subjects.items()
            for name, bucket in buckets.rates.items()
        ]
        if rows:
            await connection.execute(_UPDATE, rows)


_UPDATE = (
    sa.update(quota_buckets)
    .where(
        quota_buckets.c.subject == sa.bindparam("b_subject"),
        quota_buckets.c.rate == sa.bindparam("b_rate"),
    )
    .values(level=sa.bindparam("b_level"), updated=sa.bindparam("b_at"))
)


async def _select_for_update(
    connection: AsyncConnection, quotas: Mapping[str, TenantQuota]
) -> dict[tuple[str, str], tuple[float, float]]:
    """(subject, rate) -> (level, updated), rows locked in one order (subject, rate) so that
    replicas flushing many subjects at once cannot deadlock."""
    table = quota_buckets.c
    rows = await connection.execute(
        sa.select(table.subject, table.rate, table.level, table.updated)
        .where(table.subject.in_(list(quotas)))
        .order_by(table.subject, table.rate)
        .with_for_update()
    )
    return {(subject, rate): (level, updated) for subject, rate, level, updated in rows}
