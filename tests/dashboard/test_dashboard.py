"""The live dashboard in headless Chromium against a real `mlgate serve`: sign in with
an API key, send traffic, and see it in the charts (drawn pixels) and the detections
feed within seconds; a predict-only key sees only its own traffic; no console errors.

Skips without Debian's chromium (never a downloaded browser), except under CI=true.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from tests.servers import LiveServer, RunningServer

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
PORT_SCAN = [54, 1, 1, 0, 6, 0, 0, 0, 0, 6, 6, 6, 0, 111111.1111, 37037.037, 54, 0, 54, 54]
PORT_SCAN += [0] * 14 + [40, 20, 18518.5185, 18518.5185, 0, 6, 2, 3.4641, 12, 0, 0, 0, 1]
PORT_SCAN += [0, 0, 0, 0, 1, 3, 0, 6, 40, 0, 0, 0, 0, 0, 0, 1, 0, 1, 6, 29200, 0, 0, 40]
PORT_SCAN += [0] * 8
PUMP_BASELINE = {
    "temperature": {"mean": 89.0, "std": 1.0},
    "vibration": {"mean": 0.2, "std": 0.02},
    "pressure": {"mean": 0.05, "std": 0.01},
    "flow_rate": {"mean": 125.0, "std": 2.0},
    "current": {"mean": 2.5, "std": 0.2},
}
NORMAL_READING = [89.4, 0.21, 0.05, 125.7, 2.5]
FAULTY_READING = [95.0, 2.8, 6.5, 152.0, 87.5]
# The series colours of dashboard.css (.c0 ... .c7).
PALETTE = [(0x4F, 0xB3, 0xFF), (0xFF, 0x6B, 0x6B), (0xFF, 0xD1, 0x66), (0x7B, 0xD8, 0x8F)]
PALETTE += [(0xC7, 0x92, 0xEA), (0xFF, 0x9F, 0x43), (0x5C, 0xE1, 0xE6), (0xF7, 0x8F, 0xB3)]


def _chromium() -> str:
    if not Path(CHROMIUM).is_file():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(live_server: LiveServer) -> tuple[RunningServer, str, str]:
    """The shared server, its admin's key and a predict-only key."""
    _chromium()
    admin = {"X-API-Key": live_server.admin_key}
    user = httpx.post(
        f"{live_server.url}/v1/admin/users",
        json={"username": "sensor-app", "scopes": ["predict"], "tier": "enterprise"},
        headers=admin,
    )
    assert user.status_code == 201, user.text
    key = httpx.post(
        f"{live_server.url}/v1/admin/api-keys",
        json={"user_id": user.json()["id"], "name": "pumps"},
        headers=admin,
    )
    assert key.status_code == 201, key.text
    return live_server.server, live_server.admin_key, key.json()["key"]


