"""Reading the audit log: filtered, cursor-paginated listings and single predictions.

Ownership: a caller sees the predictions made by their user (as a user or with any of
their API keys); admins see all. Someone else's prediction is "not found", exactly like
a prediction that does not exist, so ids cannot be probed.

Listings are newest first, ordered by (request key descending, row ascending): the key
encodes the time, so a page is a range scan of the primary key (or of the per-model and
per-user indexes). The cursor is the id of the last prediction of the previous page.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, false, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.keys import key_floor
from mlgate.db.models import PredictionFeedback, PredictionRecord

P = PredictionRecord
F = PredictionFeedback

_RECORD_COLUMNS = (
    P.request_key,
    P.row_index,
    P.shadow,
    P.created_at,
    P.request_id,
    P.principal,
    P.user_id,
    P.key_id,
    P.model,
    P.version,
    P.protocol,
    P.task,
    P.latency_ms,
    P.device_id,
    P.cache_hit,
    P.input_hash,
    P.predicted_class,
    P.predicted,
    P.confidence,
    P.probabilities,
    P.is_attack,
    P.score,
    P.is_anomaly,
    P.threshold,
    P.calibration_seen,
    P.inputs,
    F.label.label("feedback_label"),
    F.is_anomaly.label("feedback_is_anomaly"),
    F.labelled_by.label("feedback_by"),
    F.updated_at.label("feedback_at"),
)


@dataclass(frozen=True)
class PredictionQuery:
    """Filters of ``GET /v1/predictions``."""

    owner: int | None
    """Only predictions of this user (None: everyone's - admins)."""
    model: str | None = None
    version: str | None = None
    principal: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    predicted_class: str | int | None = None
    is_anomaly: bool | None = None
    is_attack: bool | None = None
    labelled: bool | None = None
    shadow: bool = False
    after: tuple[str, int] | None = None
    """The cursor: (request key, row) of the last prediction already seen."""


def _joined(stmt: Any) -> Any:
    return stmt.outerjoin(F, and_(F.request_key == P.request_key, F.row_index == P.row_index))


def _conditions(query: PredictionQuery) -> list[Any]:
    conditions: list[Any] = [P.shadow == (true() if query.shadow else false())]
    if query.owner is not None:
        conditions.append(P.user_id == query.owner)
    if query.model is not None:
        conditions.append(P.model == query.model)
    if query.version is not None:
        conditions.append(P.version == query.version)
    if query.principal is not None:
        conditions.append(P.principal == query.principal)
    if query.since is not None:
        conditions.append(P.request_key >= key_floor(query.since.timestamp()))
    if query.until is not None:
        conditions.append(P.request_key < key_floor(query.until.timestamp()))
    if isinstance(query.predicted_class, int):
        conditions.append(P.predicted_class == query.predicted_class)
    elif query.predicted_class is not None:
        conditions.append(P.predicted == query.predicted_class)
    if query.is_anomaly is not None:
        conditions.append(P.is_anomaly == (true() if query.is_anomaly else false()))
    if query.is_attack is not None:
        conditions.append(P.is_attack == (true() if query.is_attack else false()))
    if query.labelled is not None:
        conditions.append(F.request_key.is_not(None) if query.labelled else F.request_key.is_(None))
    if query.after is not None:
        key, row = query.after
        conditions.append(or_(P.request_key < key, and_(P.request_key == key, P.row_index > row)))
    return conditions


async def list_predictions(
    engine: AsyncEngine, query: PredictionQuery, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of predictions and the cursor of the next (None: no more)."""
    stmt = (
        _joined(select(*_RECORD_COLUMNS))
        .where(*_conditions(query))
        .order_by(P.request_key.desc(), P.row_index.asc())
        .limit(limit + 1)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    items = [record_view(row) for row in rows[:limit]]
    cursor = items[-1]["prediction_id"] if len(rows) > limit else None
    return items, cursor


async def get_prediction(
    engine: AsyncEngine, key: str, row: int, owner: int | None
) -> dict[str, Any] | None:
    """The served record of a prediction with its shadow records beside it; None when it
    does not exist or ``owner`` (unless None) is not its user."""
    stmt = _joined(select(*_RECORD_COLUMNS)).where(P.request_key == key, P.row_index == row)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.order_by(P.shadow, P.version))).all()
    served = [r for r in rows if not r.shadow]
    if not served or (owner is not None and served[0].user_id != owner):
        return None
    view = record_view(served[0])
    view["shadow_records"] = [_shadow_view(r) for r in rows if r.shadow]
    return view


@dataclass(frozen=True)
class Owned:
    """What feedback needs to know about a served prediction."""

    key: str
    row: int
    user_id: int | None
    model: str
    version: str
    task: str


async def served_records(
    engine: AsyncEngine, ids: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], Owned]:
    """The served records among ``ids``, by (key, row)."""
    found: dict[tuple[str, int], Owned] = {}
    keys = sorted({key for key, _ in ids})
    wanted = set(ids)
    async with engine.connect() as conn:
        # By key (one indexed range each), then the rows wanted of them.
        for start in range(0, len(keys), 500):
            stmt = select(P.request_key, P.row_index, P.user_id, P.model, P.version, P.task).where(
                P.request_key.in_(keys[start : start + 500]), P.shadow == false()
            )
            for r in (await conn.execute(stmt)).all():
                if (r.request_key, r.row_index) in wanted:
                    found[(r.request_key, r.row_index)] = Owned(
                        r.request_key, r.row_index, r.user_id, r.model, r.version, r.task
                    )
    return found


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def record_view(row: Any) -> dict[str, Any]:
    """The JSON shape of one record (field names as in the v1 prediction responses)."""
    view: dict[str, Any] = {
        "prediction_id": f"{row.request_key}-{row.row_index}",
        "request_id": row.request_id,
        "created_at": row.created_at.isoformat(),
        "model": row.model,
        "model_version": row.version,
        "protocol": row.protocol,
        "principal": row.principal,
        "user_id": row.user_id,
        "key_id": row.key_id,
        "shadow": bool(row.shadow),
        "cache_hit": bool(row.cache_hit),
        "latency_ms": _float(row.latency_ms),
        "device_id": row.device_id,
        "input_hash": row.input_hash,
    }
    view.update(_output_view(row))
    if row.inputs is not None:
        view["inputs"] = row.inputs
    view["feedback"] = _feedback_view(row)
    return view


def _output_view(row: Any) -> dict[str, Any]:
    if row.task == "classification":
        return {
            "predicted_class": row.predicted_class,
            "predicted_class_name": row.predicted,
            "confidence": _float(row.confidence),
            "probabilities": row.probabilities,
            "is_attack": row.is_attack,
        }
    out = {
        "is_anomaly": row.is_anomaly,
        "anomaly_score": _float(row.score),
        "confidence": _float(row.confidence),
        "threshold": _float(row.threshold),
    }
    if row.calibration_seen is not None:
        out["calibration_seen"] = row.calibration_seen
    return out


def _shadow_view(row: Any) -> dict[str, Any]:
    return {
        "model_version": row.version,
        "created_at": row.created_at.isoformat(),
        "latency_ms": _float(row.latency_ms),
        **_output_view(row),
    }


def _feedback_view(row: Any) -> dict[str, Any] | None:
    if row.feedback_by is None:
        return None
    view: dict[str, Any] = (
        {"label": row.feedback_label}
        if row.task == "classification"
        else {"is_anomaly": row.feedback_is_anomaly}
    )
    view["labelled_by"] = row.feedback_by
    view["updated_at"] = row.feedback_at.isoformat() if row.feedback_at else None
    return view
