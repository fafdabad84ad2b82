"""The workloads, the request each server gets for each of them, and the wrk runs.

W1 is one row per request; W2 is 1000 rows per request, as JSON or as Open Inference
Protocol binary tensors. Each server gets the request its own API expects for the same
rows: mlgate its v1 routes (``/v2`` for binary tensors), MLServer the OIP JSON of its
``/v2/models/<m>/infer``, the ceiling whatever mlgate gets (it ignores the body).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson

from benchkit.tools import BENCH_DIR

if TYPE_CHECKING:
    from benchkit.model import BenchModel

MODEL_NAME = "mlp"
"""The benchmark model's name in every server."""
LUA_SCRIPT = BENCH_DIR / "lua" / "post.lua"
OIP_INPUT = "input-0"
BINARY_HEADER = "Inference-Header-Content-Length"
# MLServer's sklearn runtime returns predict() unless asked; mlgate answers with the
# probabilities, so MLServer is asked for them too: both do the same work.
MLSERVER_OUTPUT = "predict_proba"


@dataclass(frozen=True)
class Workload:
    """What wrk sends: rows per request, encoding, concurrent connections."""

    name: str
    connections: int
    rows: int
    encoding: Literal["json", "binary"]
    about: str


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", 32, 1, "json", "one row per request, 32 connections"),
        Workload("W2-json", 4, 1000, "json", "1000 rows per request as JSON, 4 connections"),
        Workload("W2-bin", 4, 1000, "binary", "1000 rows per request as OIP binary tensors"),
        Workload("W1-c64", 64, 1, "json", "one row per request, 64 connections (batching)"),
    )
}


@dataclass(frozen=True)
class Request:
    """One request as wrk sends it again and again."""

    path: str
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.body)
        return path


def _floats(rows: np.ndarray) -> list[Any]:
    return list(np.asarray(rows, dtype=np.float64).tolist())


def oip_binary_request(path: str, rows: np.ndarray, input_name: str = OIP_INPUT) -> Request:
    """An OIP request whose tensor travels as raw little-endian FP64 after a JSON header,
    asking for binary outputs (the binary tensor data extension)."""
    data = np.ascontiguousarray(rows, dtype="<f8").tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": input_name,
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": len(data)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    return Request(
        path,
        "application/octet-stream",
        header + data,
        {BINARY_HEADER: str(len(header))},
    )


def oip_json_request(path: str, rows: np.ndarray) -> Request:
    """An OIP JSON request (flat data, row-major), asking for the class probabilities."""
    body = {
        "inputs": [
            {
                "name": OIP_INPUT,
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": _floats(rows.reshape(-1)),
            }
        ],
        "outputs": [{"name": MLSERVER_OUTPUT}],
    }
    return Request(path, "application/json", orjson.dumps(body))


def build_request(kind: str, workload: Workload, model: BenchModel) -> Request | None:
    """The request ``kind`` of server gets for ``workload``; None: not run on that server."""
    rows = model.w1_row.reshape(1, -1) if workload.rows == 1 else model.w2_rows
    if kind == "mlserver":
        if workload.encoding == "binary":
            return None  # MLServer's REST API has no binary tensors: compared with its JSON.
        return oip_json_request(f"/v2/models/{MODEL_NAME}/infer", rows)
    if kind not in ("mlgate", "ceiling"):
        raise ValueError(f"unknown server kind {kind!r}")
    if workload.encoding == "binary":
        return oip_binary_request(f"/v2/models/{MODEL_NAME}/infer", rows)
    if workload.rows == 1:
        body = orjson.dumps({"features": _floats(rows[0])})
        return Request(f"/v1/models/{MODEL_NAME}/predict", "application/json", body)
    body = orjson.dumps({"instances": _floats(rows)})
    return Request(f"/v1/models/{MODEL_NAME}/predict/batch", "application/json", body)


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and every kind of error."""

    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int
    socket_errors: dict[str, int]

    @property
    def req_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def errors(self) -> int:
        """Responses that were not 2xx plus connect/read/write errors and timeouts."""
        return self.non_2xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "duration_s": round(self.duration_s, 3),
            "req_per_s": round(self.req_per_s, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        }


_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.IGNORECASE
)


def parse_wrk_output(text: str) -> WrkResult:
    """Read the ``BENCH_RESULT`` line of post.lua and wrk's own error lines."""
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise ValueError("wrk printed no BENCH_RESULT line (did it run post.lua?):\n" + text)
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    latency, errors = data["latency_us"], data["errors"]
    socket = {k: int(errors[k]) for k in ("connect", "read", "write", "timeout")}
    if match := _SOCKET.search(text):
        names = ("connect", "read", "write", "timeout")
        printed = dict(zip(names, map(int, match.groups()), strict=True))
        socket = {k: max(socket[k], printed[k]) for k in socket}
    non_2xx = int(errors["status"])
    if match := _NON_2XX.search(text):
        non_2xx = max(non_2xx, int(match.group(1)))
    return WrkResult(
        requests=int(data["requests"]),
        duration_s=int(data["duration_us"]) / 1e6,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        non_2xx=non_2xx,
        socket_errors=socket,
    )


def wrk_argv(
    url: str,
    body_file: Path,
    request: Request,
    *,
    connections: int,
    duration_s: float,
    load_core: int,
    extra_headers: dict[str, str],
) -> list[str]:
    """The wrk command line, pinned to the load core: one thread, as in issue 9."""
    headers = {**request.headers, **extra_headers}
    return [
        "taskset",
        "-c",
        str(load_core),
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration_s:g}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA_SCRIPT),
        url + request.path,
        "--",
        str(body_file),
        request.content_type,
        *(f"{name}: {value}" for name, value in headers.items()),
    ]


def run_wrk(argv: list[str], timeout_s: float) -> tuple[WrkResult, str]:
    """Run wrk; its result and everything it printed."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    text = done.stdout + (("\n[stderr]\n" + done.stderr) if done.stderr else "")
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}:\n{text}")
    return parse_wrk_output(text), text
