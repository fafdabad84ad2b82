"""Before loading a server: does it answer the workload's request, and correctly?

A server is loaded only after the exact request wrk will send came back 200 with the
class the joblib model gives for those rows (all 1000 of them for W2). A throughput
measured on wrong or refused answers would mean nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from benchkit.model import BenchModel
from benchkit.workloads import BINARY_HEADER, Request, Workload

_DTYPES = {
    "FP64": "<f8",
    "FP32": "<f4",
    "FP16": "<f2",
    "INT64": "<i8",
    "INT32": "<i4",
    "INT16": "<i2",
    "INT8": "<i1",
    "UINT64": "<u8",
    "UINT32": "<u4",
    "UINT16": "<u2",
    "UINT8": "<u1",
    "BOOL": "?",
}


@dataclass(frozen=True)
class CheckResult:
    """``ok``; else ``skip`` (a feature the server does not have yet) or a failure."""

    ok: bool
    message: str = ""
    skip: bool = False


def _bytes_elements(raw: bytes) -> list[str]:
    """OIP BYTES tensor in binary form: each element a 4-byte little-endian length + bytes."""
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 4], "little")
        out.append(raw[i + 4 : i + 4 + n].decode("utf-8", "replace"))
        i += 4 + n
    return out


def oip_outputs(response: httpx.Response) -> list[dict[str, Any]]:
    """The outputs of an OIP answer, JSON or binary, each with its data as ``array``."""
    header_length = response.headers.get(BINARY_HEADER)
    content = response.content
    if header_length is None:
        header = json.loads(content)
        blob = b""
    else:
        header = json.loads(content[: int(header_length)])
        blob = content[int(header_length) :]
    offset = 0
    outputs = header.get("outputs", [])
    for out in outputs:
        shape = tuple(int(s) for s in out.get("shape", []))
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = blob[offset : offset + int(size)]
            offset += int(size)
            if out["datatype"] == "BYTES":
                out["array"] = np.array(_bytes_elements(raw), dtype=object).reshape(shape)
            else:
                out["array"] = np.frombuffer(raw, dtype=_DTYPES[out["datatype"]]).reshape(shape)
        else:
            out["array"] = np.asarray(out.get("data", []), dtype=object).reshape(shape)
    return list(outputs)


def classes_from_oip(outputs: list[dict[str, Any]], rows: int, classes: list[str]) -> list[str]:
    """The predicted class names in an OIP answer: from an (n, classes) probability
    output, else from an (n,) output of class names or indices."""
    for out in outputs:
        array = out["array"]
        if array.shape == (rows, len(classes)) and out.get("datatype", "").startswith("FP"):
            return [classes[int(k)] for k in np.argmax(array.astype(np.float64), axis=1)]
    for out in outputs:
        array = out["array"]
        if array.shape in ((rows,), (rows, 1)):
            flat = array.reshape(-1).tolist()
            if out.get("datatype") == "BYTES":
                return [str(v) for v in flat]
            if out.get("datatype", "").startswith(("INT", "UINT")):
                return [classes[int(v)] for v in flat]
    shapes = [(o.get("name"), o.get("datatype"), o.get("shape")) for o in outputs]
    raise ValueError(f"no output holds the classes of {rows} rows; outputs: {shapes}")


def _compare(got: list[str], expected: list[str]) -> str | None:
    if got == expected:
        return None
    wrong = [i for i, (g, e) in enumerate(zip(got, expected, strict=False)) if g != e]
    if len(got) != len(expected):
        return f"{len(got)} answers for {len(expected)} rows"
    i = wrong[0]
    return (
        f"{len(wrong)} of {len(expected)} rows differ from the joblib model "
        f"(row {i}: {got[i]!r}, expected {expected[i]!r})"
    )


def check_answer(
    kind: str, workload: Workload, response: httpx.Response, model: BenchModel
) -> CheckResult:
    """Whether ``response`` is the right answer to the workload's request."""
    expected = [model.w1_class] if workload.rows == 1 else model.w2_classes
    if kind == "mlgate" and workload.encoding == "binary" and response.status_code == 404:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code == "not_found":  # no such route, unlike model_not_found
            return CheckResult(
                False,
                "mlgate has no /v2 route yet (404): W2 binary runs once the Open Inference "
                "Protocol routes exist",
                skip=True,
            )
    if response.status_code != 200:
        return CheckResult(False, f"status {response.status_code}: {response.text[:300]}")
    if kind == "ceiling":
        return CheckResult(True)
    try:
        if kind == "mlserver" or workload.encoding == "binary":
            got = classes_from_oip(oip_outputs(response), workload.rows, model.classes)
        elif workload.rows == 1:
            got = [response.json()["predicted_class_name"]]
        else:
            got = [p["predicted_class_name"] for p in response.json()["predictions"]]
    except (ValueError, KeyError, TypeError) as exc:
        return CheckResult(False, f"unreadable answer ({exc}): {response.text[:300]}")
    problem = _compare(got, expected)
    return CheckResult(problem is None, problem or "")


def check_server(
    url: str,
    kind: str,
    workload: Workload,
    request: Request,
    model: BenchModel,
    headers: dict[str, str],
) -> CheckResult:
    """Send the workload's request once and check the answer."""
    try:
        response = httpx.post(
            url + request.path,
            content=request.body,
            headers={"Content-Type": request.content_type, **request.headers, **headers},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        return CheckResult(False, f"request failed: {exc}")
    return check_answer(kind, workload, response, model)
