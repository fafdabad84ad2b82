"""A web application on another origin calls mlgate from the browser (headless Chromium,
real CORS): JSON predictions with an API key and a W3C ``traceparent`` (what
OpenTelemetry's browser instrumentation adds to every fetch), binary tensors with
``Inference-Header-Content-Length`` both ways, a gzip-compressed body, and the headers
a client reads back (request id, rate limits, trace, why a key was refused). An origin
not in ``MLGATE_SERVER__CORS_ORIGINS`` is refused at the preflight.

Skips without Debian's chromium (never a downloaded browser), except under CI=true.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.dashboard.test_dashboard import PORT_SCAN
from tests.servers import LiveServer, live_server_with_admin

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

#: Runs in the application's page: each call as a web application makes it.
CALLS = """
async ({url, key, flow, traceparent}) => {
  const read = async (r) => ({
    status: r.status,
    requestId: r.headers.get("x-request-id"),
    remaining: r.headers.get("ratelimit-remaining"),
    traceparent: r.headers.get("traceparent"),
    wwwAuthenticate: r.headers.get("www-authenticate"),
    headerLength: r.headers.get("inference-header-content-length"),
  });
  const out = {};

  const v1 = await fetch(`${url}/v1/models/ids/predict`, {
    method: "POST",
    headers: {"X-API-Key": key, "Content-Type": "application/json",
              "traceparent": traceparent},
    body: JSON.stringify({features: flow}),
  });
  out.v1 = {...await read(v1), body: await v1.json()};

  // One [1, 77] FP64 tensor as binary data after the JSON header; binary outputs asked.
  const header = new TextEncoder().encode(JSON.stringify({
    inputs: [{name: "input", shape: [1, 77], datatype: "FP64",
              parameters: {binary_data_size: 77 * 8}}],
    outputs: [{name: "probabilities", parameters: {binary_data: true}}],
  }));
  const body = new Uint8Array(header.length + 77 * 8);
  body.set(header, 0);
  const values = new Float64Array(flow);
  body.set(new Uint8Array(values.buffer), header.length);
  const v2 = await fetch(`${url}/v2/models/ids/infer`, {
    method: "POST",
    headers: {"Authorization": `Bearer ${key}`, "Content-Type": "application/octet-stream",
              "Inference-Header-Content-Length": String(header.length)},
    body,
  });
  const v2read = await read(v2);
  const bytes = new Uint8Array(await v2.arrayBuffer());
  if (v2read.headerLength === null) {
    out.v2 = {...v2read, text: new TextDecoder().decode(bytes)};
  } else {
    const length = Number(v2read.headerLength);
    const doc = JSON.parse(new TextDecoder().decode(bytes.slice(0, length)));
    const probabilities = Array.from(new Float64Array(bytes.slice(length).buffer));
    out.v2 = {...v2read, doc, probabilities};
  }

  const json = JSON.stringify({inputs: [{name: "input", shape: [1, 77], datatype: "FP64",
                                         data: flow}]});
  const gzipped = await new Response(
    new Blob([json]).stream().pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
  const gz = await fetch(`${url}/v2/models/ids/infer`, {
    method: "POST",
    headers: {"X-API-Key": key, "Content-Type": "application/json",
              "Content-Encoding": "gzip"},
    body: gzipped,
  });
  out.gzip = {...await read(gz), body: await gz.json()};

  const refused = await fetch(`${url}/v1/models/ids/predict`, {
    method: "POST",
    headers: {"X-API-Key": "mlg_wrong", "Content-Type": "application/json"},
    body: JSON.stringify({features: flow}),
  });
  out.refused = {...await read(refused), body: await refused.json()};
  return out;
}
"""


def _chromium() -> str:
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return str(CHROMIUM)


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>app</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def app_origin() -> Iterator[str]:
    """The web application's page, served from its own origin (another port of the
    loopback address: Chromium keeps a page whose address it does not know from calling
    a loopback one)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, app_origin: str) -> Iterator[LiveServer]:
    with live_server_with_admin(
        tmp_path_factory.mktemp("cors"),
        ["ids"],
        MLGATE_SERVER__CORS_ORIGINS=json.dumps([app_origin]),
        MLGATE_TRACING__ENABLED="true",
    ) as running:
        yield running


def test_a_web_application_on_another_origin(server: LiveServer, app_origin: str) -> None:
    executable = _chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{app_origin}/")
            out: dict[str, Any] = page.evaluate(
                CALLS,
                {
                    "url": server.url,
                    "key": server.admin_key,
                    "flow": PORT_SCAN,
                    "traceparent": TRACEPARENT,
                },
            )
        finally:
            browser.close()
    # The browser logs the refused key's 401 (asked for below), nothing else: no CORS error.
    assert [e for e in errors if "status of 401" not in e] == [], errors

    v1 = out["v1"]
    assert v1["status"] == 200, v1
    assert v1["body"]["predicted_class_name"] == "PortScan"
    assert v1["requestId"] == v1["body"]["request_id"]
    assert v1["remaining"] is not None and int(v1["remaining"]) >= 0
    # The server span continues the application's trace.
    assert v1["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]

    v2 = out["v2"]
    assert v2["status"] == 200, v2
    (output,) = v2["doc"]["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [1, 7]
    probabilities = v1["body"]["probabilities"]
    assert v2["probabilities"] == pytest.approx(list(probabilities.values()), abs=1e-12)

    gz = out["gzip"]
    assert gz["status"] == 200, gz
    (names,) = [o for o in gz["body"]["outputs"] if o["name"] == "predicted_class_name"]
    assert names["data"] == ["PortScan"]

    refused = out["refused"]
    assert refused["status"] == 401
    assert refused["body"]["error"]["code"] == "unauthorized"
    assert refused["wwwAuthenticate"].startswith("Bearer")


def test_another_origin_is_refused_at_the_preflight(server: LiveServer, app_origin: str) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type, traceparent",
    }
    allowed = httpx.options(
        f"{server.url}/v1/models/ids/predict", headers={"Origin": app_origin, **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == app_origin
    other = httpx.options(
        f"{server.url}/v1/models/ids/predict",
        headers={"Origin": "http://elsewhere.test", **preflight},
    )
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
