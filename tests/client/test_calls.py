"""Every call of the client, blocking and asyncio alike, against the app in-process:
typed results, and the server's errors as the client's exception tree."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from tests.client.conftest import BASE_URL, InProcessServer, Recorder
from tests.client.data import IDS_STABLE, IOT_FEATURES, ids_sample, local_classes

from mlgate.client import (
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    Health,
    InputError,
    ModelInfo,
    ModelNotFound,
    PermissionDenied,
    Prediction,
    ServerInfo,
    ValidationError,
    VersionNotFound,
)

Call = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["sync", "async"])
async def api(
    request: pytest.FixtureRequest, server: InProcessServer, recorder: Recorder
) -> AsyncIterator[Call]:
    """``await api("predict", ...)`` through the blocking or the asyncio client: every
    test here runs with both and expects the same."""
    if request.param == "sync":
        with Client(BASE_URL, api_key=server.admin_key, transport=recorder) as c:

            async def call_sync(name: str, *args: Any, **kwargs: Any) -> Any:
                return _method(c, name)(*args, **kwargs)

            yield call_sync
        return
    async with AsyncClient(BASE_URL, api_key=server.admin_key, transport=recorder) as ac:

        async def call_async(name: str, *args: Any, **kwargs: Any) -> Any:
            return await _method(ac, name)(*args, **kwargs)

        yield call_async


def _method(client: Any, name: str) -> Any:
    target = client
    for part in name.split("."):
        target = getattr(target, part)
    return target


def _finite_rows(n: int) -> np.ndarray:
    x, _ = ids_sample()
    return x[np.isfinite(x).all(axis=1)][:n]


async def test_service_calls_are_typed(api: Call) -> None:
    health = await api("health")
    assert isinstance(health, Health) and health.healthy and "ids" in health.models_loaded
    info = await api("info")
    assert isinstance(info, ServerInfo) and info.max_batch_rows == 100
    models = await api("models")
    assert {"ids", "iot"} <= {m.name for m in models}
    me = await api("whoami")
    assert "admin" in me.scopes


async def test_model_schema_of_the_default_version_and_of_a_version(api: Call) -> None:
    default = await api("model", "ids")
    assert isinstance(default, ModelInfo)
    assert default.version == default.default_version == IDS_STABLE
    assert default.n_features == 77 and "PortScan" in default.classes
    assert default.features[0].name == "Flow Duration"
    assert default.features[0].aliases == ("flow_duration",)
    v2 = await api("model", "ids", "2")
    assert v2.version == "2" and v2.feature_names == default.feature_names
    iot = await api("model", "iot")
    assert iot.task == "anomaly" and iot.feature_names == list(IOT_FEATURES)


async def test_predict_one_row_by_position_and_by_name(api: Call) -> None:
    row = _finite_rows(1)[0]
    by_position = await api("predict", "ids", row.tolist())
    assert isinstance(by_position, Prediction) and by_position.kind == "classification"
    assert by_position.predicted_class_name == local_classes(row[None, :])[0]
    assert by_position.prediction_id and by_position.model_version == IDS_STABLE
    info = await api("model", "ids")
    # Aliases name features as well as names do.
    by_alias = await api(
        "predict", "ids", {f.aliases[0]: float(v) for f, v in zip(info.features, row, strict=True)}
    )
    assert by_alias.probabilities == by_position.probabilities
    reading = {
        "temperature": 89.4,
        "vibration": 0.21,
        "pressure": 0.05,
        "flow_rate": 125.7,
        "current": 2.5,
        "duty_cycle": 0.7,
    }
    anomaly = await api("predict", "iot", reading, version="1")
    assert anomaly.kind == "anomaly" and anomaly.is_anomaly is False
    assert anomaly.model_version == "1" and anomaly.explanation


async def test_predict_batch_keeps_order_and_summarises(api: Call) -> None:
    rows = _finite_rows(30)
    result = await api("predict_batch", "ids", rows.tolist())
    assert [p.predicted_class_name for p in result] == local_classes(rows).tolist()
    assert len({p.prediction_id for p in result}) == 30
    summary = result.summary
    assert summary["total"] == 30 and sum(summary["class_counts"].values()) == 30


async def test_predict_array_returns_numpy_outputs(api: Call) -> None:
    x, _ = ids_sample()
    rows = x[:40]  # raw: NaN and Infinity cells in the rate features are replaced
    result = await api("predict_array", "ids", rows)
    assert result["probabilities"].shape == (40, 7)
    assert result["probabilities"].dtype == np.float64
    assert result["predicted_class_name"].tolist() == local_classes(rows).tolist()
    assert result["is_attack"].dtype == np.bool_ and len(result.prediction_ids) == 40


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "code"),
    [
        (("nope", [1.0]), {}, ModelNotFound, "model_not_found"),
        (("ids", [0.0] * 77), {"version": "9"}, VersionNotFound, "version_not_found"),
    ],
)
async def test_not_found_errors(
    api: Call, recorder: Recorder, args: Any, kwargs: Any, error: type[APIError], code: str
) -> None:
    with pytest.raises(error) as caught:
        await api("predict", *args, **kwargs)
    assert caught.value.status_code == 404 and caught.value.code == code
    assert caught.value.request_id
    assert len(recorder.to("/predict")) == 1, "a 404 is not retried"


async def test_validation_errors_carry_the_field_details(api: Call, recorder: Recorder) -> None:
    row = [0.0] * 77
    row[0] = math.nan  # Flow Duration declares no substitution rule
    with pytest.raises(ValidationError) as caught:
        await api("predict", "ids", row)
    assert caught.value.fields == ["features[0]"]
    assert "Flow Duration" in caught.value.message
    # Over the binary tensor path, in a later chunk: the row in the caller's input.
    rows = _finite_rows(250).copy()
    rows[237, 0] = math.nan
    with pytest.raises(ValidationError) as caught:
        await api("predict_array", "ids", rows, concurrency=1)
    assert caught.value.row == 237
    assert caught.value.fields == ["inputs[0][37][0]"]
    assert all(e.status in (200, 422) for e in recorder.log)
    assert [e.status for e in recorder.to("/infer")].count(422) == 1, "a 422 is not retried"


async def test_input_errors_are_raised_before_sending(api: Call, recorder: Recorder) -> None:
    with pytest.raises(InputError):
        await api("predict_batch", "ids", [])
    with pytest.raises(InputError):
        await api("feedback", "abc-0")
    with pytest.raises(InputError):
        await api("admin.create_key", "no-owner")
    assert recorder.log == []


async def test_credentials_errors(server: InProcessServer, recorder: Recorder) -> None:
    async with AsyncClient(
        BASE_URL, api_key="mlg_000000000000_" + "x" * 43, transport=recorder
    ) as ac:
        with pytest.raises(AuthenticationError) as caught:
            await ac.whoami()
        assert caught.value.status_code == 401
    admin = AsyncClient(BASE_URL, api_key=server.admin_key, transport=recorder)
    user = await admin.admin.create_user("reader", scopes=["models:read"])
    key = await admin.admin.create_key("readonly", user_id=user.id)
    assert key.key and key.key.startswith("mlg_")
    async with AsyncClient(BASE_URL, api_key=key.key, transport=recorder) as reader:
        assert (await reader.model("ids")).name == "ids"
        with pytest.raises(PermissionDenied):
            await reader.predict("ids", [0.0] * 77)
    with pytest.raises(Conflict):
        await admin.admin.create_user("reader")
    await admin.aclose()
