"""Structured logging: one JSON object per line, carrying the request context
(request id, principal, model, version, protocol) - or, on a terminal, readable lines
with the same fields as ``key=value``.

The access log writes each request's target; credentials a client put in its query
string (refused by the API, which reads them only from headers) are redacted first.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote_plus

import orjson

from mlgate.context import log_context

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    """The request context, then the fields the call passed with ``extra=``."""
    fields = log_context()
    for key, value in record.__dict__.items():
        if key not in _STANDARD_ATTRS and not key.startswith("_"):
            fields[key] = value
    return fields


class ConsoleFormatter(logging.Formatter):
    """Readable lines for a terminal: time, level, logger, message, then the request
    context and extras as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {k: v for k, v in _extras(record).items() if v is not None}
        if fields:
            line += "  " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


_second: tuple[int, str] = (-1, "")


def iso_ms(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ISO 8601 UTC with milliseconds, the
    way ``datetime.isoformat(timespec="milliseconds")`` writes it; the date and time of
    the current second are formatted once."""
    global _second
    whole = int(timestamp)
    second, prefix = _second
    if whole != second:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, prefix)
    millis = min(int((timestamp - whole) * 1000), 999)
    return f"{prefix}.{millis:03d}+00:00"


class JSONFormatter(logging.Formatter):
    """Formats a record as JSON: time, level, logger, process id, message, request id and
    extras (the process id tells apart the workers of ``mlgate serve --workers N``)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": iso_ms(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        payload.update(_extras(record))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class LineHandler(logging.StreamHandler):
    """The handler :func:`logging_config` installs: a stream handler that can also write
    a line straight from its fields.

    The access log writes one line per request; through :mod:`logging` that line costs
    a ``LogRecord``, a caller lookup and a formatter pass - tens of microseconds, a
    measurable share of a one-row prediction. :meth:`write_fields` writes the same JSON
    object :class:`JSONFormatter` would (time, level, logger, pid, message, request
    context, fields) in one ``orjson`` call, when this handler formats JSON and has no
    filters; otherwise it declines and the caller logs the usual way.
    """

    def write_fields(self, logger: str, level: str, message: str, fields: dict[str, Any]) -> bool:
        """Write one JSON line; False (nothing written) when this handler is not set up
        for it (another formatter, a filter)."""
        if type(self.formatter) is not JSONFormatter or self.filters:
            return False
        payload: dict[str, Any] = {
            "ts": iso_ms(time.time()),
            "level": level,
            "logger": logger,
            "pid": os.getpid(),
            "message": message,
        }
        payload.update(log_context())
        payload.update(fields)
        line = orjson.dumps(payload, default=str).decode() + self.terminator
        self.acquire()
        try:
            self.stream.write(line)
            self.flush()
        except Exception:  # a closed or broken stream: reported as logging reports it
            self.handleError(logging.LogRecord(logger, logging.INFO, "", 0, message, None, None))
        finally:
            self.release()
        return True


REDACTED = "[REDACTED]"
# Query parameter names that carry credentials, compared without case, '-' and '_'.
_CREDENTIAL_NAMES = frozenset(
    {
        "apikey",
        "xapikey",
        "key",
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "bearer",
        "jwt",
        "auth",
        "authorization",
        "password",
        "passwd",
        "pwd",
        "secret",
        "clientsecret",
        "credential",
        "credentials",
        "session",
        "sessionid",
        "signature",
        "sig",
    }
)
# Credentials recognisable wherever they appear: mlgate API keys and JWTs.
_CREDENTIAL_VALUES = re.compile(
    r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]+|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?"
)


def _is_credential_name(name: str) -> bool:
    normalized = unquote_plus(name).lower().replace("-", "").replace("_", "")
    return normalized in _CREDENTIAL_NAMES


def redact_target(target: str) -> str:
    """A request target (path and query) with credentials replaced by ``[REDACTED]``."""
    path, sep, query = target.partition("?")
    path = _CREDENTIAL_VALUES.sub(REDACTED, path)
    if not sep:
        return path
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and (_is_credential_name(name) or _CREDENTIAL_VALUES.search(unquote_plus(value))):
            value = REDACTED
        pairs.append(f"{_CREDENTIAL_VALUES.sub(REDACTED, name)}{eq}{value}")
    return f"{path}?{'&'.join(pairs)}"


class RedactCredentials(logging.Filter):
    """Redacts credentials in the request targets of uvicorn's access log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_target(arg) if isinstance(arg, str) and "/" in arg else arg
                for arg in record.args
            )
        return True


def wants_json(json_logs: bool | None) -> bool:
    """JSON unless said otherwise; by default, JSON unless stderr is a terminal."""
    if json_logs is not None:
        return json_logs
    return not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


def logging_config(level: str = "info", json_logs: bool | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping for mlgate and uvicorn (``json_logs``
    None: JSON unless stderr is a terminal)."""
    formatter = {
        "()": "mlgate.logs.JSONFormatter"
        if wants_json(json_logs)
        else "mlgate.logs.ConsoleFormatter"
    }
    handler = {
        "class": "mlgate.logs.LineHandler",
        "formatter": "default",
        "stream": "ext://sys.stderr",
    }
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "filters": {"redact_credentials": {"()": "mlgate.logs.RedactCredentials"}},
        "handlers": {"default": handler},
        "loggers": {
            "mlgate": {"handlers": ["default"], "level": upper, "propagate": False},
            # Its own entry, so that the access line may skip the logging machinery
            # (mlgate.observability.http): one handler, no filter, no propagation.
            "mlgate.access": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {
                "handlers": ["default"],
                "level": upper,
                "propagate": False,
                "filters": ["redact_credentials"],
            },
        },
    }
