"""One structured access line per request (hot routes too), every line valid JSON with
its request id, and no secret or feature value in any line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest

from mlgate.logs import (
    ConsoleFormatter,
    JSONFormatter,
    LineHandler,
    iso_ms,
    logging_config,
    wants_json,
)
from mlgate.observability.http import _line_handler
from tests.conftest import create_admin_key, make_settings, running_app

PASSWORD = "correct-horse-battery-staple-42"
#: Feature values nobody else sends: if one shows up in a log line, inputs are logged.
FEATURES = [987654.321 + i for i in range(77)]


class _Lines:
    """A text stream that keeps each line written to it."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, text: str) -> int:
        self.lines.extend(text.splitlines())
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture(params=["capture-handler", "served-config"])
def log_lines(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    """Every line mlgate's and uvicorn's loggers write: through a capture handler with the
    JSON formatter (the access line goes through :mod:`logging`), or through the
    :class:`LineHandler` the way ``mlgate serve`` sets logging up (the access line is
    written straight by the handler)."""
    lines: list[str] = []
    names = ("mlgate", "mlgate.access", "uvicorn")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    handler: logging.Handler
    if request.param == "capture-handler":

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                lines.append(self.format(record))

        handler = Collect(level=logging.DEBUG)
        handler.setFormatter(JSONFormatter())
    else:
        config = logging_config("info", True)
        assert config["handlers"]["default"]["class"] == "mlgate.logs.LineHandler"
        assert config["loggers"]["mlgate.access"] == {
            "handlers": ["default"],
            "level": "INFO",
            "propagate": False,
        }
        handler = LineHandler(_Lines(lines))  # type: ignore[arg-type]
        handler.setFormatter(JSONFormatter())
    for lg in loggers:
        lg.handlers = [handler]
        lg.setLevel(logging.INFO)
        lg.propagate = request.param == "capture-handler" and lg.name == "mlgate.access"
    if request.param == "capture-handler":
        logging.getLogger("mlgate.access").handlers = []  # reaches Collect through "mlgate"
        assert _line_handler() is None
    else:
        assert _line_handler() is handler  # the direct path is the one under test
    try:
        yield lines
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers = handlers
            lg.setLevel(level)
            lg.propagate = propagate


async def test_one_access_line_per_request_with_context_and_no_secrets(
    log_lines: list[str],
) -> None:
    settings = make_settings(
        auth={"anonymous_enabled": False},
        observability={"access_log": True},
        cache={"models": ["ids"]},
    )
    async with running_app(settings) as (app, client):
        admin = await create_admin_key(app)
        accounts = app.state.mlgate.accounts
        await accounts.create_user("zoe", password=PASSWORD, scopes=["predict", "models:read"])
        log_lines.clear()  # from here on, every line belongs to a request
        sent = {
            "login": await client.post(
                "/v1/token",
                data={"username": "zoe", "password": PASSWORD},
                headers={"X-Request-ID": "req-login"},
            ),
            "v1": await client.post(
                "/v1/models/ids/predict?api_key=" + admin,  # a credential in the URL
                json={"features": FEATURES},
                headers={"X-API-Key": admin, "X-Request-ID": "req-v1"},
            ),
            "v1-again": await client.post(
                "/v1/models/ids/predict",
                json={"features": FEATURES},
                headers={"X-API-Key": admin, "X-Request-ID": "req-v1-again"},
            ),
            "v2": await client.post(
                "/v2/models/ids/infer",
                json={
                    "inputs": [
                        {"name": "x", "shape": [2, 77], "datatype": "FP64", "data": FEATURES * 2}
                    ]
                },
                headers={"X-API-Key": admin, "X-Request-ID": "req-v2"},
            ),
            "bad": await client.post(
                "/v1/models/ids/predict",
                json={"features": FEATURES[:3]},
                headers={"X-API-Key": admin, "X-Request-ID": "req-bad"},
            ),
            "denied": await client.get(
                "/v1/models", headers={"X-API-Key": admin[:-2] + "xx", "X-Request-ID": "req-401"}
            ),
        }
        token = sent["login"].json()["access_token"]
        sent["bearer"] = await client.get(
            "/v1/models",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-bearer"},
        )
    statuses = {name: r.status_code for name, r in sent.items()}
    assert statuses == {
        "login": 200,
        "v1": 200,
        "v1-again": 200,
        "v2": 200,
        "bad": 422,
        "denied": 401,
        "bearer": 200,
    }
    records = [orjson.loads(line) for line in log_lines]  # every line is JSON
    assert all(r.get("request_id") for r in records), records
    access = {r["request_id"]: r for r in records if r["logger"] == "mlgate.access"}
    assert len([r for r in records if r["logger"] == "mlgate.access"]) == len(sent)
    v1 = access["req-v1"]
    assert v1["route"] == "/v1/models/{model}/predict"
    assert v1["status"] == 200 and v1["method"] == "POST"
    assert v1["model"] == "ids" and v1["model_version"] == sent["v1"].json()["model_version"]
    assert v1["rows"] == 1 and v1["cache"] == "miss"
    assert v1["principal"].startswith("key:")
    assert v1["client_ip"] and v1["duration_ms"] > 0
    assert v1["target"] == "/v1/models/ids/predict?api_key=[REDACTED]"
    assert access["req-v1-again"]["cache"] == "hit"
    assert access["req-v2"]["route"] == "/v2/models/{model}/infer"
    assert access["req-v2"]["rows"] == 2
    assert access["req-bad"]["status"] == 422
    assert access["req-401"]["status"] == 401 and "principal" not in access["req-401"]
    assert access["req-bearer"]["principal"].startswith("user:")
    assert access["req-login"]["route"] == "/v1/token"

    everything = "\n".join(log_lines)
    secret_part = admin.split("_", 2)[2]
    for secret in (PASSWORD, admin, secret_part, token):
        assert secret not in everything
    for value in FEATURES[:5]:
        assert str(value) not in everything and f"{value:g}" not in everything


def test_json_unless_a_terminal_and_readable_lines_on_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert wants_json(None)  # the test's stderr is captured: not a terminal
    assert not wants_json(False) and wants_json(True)
    monkeypatch.setattr("sys.stderr", Terminal())
    assert not wants_json(None)
    config = logging_config("debug", None)
    assert config["formatters"]["default"]["()"] == "mlgate.logs.ConsoleFormatter"
    assert config["loggers"]["mlgate"]["level"] == "DEBUG"
    record = logging.LogRecord("mlgate.access", logging.INFO, "", 0, "POST %s", ("/x",), None)
    record.route = "/x"
    line = ConsoleFormatter().format(record)
    assert "mlgate.access: POST /x" in line and "route=/x" in line


def test_iso_ms_writes_what_datetime_writes() -> None:
    from datetime import UTC, datetime

    for timestamp in (0.0, 1_764_590_400.0, 1_764_590_400.0004, 1_764_590_401.9995, 1.5):
        expected = datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")
        assert iso_ms(timestamp) == expected, timestamp


def test_the_direct_line_is_the_formatter_line_and_declines_when_filtered() -> None:
    """The access line written without a LogRecord carries what the formatter writes;
    a handler with a filter (or another formatter) declines, so nothing skips them."""
    lines: list[str] = []
    handler = LineHandler(_Lines(lines))  # type: ignore[arg-type]
    handler.setFormatter(JSONFormatter())
    fields = {"route": "/v1/models/{model}/predict", "status": 200, "duration_ms": 1.5}
    assert handler.write_fields("mlgate.access", "info", "POST /x 200", fields)
    record = logging.LogRecord("mlgate.access", logging.INFO, "", 0, "POST /x 200", None, None)
    record.__dict__.update(fields)
    direct, formatted = orjson.loads(lines[0]), orjson.loads(JSONFormatter().format(record))
    assert direct.pop("ts")[:4] == formatted.pop("ts")[:4]
    assert direct == formatted
    assert list(direct) == list(formatted)  # the same order of keys too

    handler.addFilter(lambda record: True)
    assert not handler.write_fields("mlgate.access", "info", "POST /x 200", fields)
    handler.filters.clear()
    handler.setFormatter(ConsoleFormatter())
    assert not handler.write_fields("mlgate.access", "info", "POST /x 200", fields)
    assert len(lines) == 1
