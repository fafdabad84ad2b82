"""DataFrames in and out (pandas, the ``client`` extra; imported only when used).

Columns are matched to the model's features by name or alias (surrounding spaces
ignored, as in the original CICIDS2017 headers); the rows go over the binary tensor
path and come back as result columns on the frame's own index.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mlgate.client._core import ClientCore
from mlgate.client._effects import Flow
from mlgate.client._exceptions import InputError
from mlgate.client._models import Feature

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PROBABILITY_PREFIX = "probability_"


def feature_columns(
    columns: Sequence[Hashable], features: Sequence[Feature], *, positional: bool = False
) -> list[Hashable]:
    """The column holding each feature, in feature order.

    By name: a feature's column is the one named like the feature or one of its aliases
    (the name wins over an alias). ``positional``: the columns are the features in order
    (there must be exactly as many). Raises :class:`InputError` naming every missing
    feature.
    """
    if positional:
        if len(columns) != len(features):
            raise InputError(
                f"positional columns: expected {len(features)} columns (the model's "
                f"features in order), got {len(columns)}",
                details=[{"field": "columns", "message": f"expected {len(features)}"}],
            )
        return list(columns)
    by_name: dict[str, Hashable] = {}
    for column in columns:
        by_name.setdefault(str(column).strip(), column)
    chosen: list[Hashable] = []
    missing: list[Feature] = []
    for feature in features:
        column = next((by_name[n] for n in feature.names if n in by_name), None)
        if column is None:
            missing.append(feature)
        else:
            chosen.append(column)
    if missing:
        shown = ", ".join(repr(f.name) for f in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(
            f"missing columns for {len(missing)} of {len(features)} features: {shown}{more} "
            "(a column may be named by the feature's name or an alias)",
            details=[
                {
                    "field": f.name,
                    "message": "no column named " + " or ".join(repr(n) for n in f.names),
                }
                for f in missing
            ],
        )
    return chosen


def result_columns(outputs: Mapping[str, np.ndarray], classes: Sequence[str]) -> dict[str, Any]:
    """Output tensors as named result columns, in a fixed order.

    Classifiers: ``predicted_class_name``, ``predicted_class``, ``confidence``,
    ``is_attack`` and one ``probability_<class>`` per class; anomaly models:
    ``is_anomaly``, ``anomaly_score``, ``confidence`` (and ``calibrating``,
    ``calibration_seen`` on the device path).
    """
    columns: dict[str, Any] = {}
    if "probabilities" in outputs:
        for name in ("predicted_class_name", "predicted_class", "confidence", "is_attack"):
            columns[name] = outputs[name]
        probabilities = outputs["probabilities"]
        for k, name in enumerate(classes):
            columns[PROBABILITY_PREFIX + name] = probabilities[:, k]
        return columns
    for name in ("is_anomaly", "anomaly_score", "confidence", "calibrating", "calibration_seen"):
        if name in outputs:
            columns[name] = outputs[name]
    return columns


def frame_matrix(frame: pd.DataFrame, columns: Sequence[Hashable]) -> np.ndarray:
    """The chosen columns as float64 (missing and blank cells NaN); a cell that is not a
    number raises :class:`InputError` naming its row (index label) and column."""
    import numpy as np

    part = frame.loc[:, list(columns)]
    try:
        return np.ascontiguousarray(part.to_numpy(dtype=np.float64, na_value=np.nan))
    except (TypeError, ValueError):
        pass  # text cells: find the first that is not a number
    matrix = np.empty(part.shape, dtype=np.float64)
    for j, column in enumerate(columns):
        for i, value in enumerate(part.iloc[:, j].tolist()):
            matrix[i, j] = _cell(value, frame.index[i], i, column)
    return matrix


def _cell(value: Any, label: Hashable, row: int, column: Hashable) -> float:
    """One cell as a float: missing and blank cells are NaN (the manifest's rules apply)."""
    import pandas as pd

    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return float("nan")
    if isinstance(value, str) and not value.strip():
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"row {label!r} (row {row} of the frame), column {column!r}: {value!r} is not a number",
            details=[{"field": str(column), "message": "not a number", "row": row}],
        ) from None


def predict_frame(
    core: ClientCore,
    model: str,
    frame: pd.DataFrame,
    *,
    version: str | None,
    positional: bool,
    chunk_rows: int | None,
    concurrency: int | None,
) -> Flow[pd.DataFrame]:
    """Score a DataFrame: the model's schema first (which columns), then the rows as
    binary tensors pinned to that schema's version; result columns on ``frame.index``."""
    import pandas as pd

    info = yield from core.model(model, version)
    columns = feature_columns(list(frame.columns), info.features, positional=positional)
    matrix = frame_matrix(frame, columns)
    result = yield from core.predict_array(
        model, matrix, version=info.version, chunk_rows=chunk_rows, concurrency=concurrency
    )
    out = pd.DataFrame(result_columns(result.outputs, info.classes), index=frame.index)
    out["prediction_id"] = result.prediction_ids
    out.attrs.update({"model": result.model, "model_version": result.model_version})
    return out
