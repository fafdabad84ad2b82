"""In-process callers (the CLI, evaluation): a float matrix in, the typed result out.

NaN cells stand for missing values (an empty CSV cell); the manifest's substitution
rules and the range checks apply exactly as they do over HTTP.
"""

from __future__ import annotations

import numpy as np

from mlgate.dataplane.types import Encoded, InferenceInput, InferenceResult
from mlgate.dataplane.validation import check_row_count, fail, finalize
from mlgate.protocols.common import json_encoded
from mlgate.registry.registry import ModelVersion


class MatrixCodec:
    """Rows of numbers in the model's feature order, scored in-process."""

    protocol = "local"

    def decode(self, payload: np.ndarray, mv: ModelVersion, max_rows: int) -> InferenceInput:
        matrix = np.asarray(payload, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[1] != mv.n_features:
            raise fail(
                "rows", f"expected (rows, {mv.n_features}) numbers, got shape {matrix.shape}"
            )
        check_row_count(len(matrix), "rows", max_rows)
        names = mv.manifest.feature_names
        done = finalize(matrix, mv, lambda i, j: f"row {i}, column {names[j]!r}")
        return InferenceInput(done.matrix, (), done.substituted, done.substituted_total)

    def encode(self, result: InferenceResult, payload: np.ndarray) -> Encoded:
        return json_encoded({"model": result.model.name, "version": result.model.version})
