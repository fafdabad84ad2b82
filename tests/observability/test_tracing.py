"""OpenTelemetry spans of one prediction (v1 and /v2), in the incoming traceparent's
trace, one per step, parented correctly; off by default and lazily imported."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import PROJECT_ROOT, create_admin_key, make_settings, running_app

ROW = [0.5] * 77
ROW2 = [0.25] * 77  # another row: not a cache hit
PARENT_SPAN = "b7ad6b7169203331"
STEPS = {
    "mlgate.authenticate",
    "mlgate.rate_limit",
    "mlgate.decode",
    "mlgate.cache",
    "mlgate.inference",
    "mlgate.encode",
    "mlgate.audit.enqueue",
}


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{PARENT_SPAN}-01"


def _in_trace(spans: tuple[ReadableSpan, ...], trace_id: str) -> dict[str, ReadableSpan]:
    found = {}
    for span in spans:
        if format(span.context.trace_id, "032x") == trace_id:
            assert span.name not in found, f"two {span.name} spans"
            found[span.name] = span
    return found


def _check_trace(spans: dict[str, ReadableSpan], route: str, version: str) -> None:
    server = spans[f"POST {route}"]
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN
    assert server.attributes is not None and server.attributes["http.route"] == route
    assert server.attributes["http.response.status_code"] == 200
    assert set(spans) == {f"POST {route}", "mlgate.batch.queue_wait", *STEPS}
    for name in STEPS:
        assert spans[name].parent is not None, name
        assert spans[name].parent.span_id == server.context.span_id, name
    queue = spans["mlgate.batch.queue_wait"]
    assert queue.parent is not None
    assert queue.parent.span_id == spans["mlgate.inference"].context.span_id
    for name in (
        "mlgate.decode",
        "mlgate.cache",
        "mlgate.inference",
        "mlgate.encode",
        "mlgate.batch.queue_wait",
        "mlgate.audit.enqueue",
    ):
        attributes: Any = spans[name].attributes
        assert attributes["mlgate.model"] == "ids", name
        assert attributes["mlgate.version"] == version, name
    cache: Any = spans["mlgate.cache"].attributes
    assert cache["mlgate.cache"] == "miss"
    for span in spans.values():  # every span within the request's own
        assert server.start_time <= span.start_time <= span.end_time <= server.end_time


async def test_v1_and_v2_predictions_are_traced_step_by_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mlgate.access")
    settings = make_settings(
        observability={"access_log": True},
        auth={"anonymous_enabled": False},
        rate_limit={"enabled": True},
        cache={"models": ["ids"]},
        models={"batching": True},
        tracing={"enabled": True, "exporter": "none"},
    )
    exporter = InMemorySpanExporter()
    async with running_app(settings) as (app, client):
        app.state.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
        headers = {"X-API-Key": await create_admin_key(app)}
        v1_trace, v2_trace = "0af7651916cd43dd8448eb211c80319c", "4bf92f3577b34da6a3ce929d0e0e4736"
        v1 = await client.post(
            "/v1/models/ids/predict",
            json={"features": ROW},
            headers={**headers, "traceparent": traceparent(v1_trace)},
        )
        assert v1.status_code == 200, v1.text
        v2 = await client.post(
            "/v2/models/ids/infer",
            json={"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW2}]},
            headers={**headers, "traceparent": traceparent(v2_trace)},
        )
        assert v2.status_code == 200, v2.text
        # The answer names the server span, in the caller's trace.
        assert v1.headers["traceparent"].split("-")[1] == v1_trace
        untraced = await client.get("/v1/models", headers=headers)
        new_trace = untraced.headers["traceparent"].split("-")[1]
        assert new_trace not in (v1_trace, v2_trace)
        await app.state.mlgate.audit.log.flush()
    spans = exporter.get_finished_spans()
    _check_trace(
        _in_trace(spans, v1_trace), "/v1/models/{model}/predict", v1.json()["model_version"]
    )
    _check_trace(_in_trace(spans, v2_trace), "/v2/models/{model}/infer", v2.json()["model_version"])
    # The access line names the trace.
    traced = {getattr(r, "trace_id", None) for r in caplog.records if r.name == "mlgate.access"}
    assert {v1_trace, v2_trace, new_trace} <= traced
    # The audit rows were written in a background batch: a trace of its own.
    (flush,) = [s for s in spans if s.name == "mlgate.audit.flush"]
    assert flush.parent is None
    assert flush.attributes is not None and flush.attributes["mlgate.rows"] == 2


async def test_tracing_is_off_by_default() -> None:
    async with running_app(make_settings(), as_admin=True) as (app, client):
        response = await client.post(
            "/v1/models/ids/predict",
            json={"features": ROW},
            headers={"traceparent": traceparent("0af7651916cd43dd8448eb211c80319c")},
        )
        assert response.status_code == 200
        assert "traceparent" not in response.headers
        assert app.state.tracing is None and app.state.mlgate.tracer is None
        assert app.state.mlgate.dataplane.tracer is None


def test_the_core_install_needs_no_opentelemetry_sdk() -> None:
    """Without the `tracing` extra (the SDK and exporter; FastAPI itself brings the
    OpenTelemetry API) an app builds and nothing tries to import them."""
    code = (
        "import sys\n"
        "SDK = ('opentelemetry.sdk', 'opentelemetry.exporter')\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(SDK):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mlgate.api.app import create_app\n"
        "from mlgate.settings import Settings\n"
        "create_app(Settings(env='test'))\n"
        "assert not any(m.startswith(SDK) for m in sys.modules)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
