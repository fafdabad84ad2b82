"""Retention: prediction records (and their feedback) older than ``retention_days`` are
deleted in the background, a batch of rows per short transaction, so that a large
backlog never holds one long lock (nor fills PostgreSQL's WAL in one statement).

Age is the request's time encoded in the prediction id, so "older than" is a range of the
primary key. Every worker runs a pruner; they may overlap, deleting the same old rows
(harmless: a DELETE of rows already gone deletes nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.keys import key_floor
from mlgate.db.models import PredictionFeedback, PredictionRequest, PredictionRow

log = logging.getLogger("mlgate.audit.retention")


class Pruner:
    """Deletes audit records older than the retention period."""

    def __init__(
        self, engine: AsyncEngine, *, retention_days: float, batch: int, interval_s: float
    ) -> None:
        self.engine = engine
        self.retention_s = retention_days * 86_400
        self.batch = batch
        self.interval_s = interval_s
        self.deleted = 0

    @property
    def enabled(self) -> bool:
        return self.retention_s > 0

    async def prune(self, now: float | None = None) -> int:
        """Delete what is older than the retention period at ``now``; returns how many
        predictions (served and shadow records) were deleted."""
        if not self.enabled:
            return 0
        cutoff = key_floor((time.time() if now is None else now) - self.retention_s)
        deleted = 0
        # Rows first: a row never outlives its request record (the view joins them).
        for table, columns in (
            (
                PredictionRow,
                (PredictionRow.request_key, PredictionRow.row_index, PredictionRow.shadow),
            ),
            (PredictionRequest, (PredictionRequest.request_key, PredictionRequest.shadow)),
            (PredictionFeedback, (PredictionFeedback.request_key, PredictionFeedback.row_index)),
        ):
            oldest = select(*columns).where(columns[0] < cutoff).limit(self.batch)
            stmt = delete(table).where(tuple_(*columns).in_(oldest))
            while True:
                async with self.engine.begin() as conn:
                    count = (await conn.execute(stmt)).rowcount
                if table is PredictionRow:
                    deleted += count
                if count < self.batch:
                    break
                await asyncio.sleep(0)  # let requests in between batches
        self.deleted += deleted
        if deleted:
            log.info("audit records pruned", extra={"deleted": deleted, "before": cutoff})
        return deleted

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception as exc:
                log.warning(
                    "audit retention pruning failed; retrying later",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300]},
                )
            await asyncio.sleep(self.interval_s)
