"""Usage counters: requests, rows, errors and rate-limit refusals per principal, tier,
model and UTC day - what a team needs to bill callers or size tiers.

Requests and rows come from the data plane's events (:meth:`UsageMeter.observe`);
errors and refusals produce no event, so the error handlers call
:func:`count_error_response`. Both only add to a dict in memory; a background task adds
the increments to the database (upserts that add, so several workers' counts sum up)
every ``usage_flush_interval_s``. A failed flush puts its increments back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Select, and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from mlgate.auth.principal import Principal
from mlgate.context import model_var
from mlgate.dataplane.types import InferenceEvent
from mlgate.db.models import UsageCounter

log = logging.getLogger("mlgate.audit.usage")

#: (day, principal log id, tier, model, owner user id)
UsageKey = tuple[date, str, str, str, int | None]
_REQUESTS, _ROWS, _ERRORS, _REFUSALS = range(4)
_DAY_S = 86_400


class UsageMeter:
    """Counts in memory (an observer of the data plane), flushes to the database."""

    def __init__(self, engine: AsyncEngine, *, flush_interval_s: float) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self._counts: dict[UsageKey, list[int]] = {}
        self._lock = asyncio.Lock()
        self._day = date(1970, 1, 1)
        self._day_ends = 0.0

    def _today(self, timestamp: float) -> date:
        # The date changes once a day: compare with the day's end instead of converting
        # every timestamp.
        if not self._day_ends - _DAY_S <= timestamp < self._day_ends:
            start = timestamp - timestamp % _DAY_S
            self._day = datetime.fromtimestamp(start, UTC).date()
            self._day_ends = start + _DAY_S
        return self._day

    def _counter(self, principal: Principal, model: str, timestamp: float) -> list[int]:
        key = (self._today(timestamp), principal.log_id, principal.tier, model, principal.user_id)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = [0, 0, 0, 0]
        return counter

    def observe(self, event: InferenceEvent) -> None:
        """One answered request (shadow scoring is not the caller's usage)."""
        if event.shadow or event.principal is None:
            return
        counter = self._counter(event.principal, event.model, event.timestamp)
        counter[_REQUESTS] += 1
        counter[_ROWS] += event.rows

    def count_error(self, principal: Principal, model: str | None, *, refused: bool) -> None:
        """One request answered with an error (``refused``: a rate-limit 429)."""
        counter = self._counter(principal, model or "", time.time())
        counter[_REFUSALS if refused else _ERRORS] += 1

    @property
    def pending(self) -> int:
        """Counters not written yet."""
        return len(self._counts)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    async def flush(self) -> bool:
        """Add this worker's counts to the database; False (counts kept) on failure."""
        async with self._lock:
            counts, self._counts = self._counts, {}
            if not counts:
                return True
            try:
                await self._upsert(counts)
            except Exception as exc:
                for key, values in counts.items():
                    counter = self._counts.setdefault(key, [0, 0, 0, 0])
                    for i, value in enumerate(values):
                        counter[i] += value
                log.warning(
                    "usage counts not written; kept for the next flush",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300], "pending": len(counts)},
                )
                return False
            return True

    async def _upsert(self, counts: dict[UsageKey, list[int]]) -> None:
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(UsageCounter)
        stmt = stmt.on_conflict_do_update(
            index_elements=["day", "principal", "tier", "model"],
            set_={
                "user_id": stmt.excluded.user_id,
                **{
                    name: getattr(UsageCounter, name) + stmt.excluded[name]
                    for name in ("requests", "rows", "errors", "refusals")
                },
            },
        )
        rows = [
            {
                "day": day,
                "principal": principal,
                "tier": tier,
                "model": model,
                "user_id": user_id,
                "requests": values[_REQUESTS],
                "rows": values[_ROWS],
                "errors": values[_ERRORS],
                "refusals": values[_REFUSALS],
            }
            for (day, principal, tier, model, user_id), values in counts.items()
        ]
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def close(self) -> None:
        if not await self.flush():
            log.error("usage counts lost at shutdown", extra={"pending": self.pending})


def count_error_response(request: Request, status: int) -> None:
    """Count an error answer in its caller's usage (a 429 as a refusal); called by the
    error handlers. Callers not authenticated yet are not counted."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        return
    state = getattr(request.app.state, "mlgate", None)
    meter = getattr(getattr(state, "audit", None), "usage", None)
    if meter is not None:
        meter.count_error(principal, model_var.get(), refused=status == 429)


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    user_id: int | None = None
    """Only this user's principals (the user and their keys)."""
    principal: str | None = None
    tier: str | None = None
    model: str | None = None
    since: date | None = None
    until: date | None = None
    """Inclusive."""


def _filtered(query: UsageQuery, stmt: Select[Any]) -> Select[Any]:
    t = UsageCounter
    conditions = []
    if query.user_id is not None:
        conditions.append(t.user_id == query.user_id)
    if query.principal is not None:
        conditions.append(t.principal == query.principal)
    if query.tier is not None:
        conditions.append(t.tier == query.tier)
    if query.model is not None:
        conditions.append(t.model == query.model)
    if query.since is not None:
        conditions.append(t.day >= query.since)
    if query.until is not None:
        conditions.append(t.day <= query.until)
    return stmt.where(and_(*conditions)) if conditions else stmt


_FIELDS = ("requests", "rows", "errors", "refusals")


def _counter_columns() -> tuple[Any, ...]:
    t = UsageCounter
    return (t.requests, t.rows, t.errors, t.refusals)


async def read_usage(engine: AsyncEngine, query: UsageQuery) -> dict[str, Any]:
    """Rows per day, principal, tier and model (newest day first), and their totals."""
    t = UsageCounter
    stmt = _filtered(
        query, select(t.day, t.principal, t.user_id, t.tier, t.model, *_counter_columns())
    ).order_by(t.day.desc(), t.principal, t.tier, t.model)
    async with engine.connect() as conn:
        rows: Sequence[Any] = (await conn.execute(stmt)).all()
    items = [
        {
            "day": row.day.isoformat(),
            "principal": row.principal,
            "user_id": row.user_id,
            "tier": row.tier,
            "model": row.model or None,
            **{name: int(getattr(row, name)) for name in _FIELDS},
        }
        for row in rows
    ]
    totals = {name: sum(item[name] for item in items) for name in _FIELDS}
    return {"usage": items, "totals": totals}
