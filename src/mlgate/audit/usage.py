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
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from mlgate.auth.principal import Principal
from mlgate.context import model_var
from mlgate.dataplane.types import InferenceEvent
from mlgate.db.engine import dialect_insert
from mlgate.db.models import UsageCounter, UsageFlush

log = logging.getLogger("mlgate.audit.usage")

#: (principal kind, key id, user id, tier, model): cheap to hash, no string to build.
CounterKey = tuple[str, int | None, int | None, str, str]
_REQUESTS, _ROWS, _ERRORS, _REFUSALS = range(4)
_FIELDS = ("requests", "rows", "errors", "refusals")
_DAY_S = 86_400
#: Ids of applied flushes are kept this long: a batch retried later than that (after a
#: database outage of more than a week) could be added twice.
FLUSH_IDS_KEPT_DAYS = 7
_FORGET_EVERY_S = 3600.0


class UsageMeter:
    """Counts in memory (an observer of the data plane), flushes to the database."""

    def __init__(self, engine: AsyncEngine, *, flush_interval_s: float) -> None:
        self.engine = engine
        self.flush_interval_s = flush_interval_s
        self._days: dict[date, dict[CounterKey, list[int]]] = {}
        self._lock = asyncio.Lock()
        self._today: dict[CounterKey, list[int]] = {}
        self._day_start = self._day_end = 0.0
        self._unconfirmed: list[tuple[str, list[dict[str, Any]]]] = []
        """Batches of increments not known to be added yet, with their flush ids."""
        self._last_forget = -_FORGET_EVERY_S

    def _counts(self, timestamp: float) -> dict[CounterKey, list[int]]:
        """The counters of ``timestamp``'s UTC day (today's are at hand)."""
        if self._day_start <= timestamp < self._day_end:
            return self._today
        start = timestamp - timestamp % _DAY_S
        day = datetime.fromtimestamp(start, UTC).date()
        counts = self._days.setdefault(day, {})
        if timestamp >= self._day_end:  # a new day (not a late event of an old one)
            self._today, self._day_start, self._day_end = counts, start, start + _DAY_S
        return counts

    def observe(self, event: InferenceEvent) -> None:
        """One answered request (shadow scoring is not the caller's usage)."""
        principal = event.principal
        if event.shadow or principal is None:
            return
        ts = event.timestamp
        counts = self._today if self._day_start <= ts < self._day_end else self._counts(ts)
        key = (principal.kind, principal.key_id, principal.user_id, principal.tier, event.model)
        counter = counts.get(key)
        if counter is None:
            counter = counts[key] = [0, 0, 0, 0]
        counter[_REQUESTS] += 1
        counter[_ROWS] += event.rows

    def count_error(self, principal: Principal, model: str | None, *, refused: bool) -> None:
        """One request answered with an error (``refused``: a rate-limit 429)."""
        counts = self._counts(time.time())
        key = (principal.kind, principal.key_id, principal.user_id, principal.tier, model or "")
        counter = counts.get(key)
        if counter is None:
            counter = counts[key] = [0, 0, 0, 0]
        counter[_REFUSALS if refused else _ERRORS] += 1

    @property
    def pending(self) -> int:
        """Counters not written yet."""
        waiting = sum(len(rows) for _, rows in self._unconfirmed)
        return waiting + sum(len(counts) for counts in self._days.values())

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    def _take(self) -> list[dict[str, Any]]:
        """The counters so far as rows to add (one per day, principal, tier, model)."""
        days, self._days = self._days, {}
        self._today, self._day_start, self._day_end = {}, 0.0, 0.0
        merged: dict[tuple[date, str, str, str], dict[str, Any]] = {}
        for day, counts in days.items():
            for (kind, key_id, user_id, tier, model), values in counts.items():
                principal = _log_id(kind, key_id, user_id)
                row = merged.get((day, principal, tier, model))
                if row is None:
                    row = merged[(day, principal, tier, model)] = {
                        "day": day,
                        "principal": principal,
                        "tier": tier,
                        "model": model,
                        "user_id": user_id,
                        **dict.fromkeys(_FIELDS, 0),
                    }
                for name, value in zip(_FIELDS, values, strict=True):
                    row[name] += value
        return list(merged.values())

    async def flush(self) -> bool:
        """Add this worker's counts to the database; False (counts kept) on failure.

        Each batch of increments carries an id recorded in the same transaction: a batch
        whose commit succeeded but whose acknowledgement was lost (the connection died)
        is recognised when retried and not added twice.
        """
        async with self._lock:
            rows = self._take()
            if rows:
                self._unconfirmed.append((uuid.uuid4().hex, rows))
            while self._unconfirmed:
                flush_id, batch = self._unconfirmed[0]
                try:
                    await self._add(flush_id, batch)
                except Exception as exc:
                    log.warning(
                        "usage counts not written; kept for the next flush",
                        extra={
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                            "pending": self.pending,
                        },
                    )
                    return False
                self._unconfirmed.pop(0)
            return True

    async def _add(self, flush_id: str, rows: list[dict[str, Any]]) -> None:
        dialect = self.engine.dialect.name
        insert = dialect_insert(dialect)
        add = insert(UsageCounter)
        add = add.on_conflict_do_update(
            index_elements=["day", "principal", "tier", "model"],
            set_={
                "user_id": add.excluded.user_id,
                **{name: getattr(UsageCounter, name) + add.excluded[name] for name in _FIELDS},
            },
        )
        mark = (
            insert(UsageFlush)
            .values(flush_id=flush_id, created_at=datetime.now(UTC))
            .on_conflict_do_nothing(index_elements=["flush_id"])
            .returning(UsageFlush.flush_id)
        )
        async with self.engine.begin() as conn:
            if (await conn.execute(mark)).first() is None:
                return  # added by an attempt whose answer was lost
            await conn.execute(add, rows)
            now = time.monotonic()
            if now - self._last_forget >= _FORGET_EVERY_S:
                self._last_forget = now
                horizon = datetime.now(UTC) - timedelta(days=FLUSH_IDS_KEPT_DAYS)
                await conn.execute(delete(UsageFlush).where(UsageFlush.created_at < horizon))

    async def close(self) -> None:
        if not await self.flush():
            log.error("usage counts lost at shutdown", extra={"pending": self.pending})


def _log_id(kind: str, key_id: int | None, user_id: int | None) -> str:
    """:attr:`Principal.log_id` from its parts (built at flush, not per request)."""
    if kind == "api_key":
        return f"key:{key_id}"
    if kind == "user":
        return f"user:{user_id}"
    return "anonymous"


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
