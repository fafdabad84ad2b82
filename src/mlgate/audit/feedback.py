"""Ground-truth feedback: the true class (classifiers) or verdict (anomaly models) of a
prediction, given by its owner or an admin. One label per prediction: a second replaces
the first.

A prediction may still sit in a worker's audit queue when its feedback arrives (the
client labels what it was just answered). Feedback is checked against the stored
record - the label must be a class of that prediction's model version, the body must
fit its task, and only its owner (or an admin) may label it, others get 404 - so the
record must be in the database first: **flush, then label**. This worker's queue is
flushed at once; a prediction answered by another worker a moment ago is waited for
until that worker's next flush (``flush_interval_s``). The other design, storing labels
by id and joining them later, would accept labels that cannot be checked (a class the
model does not have, a prediction of someone else) and could only drop them silently
later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.catalog import VersionCatalog
from mlgate.audit.keys import key_seconds
from mlgate.audit.predictions import Owned, served_records
from mlgate.audit.writer import AuditLog
from mlgate.auth.principal import Principal
from mlgate.auth.scopes import ADMIN
from mlgate.dataplane.ids import parse_prediction_id
from mlgate.db.engine import dialect_insert
from mlgate.db.models import PredictionFeedback
from mlgate.errors import MlgateError, NotFound, ServiceUnavailable, ValidationFailed

_POLL_S = 0.05


@dataclass(frozen=True)
class Label:
    """One label as sent: ``label`` (class name or index) or ``is_anomaly``."""

    prediction_id: str
    label: str | int | None = None
    is_anomaly: bool | None = None
    field: str = "body"
    """Where it was in the request, for error messages."""


def parse_label(body: Any, field: str, prediction_id: str | None = None) -> Label:
    """A label object: ``{"label": "DoS"}``, ``{"label": 3}`` or ``{"is_anomaly": true}``
    (with ``prediction_id`` in the batch form)."""
    if not isinstance(body, dict):
        raise _invalid(field, "expected an object with `label` or `is_anomaly`")
    allowed = {"label", "is_anomaly"} | ({"prediction_id"} if prediction_id is None else set())
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _invalid(f"{field}.{unknown[0]}", f"unknown field {unknown[0]!r}")
    if prediction_id is None:
        prediction_id = body.get("prediction_id")
        if not isinstance(prediction_id, str):
            raise _invalid(f"{field}.prediction_id", "expected the prediction id (a string)")
    has_label, has_verdict = "label" in body, "is_anomaly" in body
    if has_label == has_verdict:
        raise _invalid(field, "give exactly one of `label` (classifiers) or `is_anomaly`")
    if has_label:
        label = body["label"]
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise _invalid(f"{field}.label", "expected a class name or a class index")
        return Label(prediction_id, label=label, field=field)
    verdict = body["is_anomaly"]
    if not isinstance(verdict, bool):
        raise _invalid(f"{field}.is_anomaly", "expected true or false")
    return Label(prediction_id, is_anomaly=verdict, field=field)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"invalid feedback: {field}: {message}", details=[{"field": field, "message": message}]
    )


def _not_found(prediction_id: str) -> NotFound:
    return NotFound(
        f"no prediction {prediction_id!r}", details={"prediction_id": prediction_id[:64]}
    )


@dataclass(frozen=True)
class Stored:
    prediction_id: str
    model: str
    version: str
    label: str | None
    is_anomaly: bool | None
    labelled_by: str
    updated_at: datetime

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prediction_id": self.prediction_id,
            "model": self.model,
            "model_version": self.version,
        }
        if self.label is not None:
            out["label"] = self.label
        else:
            out["is_anomaly"] = self.is_anomaly
        out["labelled_by"] = self.labelled_by
        out["updated_at"] = self.updated_at.isoformat()
        return out


class FeedbackService:
    """Checks labels against their predictions and stores them."""

    def __init__(
        self,
        engine: AsyncEngine,
        audit: AuditLog,
        catalog: VersionCatalog,
        *,
        flush_interval_s: float,
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.catalog = catalog
        # How long after it was answered a prediction may still be in another worker's
        # queue (one flush interval, and some slack for the write itself).
        self.grace_s = flush_interval_s + 1.0

    async def submit(
        self, principal: Principal, labels: Sequence[Label]
    ) -> list[Stored | MlgateError]:
        """Store every valid label; the error of each other one, in order."""
        parsed = [parse_prediction_id(label.prediction_id) for label in labels]
        wanted = [p for p in parsed if p is not None]
        found = await self._find(wanted)
        owner = None if principal.has(ADMIN) else principal.user_id
        now = datetime.now(UTC)
        results: list[Stored | MlgateError] = []
        rows: dict[tuple[str, int], dict[str, Any]] = {}
        for label, ident in zip(labels, parsed, strict=True):
            record = found.get(ident) if ident is not None else None
            if record is None or (
                not principal.has(ADMIN) and (owner is None or record.user_id != owner)
            ):
                results.append(_not_found(label.prediction_id))
                continue
            try:
                value, verdict = self._check(label, record)
            except ValidationFailed as exc:
                results.append(exc)
                continue
            rows[(record.key, record.row)] = {
                "request_key": record.key,
                "row_index": record.row,
                "label": value,
                "is_anomaly": verdict,
                "labelled_by": principal.log_id,
                "user_id": principal.user_id,
                "created_at": now,
                "updated_at": now,
            }
            results.append(
                Stored(
                    label.prediction_id,
                    record.model,
                    record.version,
                    value,
                    verdict,
                    principal.log_id,
                    now,
                )
            )
        if rows:
            await self._upsert(list(rows.values()))
        return results

    async def _find(self, ids: list[tuple[str, int]]) -> dict[tuple[str, int], Owned]:
        """The served records of ``ids``, flushing this worker's queue and waiting for
        recent ones that may still be queued by another worker."""
        if not ids:
            return {}
        found = await served_records(self.engine, ids)
        missing = [i for i in ids if i not in found]
        if not missing:
            return found
        if not await self.audit.flush():
            raise ServiceUnavailable(
                "the audit log cannot write to the database right now: retry later",
                headers={"Retry-After": "5"},
            )
        # Wait only for ids answered within the last flush interval (a future time is a
        # forged id: not waited for), and never longer than that interval.
        deadline = time.monotonic() + self.grace_s
        while missing:
            found.update(await served_records(self.engine, missing))
            missing = [i for i in missing if i not in found]
            now = time.time()
            recent = [i for i in missing if now - self.grace_s < key_seconds(i[0]) <= now + 1]
            if not recent or time.monotonic() >= deadline:
                break
            missing = recent
            await asyncio.sleep(_POLL_S)
        return found

    def _check(self, label: Label, record: Owned) -> tuple[str | None, bool | None]:
        """(class name, verdict) of a label for ``record``'s task (422 otherwise)."""
        if record.task != "classification":
            if label.is_anomaly is None:
                raise _invalid(
                    label.field, "this is an anomaly model's prediction: send `is_anomaly`"
                )
            return None, label.is_anomaly
        if label.label is None:
            raise _invalid(label.field, "this is a classifier's prediction: send `label`")
        classes = self.catalog.class_names(record.model, record.version)
        if classes is None:
            raise _invalid(
                f"{label.field}.label",
                f"{record.model} version {record.version} is not served any more: its "
                "classes are unknown",
            )
        if isinstance(label.label, int):
            if not 0 <= label.label < len(classes):
                raise _invalid(
                    f"{label.field}.label",
                    f"class index {label.label} is out of range 0..{len(classes) - 1}",
                )
            return classes[label.label], None
        if label.label not in classes:
            raise _invalid(
                f"{label.field}.label",
                f"{label.label[:64]!r} is not a class of {record.model} (one of {list(classes)})",
            )
        return label.label, None

    async def _upsert(self, rows: list[dict[str, Any]]) -> None:
        insert = dialect_insert(self.engine.dialect.name)
        stmt = insert(PredictionFeedback)
        stmt = stmt.on_conflict_do_update(
            index_elements=["request_key", "row_index"],
            set_={
                name: stmt.excluded[name]
                for name in ("label", "is_anomaly", "labelled_by", "user_id", "updated_at")
            },
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)
