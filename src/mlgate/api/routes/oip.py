"""The Open Inference Protocol (KServe v2 REST, as Triton and MLServer speak it).

Server and model metadata, health and readiness, and inference with JSON or binary
tensors. Errors on /v2 are ``{"error": "message"}`` with the right status. Inference
has the same authentication, scopes, rate limits (a batch of N rows costs N rows) and
observers as /v1: it goes through the same data plane.
"""

from __future__ import annotations

import zlib
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

import mlgate
from mlgate.api.deps import DataPlaneDep, InferencePredict, RequireModelsRead, StateDep
from mlgate.api.inference import charging, encoded_response, http_context
from mlgate.api.responses import ORJSONResponse
from mlgate.api.routes.health import readiness
from mlgate.api.schemas import (
    OIP_ERROR_RESPONSES,
    RETRY_AFTER,
    OipInferRequest,
    request_body,
)
from mlgate.api.security import OIP_AUTH_ERROR_RESPONSES, authenticate, authorize
from mlgate.auth.scopes import PREDICT
from mlgate.dataplane import DataPlane
from mlgate.errors import PayloadTooLarge, UnsupportedMediaType
from mlgate.protocols import oip_binary, oip_json
from mlgate.protocols.oip_tensors import datatype_of
from mlgate.registry.registry import ModelVersion, version_sort_key

EXTENSIONS = ["binary_tensor_data", "model_repository"]
PLATFORMS = {"onnx": "onnxruntime_onnx", "sklearn": "scikit-learn"}
_ACCEPTED_MEDIA = ("application/json", "application/octet-stream")

router = APIRouter(prefix="/v2", tags=["open-inference-protocol"])
CODEC = oip_json.OipCodec()


@router.get("/health/live", summary="Liveness (OIP)")
async def live() -> Response:
    return ORJSONResponse({"live": True})


@router.get(
    "/health/ready",
    summary="Readiness (OIP): 200 ready, 503 not",
    responses={
        503: {
            "description": 'Not ready: `{"ready": false, "error": ..., "checks": {...}}`',
            "headers": RETRY_AFTER,
        }
    },
)
async def ready(state: StateDep) -> Response:
    checks, problems = await readiness(state)
    if problems:
        return ORJSONResponse(
            {"ready": False, "error": "; ".join(problems), "checks": checks},
            status_code=503,
            headers={"Retry-After": "1"},
        )
    return ORJSONResponse({"ready": True})


@router.get(
    "",
    summary="Server metadata",
    dependencies=[RequireModelsRead],
    responses=OIP_AUTH_ERROR_RESPONSES,
)
async def server_metadata() -> Response:
    return ORJSONResponse(
        {"name": "mlgate", "version": mlgate.__version__, "extensions": EXTENSIONS}
    )


def model_metadata(mv: ModelVersion, versions: list[str]) -> dict[str, Any]:
    """A model version's inputs and outputs as OIP tensors."""
    m = mv.manifest
    datatype = datatype_of(mv.runtime.input_dtype)
    return {
        "name": mv.name,
        "versions": versions,
        "platform": PLATFORMS.get(m.runtime, m.runtime),
        "inputs": [{"name": "input", "datatype": datatype, "shape": [-1, mv.n_features]}],
        "outputs": oip_json.output_metadata(mv),
        "parameters": {
            "version": mv.version,
            "task": m.task,
            "feature_names": m.feature_names,
            "classes": m.classes,
            "inputs_by_feature": "one [N] or [N, 1] tensor per feature name or alias is "
            "accepted too",
        },
    }


models_router = APIRouter(
    prefix="/v2/models/{model}",
    tags=["open-inference-protocol"],
    responses={**OIP_AUTH_ERROR_RESPONSES, **OIP_ERROR_RESPONSES},
)


@models_router.get("", summary="Model metadata", dependencies=[RequireModelsRead])
@models_router.get(
    "/versions/{version}", summary="Model version metadata", dependencies=[RequireModelsRead]
)
async def metadata(model: str, dataplane: DataPlaneDep, version: str | None = None) -> Response:
    mv = dataplane.resolve(model, version)
    entry = dataplane.registry.entry(mv.name)
    versions = sorted(entry.versions, key=version_sort_key)
    return ORJSONResponse(model_metadata(mv, versions))


@models_router.get("/ready", summary="Model readiness", dependencies=[RequireModelsRead])
@models_router.get(
    "/versions/{version}/ready",
    summary="Model version readiness",
    dependencies=[RequireModelsRead],
)
async def model_ready(model: str, dataplane: DataPlaneDep, version: str | None = None) -> Response:
    mv = dataplane.resolve(model, version)
    return ORJSONResponse({"name": mv.name, "version": mv.version, "ready": True})


async def _body(request: Request) -> bytes:
    """The request body, decompressed when sent with gzip or deflate (bounded)."""
    content_type = request.headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        if media not in _ACCEPTED_MEDIA and not media.endswith("+json"):
            raise UnsupportedMediaType(
                f"content type {content_type[:100]!r} is not supported: send "
                "application/json, or application/octet-stream with binary tensors",
                details={"supported": list(_ACCEPTED_MEDIA)},
            )
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"content encoding {encoding[:40]!r} is not supported: use gzip or deflate",
            details={"supported": ["identity", "gzip", "deflate"]},
        )
    limit = request.app.state.settings.server.max_body_bytes
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise UnsupportedMediaType(
            f"the body is not valid {encoding} data", details={"encoding": encoding}
        ) from None
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"the decompressed body exceeds the limit of {limit} bytes",
            details={"limit_bytes": limit},
        )
    return inflated


_INFER_BODY = request_body(
    OipInferRequest,
    binary="Binary tensor data: the JSON header (an inference request whose inputs carry "
    "`parameters.binary_data_size`), its length in the `Inference-Header-Content-Length` "
    "header, then each input's data, little-endian and row-major, in input order",
)


@models_router.post(
    "/infer", summary="Inference", dependencies=[InferencePredict], openapi_extra=_INFER_BODY
)
@models_router.post(
    "/versions/{version}/infer",
    summary="Inference on a version",
    dependencies=[InferencePredict],
    openapi_extra=_INFER_BODY,
)
async def infer(
    model: str, request: Request, dataplane: DataPlaneDep, version: str | None = None
) -> Response:
    """JSON tensors, or binary tensors after a JSON header whose length is given by
    ``Inference-Header-Content-Length``. ``parameters.device_id`` scores against that
    device's baseline."""
    return await _infer(model, request, dataplane, version)


async def hot_infer(request: Request, model: str, version: str | None = None) -> Response:
    """``POST /v2/models/{model}[/versions/{version}]/infer`` as :mod:`mlgate.api.hot`
    serves it."""
    authorize(await authenticate(request), PREDICT)
    return await _infer(model, request, request.app.state.mlgate.dataplane, version)


async def _infer(
    model: str, request: Request, dataplane: DataPlane, version: str | None
) -> Response:
    async with charging(request):
        body = await _body(request)
        header = request.headers.get(oip_binary.HEADER_LENGTH)
        document, binary = oip_binary.split(body, oip_binary.header_length(header, len(body)))
        payload = oip_json.parse_request(document, binary)
        encoded = await dataplane.infer(
            model, version, payload, CODEC, http_context(request, CODEC.protocol)
        )
    return encoded_response(encoded)
