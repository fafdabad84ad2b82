"""The prediction audit log over HTTP: listing, one prediction, and feedback.

Scopes: reading needs `predict` (callers read the predictions they made: their user's,
through any of its keys); admins read everyone's. Labelling needs `feedback` and the
prediction must be the caller's (admins: any). Someone else's prediction is a 404, as if
it did not exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from mlgate.api.body import read_json
from mlgate.api.deps import AuditDep, PrincipalDep, RequireFeedback, RequirePredict
from mlgate.api.responses import ORJSONResponse
from mlgate.api.schemas import ERROR_RESPONSES
from mlgate.api.security import AUTH_ERROR_RESPONSES
from mlgate.audit.feedback import FeedbackService, Label, parse_label
from mlgate.audit.predictions import PredictionQuery, get_prediction, list_predictions
from mlgate.audit.service import AuditService
from mlgate.audit.unavailable import database_required
from mlgate.auth.principal import Principal
from mlgate.auth.scopes import ADMIN
from mlgate.dataplane.ids import parse_prediction_id
from mlgate.errors import MlgateError, NotFound, ServiceUnavailable, ValidationFailed

router = APIRouter(
    prefix="/v1",
    tags=["predictions"],
    responses={**ERROR_RESPONSES, **AUTH_ERROR_RESPONSES},
)

_NOBODY = -1
"""The owner filter of a caller who owns nothing (anonymous): matches no record."""


def _owner(principal: Principal) -> int | None:
    """Whose predictions the caller may see (None: everyone's)."""
    if principal.has(ADMIN):
        return None
    return principal.user_id if principal.user_id is not None else _NOBODY


def _log_on(audit: AuditService) -> None:
    if audit.log is None:
        raise NotFound("the prediction audit log is off on this server (MLGATE_AUDIT__ENABLED)")


async def _flushed(audit: AuditService) -> None:
    """Write this worker's queue first, so a caller reads the predictions it just made."""
    assert audit.log is not None
    if audit.log.depth and not await audit.log.flush():
        raise ServiceUnavailable(
            "the audit log cannot reach the database right now: retry later",
            headers={"Retry-After": "5"},
        )


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _not_found(prediction_id: str) -> NotFound:
    return NotFound(
        f"no prediction {prediction_id[:64]!r}", details={"prediction_id": prediction_id[:64]}
    )


@router.get(
    "/predictions",
    summary="List recorded predictions (newest first)",
    response_model=None,
    dependencies=[RequirePredict],
)
async def predictions(
    principal: PrincipalDep,
    audit: AuditDep,
    model: str | None = None,
    version: str | None = None,
    principal_id: Annotated[
        str | None,
        Query(
            alias="principal",
            description="Who made them: `user:7`, `key:12` or `anonymous` (a non-admin "
            "sees only their own predictions whatever this says).",
        ),
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Answered at or after (ISO 8601; UTC if no zone).")
    ] = None,
    until: Annotated[datetime | None, Query(description="Answered before.")] = None,
    predicted_class: Annotated[
        str | None, Query(description="Classifiers: the predicted class, by name or index.")
    ] = None,
    is_anomaly: Annotated[bool | None, Query(description="Anomaly models: the verdict.")] = None,
    is_attack: bool | None = None,
    labelled: Annotated[
        bool | None, Query(description="With (true) or without (false) feedback.")
    ] = None,
    shadow: Annotated[
        bool, Query(description="Records of shadow versions instead of served answers.")
    ] = False,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page (opaque).")
    ] = None,
) -> Response:
    _log_on(audit)
    if limit > audit.settings.max_page_size:
        raise ValidationFailed(
            f"limit must be at most {audit.settings.max_page_size}",
            details=[{"field": "limit", "message": f"at most {audit.settings.max_page_size}"}],
        )
    after = None
    if cursor is not None:
        after = parse_prediction_id(cursor)
        if after is None:
            raise ValidationFailed(
                "cursor is not one this API returned",
                details=[{"field": "cursor", "message": "invalid cursor"}],
            )
    predicted: str | int | None = predicted_class
    if predicted_class is not None and predicted_class.isdigit():
        predicted = int(predicted_class)
    query = PredictionQuery(
        owner=_owner(principal),
        model=model,
        version=version,
        principal=principal_id,
        since=_utc(since),
        until=_utc(until),
        predicted_class=predicted,
        is_anomaly=is_anomaly,
        is_attack=is_attack,
        labelled=labelled,
        shadow=shadow,
        after=after,
    )
    with database_required():
        await _flushed(audit)
        items, next_cursor = await list_predictions(audit.engine, query, limit)
    return ORJSONResponse({"predictions": items, "next_cursor": next_cursor})


@router.get(
    "/predictions/{prediction_id}",
    summary="One recorded prediction, its feedback and shadow records",
    response_model=None,
    dependencies=[RequirePredict],
)
async def prediction(prediction_id: str, principal: PrincipalDep, audit: AuditDep) -> Response:
    _log_on(audit)
    ident = parse_prediction_id(prediction_id)
    if ident is None:
        raise _not_found(prediction_id)
    with database_required():
        await _flushed(audit)  # its shadow records or feedback may be queued still
        found = await get_prediction(audit.engine, *ident, _owner(principal))
    if found is None:
        raise _not_found(prediction_id)
    return ORJSONResponse(found)


def _feedback(audit: AuditService) -> FeedbackService:
    _log_on(audit)
    assert audit.feedback is not None
    return audit.feedback


@router.post(
    "/predictions/{prediction_id}/feedback",
    summary="Label a prediction with its ground truth (a second label replaces the first)",
    response_model=None,
    dependencies=[RequireFeedback],
)
async def feedback(
    prediction_id: str, request: Request, principal: PrincipalDep, audit: AuditDep
) -> Response:
    service = _feedback(audit)
    label = parse_label(await read_json(request), "body", prediction_id)
    with database_required():
        (result,) = await service.submit(principal, [label])
    if isinstance(result, MlgateError):
        raise result
    return ORJSONResponse(result.view())


@router.post(
    "/feedback",
    summary="Label many predictions at once",
    response_model=None,
    dependencies=[RequireFeedback],
)
async def feedback_batch(request: Request, principal: PrincipalDep, audit: AuditDep) -> Response:
    """``{"feedback": [{"prediction_id": ..., "label" | "is_anomaly": ...}, ...]}``: every
    valid label is stored; the others are listed with their error (by index)."""
    service = _feedback(audit)
    body = await read_json(request)
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise ValidationFailed(
            'expected {"feedback": [{"prediction_id": ..., "label": ...}, ...]}',
            details=[{"field": "feedback", "message": "a non-empty list of labels"}],
        )
    most = audit.settings.max_feedback_batch
    if len(items) > most:
        raise ValidationFailed(
            f"at most {most} labels per request, got {len(items)}",
            details=[{"field": "feedback", "message": f"at most {most} items"}],
        )
    labels: list[Label] = [parse_label(item, f"feedback[{i}]") for i, item in enumerate(items)]
    with database_required():
        results = await service.submit(principal, labels)
    rejected = [
        {
            "index": i,
            "prediction_id": labels[i].prediction_id[:64],
            "error": {"code": r.code, "message": r.message, "details": r.details},
        }
        for i, r in enumerate(results)
        if isinstance(r, MlgateError)
    ]
    return ORJSONResponse({"accepted": len(results) - len(rejected), "rejected": rejected})