class Browser:
    """A Chromium page that records console errors."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield lambda: Browser(chromium.new_page(viewport={"width": 1280, "height": 1500}))
        finally:
            chromium.close()


def _until(check: Any, timeout_s: float = 8) -> float:
    """Poll ``check()`` (Python-side: the page's CSP forbids evaluated strings) until it
    is true; returns the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, "the dashboard did not show it in time"
        time.sleep(0.1)
    return time.monotonic() - started


def _sign_in(tab: Browser, url: str, key: str) -> None:
    tab.page.goto(f"{url}/dashboard")
    tab.page.fill("#api-key", key)
    tab.page.click("#key-form button")
    tab.page.wait_for_selector("#panels:not([hidden])", timeout=5000)


def _traffic(url: str, key: str, device: str | None = None) -> dict[str, Any]:
    """A port scan and a benign flow (ids), a normal and a faulty pump reading (iot);
    returns the ids answer."""
    headers = {"X-API-Key": key}
    ids = httpx.post(
        f"{url}/v1/models/ids/predict/batch",
        json={"instances": [PORT_SCAN, [0.5] * 77]},
        headers=headers,
    )
    assert ids.status_code == 200, ids.text
    body: dict[str, Any] = {"instances": [NORMAL_READING, FAULTY_READING]}
    if device:
        # Version 2 scores against the device's uploaded baseline (stable, 3, would
        # calibrate the device's own detector on its first 400 readings first).
        body["device_id"] = device
        body["version"] = "2"
    iot = httpx.post(f"{url}/v1/models/iot/predict/batch", json=body, headers=headers)
    assert iot.status_code == 200, iot.text
    return dict(ids.json())


def _table(tab: Browser, selector: str) -> list[list[str]]:
    rows = tab.page.locator(f"{selector} tr").all()
    return [[cell.inner_text() for cell in row.locator("td").all()] for row in rows]


def _drawn_pixels(tab: Browser, selector: str) -> int:
    """Pixels of the chart painted in a series colour."""
    image = Image.open(io.BytesIO(tab.page.locator(selector).screenshot())).convert("RGB")
    return sum(
        count
        for count, rgb in image.getcolors(maxcolors=1 << 20) or []
        if any(sum(abs(a - b) for a, b in zip(rgb, c, strict=True)) < 40 for c in PALETTE)
    )


def _feed(tab: Browser) -> list[list[str]]:
    rows = tab.page.locator("#feed tr[data-prediction-id]").all()
    return [[cell.inner_text() for cell in row.locator("td").all()] for row in rows]


def test_a_predict_key_sees_its_own_traffic_live(
    server: tuple[RunningServer, str, str], browser: Any
) -> None:
    running, admin_key, predict_key = server
    url = running.url
    me = httpx.get(f"{url}/v1/users/me", headers={"X-API-Key": predict_key}).json()
    baseline = httpx.put(
        f"{url}/v1/models/iot/devices/pump-7/baseline",
        params={"owner": me["device_owner"]},
        json={"baseline": PUMP_BASELINE},
        headers={"X-API-Key": admin_key},
    )
    assert baseline.status_code == 200, baseline.text

    tab = browser()
    _sign_in(tab, url, predict_key)
    assert "predict" in tab.page.inner_text("#who")
    # Without models:read the model panels are not shown (and not requested).
    for panel in ("#panel-quality", "#panel-drift", "#panel-models"):
        assert tab.page.locator(panel).is_hidden()
    # Someone else's traffic, then the caller's own.
    _traffic(url, admin_key)
    for _ in range(3):
        _traffic(url, predict_key, device="pump-7")
    # Polled every 2 s: on the page within a few seconds.
    _until(lambda: tab.page.locator("#feed tr[data-prediction-id]").count() >= 6)

    rows = _feed(tab)
    principal = f"key:{me['key_id']}"
    assert {row[5] for row in rows} == {principal}  # the admin's detections are not shown
    detections = {row[2] for row in rows}
    assert detections == {"PortScan", "anomaly"}
    # The faulty readings, and normal ones smoothed together with a faulty one before.
    pump = [row for row in rows if row[4] == "pump-7"]
    assert len(pump) >= 3
    assert all(row[1] == "iot 2" and "≥ threshold" in row[3] for row in pump)

    for chart in ("#chart-rate", "#chart-latency", "#chart-classes", "#chart-attacks"):
        assert _drawn_pixels(tab, chart) > 20, chart
    legend = tab.page.inner_text("#legend-classes")
    assert "ids: PortScan" in legend and "iot: anomaly" in legend
    assert tab.errors == []


def test_an_admin_sees_everything_and_the_model_panels(
    server: tuple[RunningServer, str, str], browser: Any, tmp_path: Path
) -> None:
    running, admin_key, predict_key = server
    url = running.url
    admin = {"X-API-Key": admin_key}
    # Traffic of the last minutes is there at sign-in (the slow panels poll every 15 s):
    # a labelled port scan, and a prediction of ids 2 (calibrated: accuracy is estimated).
    port_scan = _traffic(url, admin_key)["predictions"][0]
    feedback = httpx.post(
        f"{url}/v1/predictions/{port_scan['prediction_id']}/feedback",
        json={"label": "PortScan"},
        headers=admin,
    )
    assert feedback.status_code == 200, feedback.text
    v2 = httpx.post(
        f"{url}/v1/models/ids/predict", json={"features": PORT_SCAN, "version": "2"}, headers=admin
    )
    assert v2.status_code == 200, v2.text
    _traffic(url, predict_key, device="pump-7")
    tab = browser()
    _sign_in(tab, url, admin_key)
    # An error answer (a row of the wrong length) is counted in the usage errors.
    bad = httpx.post(f"{url}/v1/models/ids/predict", json={"features": [1, 2]}, headers=admin)
    assert bad.status_code == 422
    _until(lambda: len({row[5] for row in _feed(tab)}) >= 2)
    # The slow panels (every 15 s) were drawn right after the first traffic poll.
    tab.page.wait_for_selector("#models tr", timeout=8000)
    models = tab.page.inner_text("#models")
    assert "ids" in models and "stable→" in models
    tab.page.wait_for_selector("#quality tr", timeout=8000)
    quality = {(row[0], row[1]): row[2:] for row in _table(tab, "#quality")}
    _predictions, labelled, measured, _estimated = quality[("ids", "3")]
    assert int(labelled) >= 1 and measured.endswith("%")
    assert quality[("ids", "2")][3].endswith("%")  # estimated without labels
    assert "iot 3" in tab.page.inner_text("#drift")  # stable, from the readings without a device
    # Errors and refusals come from the usage counters (rates over 10 s).
    _until(lambda: _drawn_pixels(tab, "#chart-errors") > 20, timeout_s=12)
    for chart in ("#chart-rate", "#chart-classes", "#chart-attacks", "#chart-errors"):
        assert _drawn_pixels(tab, chart) > 20, chart
    shot = tmp_path / "dashboard.png"
    tab.page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("MLGATE_UPDATE_SCREENSHOT") == "1":
        shutil.copy(shot, ROOT / "docs" / "dashboard.png")
    assert tab.errors == []


def test_the_page_is_static_and_locked_down(server: tuple[RunningServer, str, str]) -> None:
    """No credentials needed for the files, a strict content security policy (no inline
    code), and nothing outside the dashboard's own files."""
    url = server[0].url
    page = httpx.get(f"{url}/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in page.text and " style=" not in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN
    script = httpx.get(f"{url}/dashboard/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    for name in ("..%2Fsettings.py", "__init__.py", "missing.js", ".hidden.js"):
        assert httpx.get(f"{url}/dashboard/{name}").status_code == 404, name


def test_password_sign_in_within_a_small_rate_budget(
    server: tuple[RunningServer, str, str], browser: Any
) -> None:
    """Username and password: the token lives in the tab's session storage only, and a
    free-tier account (10 requests a minute) is polled slower instead of being refused."""
    running, admin_key, _ = server
    url = running.url
    password = secrets.token_urlsafe(16)
    user = httpx.post(
        f"{url}/v1/admin/users",
        json={"username": "viewer", "password": password, "scopes": ["predict"], "tier": "free"},
        headers={"X-API-Key": admin_key},
    )
    assert user.status_code == 201, user.text
    tab = browser()
    tab.page.goto(f"{url}/dashboard")
    tab.page.fill("#username", "viewer")
    tab.page.fill("#password", password)
    tab.page.click("#password-form button")
    tab.page.wait_for_selector("#panels:not([hidden])", timeout=5000)
    assert tab.page.input_value("#password") == ""
    stored = tab.page.evaluate("() => [localStorage.length, Object.keys(sessionStorage)]")
    assert stored == [0, ["mlgate.dashboard.credentials"]]
    assert "Bearer " in tab.page.evaluate(
        "() => sessionStorage.getItem(Object.keys(sessionStorage)[0])"
    )
    # Three requests at sign-in, two per poll: the budget runs low within seconds and the
    # page slows down rather than being answered 429 (a console error would show it).
    _until(lambda: "slowed to every" in tab.page.inner_text("#status"), timeout_s=10)
    time.sleep(1)
    assert "slowed to every" in tab.page.inner_text("#status")
    # A reload keeps the session; signing out forgets it.
    tab.page.reload()
    tab.page.wait_for_selector("#panels:not([hidden])", timeout=5000)
    tab.page.click("#sign-out")
    assert tab.page.evaluate("() => sessionStorage.length") == 0
    tab.page.reload()
    tab.page.wait_for_selector("#sign-in:not([hidden])", timeout=5000)
    assert tab.errors == []


def test_a_models_read_key_sees_only_the_model_panels(
    server: tuple[RunningServer, str, str], browser: Any
) -> None:
    """Without `predict` the traffic panels are hidden and their APIs never called (a
    403 would be a console error); the model panels are filled."""
    running, admin_key, _ = server
    admin = {"X-API-Key": admin_key}
    user = httpx.post(
        f"{running.url}/v1/admin/users",
        json={"username": "model-owner", "scopes": ["models:read"], "tier": "enterprise"},
        headers=admin,
    )
    assert user.status_code == 201, user.text
    key = httpx.post(
        f"{running.url}/v1/admin/api-keys",
        json={"user_id": user.json()["id"], "name": "models"},
        headers=admin,
    ).json()["key"]
    tab = browser()
    _sign_in(tab, running.url, key)
    tab.page.wait_for_selector("#models tr", timeout=8000)
    assert {row[0] for row in _table(tab, "#models")} == {"ids", "iot"}
    for panel in ("#panel-rate", "#panel-feed", "#panel-classes"):
        assert tab.page.locator(panel).is_hidden()
    assert tab.errors == []
