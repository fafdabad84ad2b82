"""v1 prediction routes: single and batch, by model name and optional version."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from mlgate.api.body import read_body
from mlgate.api.deps import DataPlaneDep, InferencePredict
from mlgate.api.inference import charging, encoded_response, http_context
from mlgate.api.schemas import (
    INFERENCE_ERROR_RESPONSES,
    BatchPredictRequest,
    BatchPredictResponse,
    PredictRequest,
    PredictResponse,
    request_body,
)
from mlgate.api.security import AUTH_ERROR_RESPONSES, authenticate, authorize
from mlgate.auth.scopes import PREDICT
from mlgate.protocols import v1
from mlgate.protocols.common import DEFAULT_EXPLAIN_TOP

router = APIRouter(
    prefix="/v1/models",
    tags=["prediction"],
    dependencies=[InferencePredict],
    responses=AUTH_ERROR_RESPONSES,
)

VersionQuery = Query(default=None, description="Version or alias; overrides `version` in the body.")
CODEC = v1.V1Codec()


async def _predict(
    model: str,
    request: Request,
    dataplane: DataPlaneDep,
    version: str | None,
    *,
    batch: bool,
    explain: bool = False,
) -> Response:
    async with charging(request):
        payload = v1.parse(await read_body(request), batch=batch)
        if explain and payload.explain is None:
            payload = replace(payload, explain=DEFAULT_EXPLAIN_TOP)
        encoded = await dataplane.infer(
            model,
            version or payload.version,
            payload,
            CODEC,
            http_context(request, CODEC.protocol),
        )
    return encoded_response(encoded)


def _route(path: str, summary: str, body: type[BaseModel], answer: type[BaseModel]) -> Any:
    """A prediction route's decorator: its summary, documented body and answers."""
    return router.post(
        path,
        summary=summary,
        response_model=None,
        responses={200: {"model": answer}, **INFERENCE_ERROR_RESPONSES},
        openapi_extra=request_body(body),
    )


@_route("/{model}/predict", "Score one instance", PredictRequest, PredictResponse)
async def predict(
    model: str, request: Request, dataplane: DataPlaneDep, version: str | None = VersionQuery
) -> Response:
    return await _predict(model, request, dataplane, version, batch=False)


@_route("/{model}/predict/batch", "Score many instances", BatchPredictRequest, BatchPredictResponse)
async def predict_batch(
    model: str, request: Request, dataplane: DataPlaneDep, version: str | None = VersionQuery
) -> Response:
    return await _predict(model, request, dataplane, version, batch=True)


def _v1_protocol(verb: str, summary: str) -> Any:
    """Both paths of a KServe v1 verb: ``/{model}:verb`` and, as TensorFlow Serving names
    a version, ``/{model}/versions/{version}:verb``; the body is /predict/batch's."""

    def register(endpoint: Any) -> Any:
        for path, what in (
            (f"/{{model}}:{verb}", ""),
            (f"/{{model}}/versions/{{version}}:{verb}", " (one version)"),
        ):
            _route(path, summary + what, BatchPredictRequest, BatchPredictResponse)(endpoint)
        return endpoint

    return register


# KServe's v1 protocol and TensorFlow Serving's REST API: `{"instances": [...]}` as for
# /predict/batch; the answer's `predictions` hold one result per instance.
@_v1_protocol("predict", "Score many instances (KServe v1 and TensorFlow Serving REST)")
async def predict_v1_protocol(
    model: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> Response:
    return await _predict(model, request, dataplane, version, batch=True)


# KServe's v1 explain: the same batch, each row with its top features (`explain` in the
# body sets how many; 5 without it).
@_v1_protocol("explain", "Score and explain many instances (KServe v1)")
async def explain_v1_protocol(
    model: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> Response:
    return await _predict(model, request, dataplane, version, batch=True, explain=True)


async def hot_predict(request: Request, model: str) -> Response:
    """``POST /v1/models/{model}/predict`` as :mod:`mlgate.api.hot` serves it."""
    authorize(await authenticate(request), PREDICT)
    version = request.query_params.get("version")
    return await _predict(model, request, request.app.state.mlgate.dataplane, version, batch=False)


async def hot_predict_batch(request: Request, model: str) -> Response:
    """``POST /v1/models/{model}/predict/batch`` as :mod:`mlgate.api.hot` serves it."""
    authorize(await authenticate(request), PREDICT)
    version = request.query_params.get("version")
    return await _predict(model, request, request.app.state.mlgate.dataplane, version, batch=True)


async def hot_predict_v1_protocol(
    request: Request, model: str, version: str | None = None
) -> Response:
    """``POST /v1/models/{model}[/versions/{version}]:predict`` as :mod:`mlgate.api.hot`
    serves it (a batch: the path's version wins over the body's)."""
    authorize(await authenticate(request), PREDICT)
    return await _predict(model, request, request.app.state.mlgate.dataplane, version, batch=True)
