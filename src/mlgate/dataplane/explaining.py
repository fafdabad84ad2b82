"""The ``explain`` request option: why a classifier answered as it did, row by row.

A classifier version that ships an explainer (``explainer`` in its manifest: exact
TreeSHAP for trees, exact integrated gradients for the DQN; :mod:`mlgate.explain`) can
return, per row, the features with the largest signed contributions to the explained
class's output, with the base value and that output (``base_value + sum of all
contributions == output``). It costs far more than the prediction, so it runs in a
worker thread, only on request, for at most :data:`MAX_EXPLAINED_ROWS` rows.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import numpy as np

from mlgate.dataplane.types import InferenceInput
from mlgate.errors import NotAvailable, ValidationFailed
from mlgate.protocols.common import MAX_EXPLAINED_ROWS
from mlgate.registry.registry import ModelVersion


def check_explainable(mv: ModelVersion, inputs: InferenceInput) -> None:
    """422 unless ``mv`` can explain these rows (checked before anything is charged)."""
    if mv.manifest.task != "classification":
        raise ValidationFailed(
            f"explain is for classifiers; {mv.name!r} answers with its own explanation",
            details=[{"field": "explain", "message": "not a classifier"}],
        )
    if mv.manifest.explainer is None:
        raise ValidationFailed(
            f"model {mv.name!r} version {mv.version!r} ships no explainer: ask a version "
            "that does (its model info lists `explainer`)",
            details=[{"field": "explain", "message": "no explainer for this version"}],
        )
    if inputs.rows > MAX_EXPLAINED_ROWS:
        raise ValidationFailed(
            f"explain covers at most {MAX_EXPLAINED_ROWS} rows per request, got "
            f"{inputs.rows}: split the batch or ask without explain",
            details=[{"field": "explain", "message": "too many rows to explain"}],
        )


async def explanations(mv: ModelVersion, inputs: InferenceInput) -> list[dict[str, Any]]:
    """Each row's top contributions (``inputs.explain`` of them), in a worker thread."""
    from mlgate.explain import ExplainerError, explain
    from mlgate.training.common import MissingDependencyError

    top_k = inputs.explain or 5
    x = np.asarray(inputs.matrix, dtype=np.float64)
    try:
        rows = await anyio.to_thread.run_sync(explain, mv, x, top_k)
    except MissingDependencyError:
        raise NotAvailable(
            "explanations of tree models need the shap package on the server: install "
            "mlgate[explain]",
            details={"missing": "shap"},
        ) from None
    except ExplainerError as exc:
        raise ValidationFailed(
            f"cannot explain these rows: {exc}",
            details=[{"field": "explain", "message": str(exc)[:200]}],
        ) from None
    return [row.as_dict() for row in rows]
