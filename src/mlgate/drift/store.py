"""Drift histograms in the database: counts added by every worker, summed on read.

One row per (model, version, window start, feature, bin). A worker adds its counts
with an upsert that adds (``ON CONFLICT DO UPDATE SET count = count + excluded.count``,
on SQLite and PostgreSQL alike), so concurrent workers never overwrite each other and
a report sums whatever every worker has flushed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.db.engine import dialect_insert
from mlgate.db.models import DriftCount


@dataclass(frozen=True, slots=True)
class CountRow:
    model: str
    version: str
    window_start: int
    feature: str
    bin: int
    count: int


class DriftStore:
    """Adds and sums histogram counts."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = dialect_insert(engine.dialect.name)

    async def add(self, rows: list[CountRow]) -> None:
        """Add ``rows`` to the stored counts, in one transaction."""
        if not rows:
            return
        statement = self._insert(DriftCount)
        statement = statement.on_conflict_do_update(
            index_elements=["model", "version", "window_start", "feature", "bin"],
            set_={"count": DriftCount.count + statement.excluded.count},
        )
        params = [
            {
                "model": r.model,
                "version": r.version,
                "window_start": r.window_start,
                "feature": r.feature,
                "bin": r.bin,
                "count": r.count,
            }
            for r in rows
        ]
        async with self.engine.begin() as conn:
            await conn.execute(statement, params)

    async def totals(
        self, model: str, version: str, since: int
    ) -> tuple[dict[str, dict[int, int]], list[int]]:
        """Per feature, per bin, the count summed over windows starting at ``since`` or
        later; and the window starts that held counts."""
        c = DriftCount
        where = (c.model == model) & (c.version == version) & (c.window_start >= since)
        query = select(c.feature, c.bin, func.sum(c.count)).where(where).group_by(c.feature, c.bin)
        windows = select(c.window_start).where(where).distinct().order_by(c.window_start)
        counts: dict[str, dict[int, int]] = defaultdict(dict)
        async with self.engine.connect() as conn:
            for feature, bin_, total in await conn.execute(query):
                counts[feature][int(bin_)] = int(total)
            starts = [int(w) for (w,) in await conn.execute(windows)]
        return dict(counts), starts

    async def prune(self, before: int) -> int:
        """Delete windows that started before ``before``; how many rows went."""
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(DriftCount).where(DriftCount.window_start < before))
        return int(result.rowcount or 0)
