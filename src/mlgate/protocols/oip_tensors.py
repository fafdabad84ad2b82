"""Tensors of the Open Inference Protocol: datatypes, JSON and binary data, and numpy.

Binary tensor data (Triton's ``binary_tensor_data`` extension) is raw little-endian
row-major bytes; BOOL is one byte per element; BYTES elements are each a 4-byte
little-endian length followed by the bytes.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from mlgate.dataplane.validation import OutOfRange, fail, json_type, quote
from mlgate.errors import ValidationFailed

#: OIP datatype -> numpy dtype (little-endian, as the binary extension requires).
NUMERIC_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
#: Datatypes a model input may be sent as (numbers; BOOL and BYTES are not features).
INPUT_DATATYPES = tuple(k for k in NUMERIC_DTYPES if k != "BOOL")
MAX_DIMS = 8


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The OIP datatype of a numpy dtype."""
    if dtype.kind in "OSU":
        return "BYTES"
    for name, candidate in NUMERIC_DTYPES.items():
        if candidate == dtype.newbyteorder("<"):
            return name
    raise ValueError(f"no OIP datatype for {dtype}")


def check_shape(shape: Any, field: str) -> tuple[int, ...]:
    """A tensor shape: a list of non-negative integers (422 naming ``field``)."""
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= MAX_DIMS
        or not all(type(d) is int and 0 <= d < 2**31 for d in shape)
    ):
        raise fail(field, f"expected a list of 1 to {MAX_DIMS} non-negative integers")
    return tuple(shape)


def input_dtype(datatype: Any, field: str) -> np.dtype[Any]:
    """The numpy dtype of an input tensor's datatype (422 for BYTES, BOOL, unknown)."""
    if datatype in INPUT_DATATYPES:
        return NUMERIC_DTYPES[datatype]
    shown = quote(str(datatype))
    raise fail(
        field,
        f"datatype {shown} is not a numeric input type; use one of {', '.join(INPUT_DATATYPES)}",
    )


def from_json_data(
    data: Any, shape: tuple[int, ...], dtype: np.dtype[Any], field: str
) -> np.ndarray:
    """A tensor's ``data`` (flat or nested, row-major) as an array of ``shape``, as float64.

    Values go through the declared datatype, exactly as binary data would: a value that
    type cannot hold, or anything that is not a number, is a 422 naming the element.
    ``NaN``/``Infinity`` tokens stay NaN/inf (the features' substitution rules decide).
    """
    if not isinstance(data, list):
        raise fail(field, f"expected an array, got {json_type(data)}")
    try:
        array = np.asarray(data)
    except ValueError:
        raise fail(field, "nested arrays of different lengths") from None
    if array.dtype.kind not in "fiu":
        _raise_first_bad_element(data, field, dtype)
    if array.size != math.prod(shape):
        raise fail(
            field,
            f"has {array.size} elements, the shape {list(shape)} needs {math.prod(shape)}",
        )
    datatype = datatype_of(dtype)
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            raise fail(field, f"a {datatype} tensor holds a number that is not an integer")
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise fail(field, f"holds a number beyond the range of {datatype}")
    elif dtype != np.float64 and array.size:
        finite = np.abs(array[np.isfinite(array)]) if array.dtype.kind == "f" else abs(array)
        if finite.size and float(finite.max()) > float(np.finfo(dtype).max):
            raise fail(field, f"holds a number beyond the range of {datatype}")
        array = array.astype(dtype)
    return array.astype(np.float64, copy=False).reshape(shape)


def _raise_first_bad_element(data: list[Any], field: str, dtype: np.dtype[Any]) -> None:
    datatype = datatype_of(dtype)
    stack: list[tuple[list[Any], str]] = [(data, field)]
    while stack:
        items, where = stack.pop()
        for k, value in enumerate(items):
            here = f"{where}[{k}]"
            kind = type(value)
            if kind is list:
                stack.append((value, here))
            elif kind is OutOfRange:
                raise fail(here, f"{quote(value.text)} is beyond the range of {datatype}")
            elif kind is int and not -(2**63) <= value < 2**64:
                raise fail(here, f"{quote(str(value))} is beyond the range of {datatype}")
            elif kind is not int and kind is not float:
                raise fail(here, f"expected a number, got {json_type(value)}")
    raise fail(field, "nested arrays of different lengths")


def from_bytes(
    buffer: memoryview,
    offset: int,
    size: int,
    shape: tuple[int, ...],
    dtype: np.dtype[Any],
    field: str,
) -> np.ndarray:
    """A tensor's raw bytes as an array of ``shape`` (no copy; 422 for a wrong size)."""
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise fail(
            field,
            f"binary_data_size is {size} bytes, shape {list(shape)} of "
            f"{datatype_of(dtype)} needs {expected}",
        )
    return np.frombuffer(buffer, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)


def to_json_data(array: np.ndarray) -> list[Any]:
    """An output tensor as a flat row-major JSON list (NaN becomes null)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        return [None if math.isnan(v) else v for v in array.ravel().tolist()]
    values: list[Any] = array.ravel().tolist()
    return values


def to_bytes(array: np.ndarray) -> bytes:
    """An output tensor as raw bytes (BYTES: length-prefixed UTF-8 elements)."""
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.ravel().tolist():
            raw = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(raw)))
            parts.append(raw)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def refuse(message: str, field: str = "inputs") -> ValidationFailed:
    """A 422 about the request's tensors."""
    return fail(field, message)
