"""The Open Inference Protocol's binary tensors on the client side: a float64 matrix
in, numpy arrays out, no per-element Python objects on the way.

numpy is imported when a tensor call is made, not with the client.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
_DTYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def as_matrix(rows: Any, n_features: int | None = None) -> np.ndarray:
    """Rows as a C-contiguous float64 ``[N, n_features]`` matrix (NaN: missing)."""
    import numpy as np

    matrix = np.ascontiguousarray(rows, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d array of rows, got shape {matrix.shape}")
    if n_features is not None and matrix.shape[1] != n_features:
        raise ValueError(f"expected {n_features} columns, got {matrix.shape[1]}")
    return matrix


def infer_request(
    matrix: np.ndarray, *, device_id: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """An inference request body with ``matrix`` as one binary FP64 tensor, every output
    asked for in binary, and its headers."""
    data = matrix.astype("<f8", copy=False).tobytes()
    parameters: dict[str, Any] = {"binary_data_output": True}
    if device_id is not None:
        parameters["device_id"] = device_id
    header = {
        "inputs": [
            {
                "name": "input",
                "shape": list(matrix.shape),
                "datatype": "FP64",
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "parameters": parameters,
    }
    document = json.dumps(header, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(document)),
    }
    return document + data, headers


def _bytes_elements(raw: memoryview, count: int) -> np.ndarray:
    import numpy as np

    items: list[str] = []
    offset = 0
    for _ in range(count):
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(bytes(raw[offset : offset + size]).decode())
        offset += size
    return np.asarray(items, dtype=object)


def parse_infer_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON header, outputs by name as numpy arrays) of an inference answer."""
    import numpy as np

    body = response.content
    length_header = response.headers.get(HEADER_LENGTH)
    length = int(length_header) if length_header is not None else len(body)
    header = json.loads(body[:length])
    binary = memoryview(body)[length:]
    outputs: dict[str, Any] = {}
    offset = 0
    for tensor in header.get("outputs", []):
        shape = tuple(tensor["shape"])
        count = 1
        for d in shape:
            count *= d
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        datatype = tensor["datatype"]
        if size is not None:
            chunk = binary[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                array = _bytes_elements(chunk, count).reshape(shape)
            else:
                array = np.frombuffer(chunk, dtype=_DTYPES[datatype]).reshape(shape)
        elif datatype == "BYTES":
            array = np.asarray(tensor["data"], dtype=object).reshape(shape)
        else:
            data = [np.nan if v is None else v for v in tensor["data"]]
            array = np.asarray(data, dtype=_DTYPES[datatype]).reshape(shape)
        outputs[tensor["name"]] = array
    return header, outputs
