"""Training refuses to publish an ONNX graph that does not reproduce the trained model.

The exporter is made to return a subtly wrong graph (one constant changed): training
must stop with :class:`ExportMismatchError` and write no version. A check that compared
the graph's outputs with themselves instead of with scikit-learn's would let it through.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from mlgate.training import ids as ids_training
from mlgate.training import iot as iot_training
from mlgate.training.onnx_export import ExportMismatchError
from tests.training.test_ids_training import FOLDS, MAX_ROWS

ROOT = Path(__file__).resolve().parents[2]
IDS_DATA = ROOT / "data" / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
SKAB = ROOT / "data" / "skab"


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def wrong_graph(export: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``export``, then its first floating-point constant's first value moved a little."""
    from onnx import numpy_helper

    def export_wrongly(model: Any) -> Any:
        graph = export(model)
        for initializer in graph.graph.initializer:
            value = numpy_helper.to_array(initializer).copy()
            if value.dtype.kind == "f" and value.size:
                value.flat[0] += 0.5 + 0.1 * abs(value.flat[0])
                initializer.CopyFrom(numpy_helper.from_array(value, initializer.name))
                return graph
        raise AssertionError("the exported graph has no floating-point constant to change")

    return export_wrongly


@pytest.mark.slow
def test_ids_training_refuses_a_graph_that_differs_from_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = ids_training.hist_gradient_boosting_to_onnx
    monkeypatch.setattr(ids_training, "hist_gradient_boosting_to_onnx", wrong_graph(exporter))
    repo = tmp_path / "repo"
    with pytest.raises(ExportMismatchError, match=r"does not reproduce|another class"):
        ids_training.train_ids(
            [IDS_DATA], repo, seed=0, max_rows=MAX_ROWS, max_iter=10, folds=FOLDS, console=quiet()
        )
    assert not list(repo.glob("ids/*/manifest.yaml"))


def test_iot_training_refuses_a_graph_that_differs_from_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, spec in list(iot_training.SPECS.items()):
        wrong = dataclasses.replace(spec, export=wrong_graph(spec.export))
        monkeypatch.setitem(iot_training.SPECS, name, wrong)
    repo = tmp_path / "repo"
    with pytest.raises(ExportMismatchError, match=r"does not reproduce|other alarms"):
        iot_training.train_iot(SKAB, repo, seed=0, max_rows_per_file=40, console=quiet())
    assert not list(repo.glob("*/*/manifest.yaml"))


def test_the_wrong_graph_really_differs() -> None:
    """The control: the changed constant changes the graph's output."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlgate.training.onnx_export import run_onnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = np.array(["a", "b", "c"])[rng.integers(0, 3, size=60)]
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    exporter = ids_training.hist_gradient_boosting_to_onnx
    right, wrong = run_onnx(exporter(model), x), run_onnx(wrong_graph(exporter)(model), x)
    np.testing.assert_allclose(right, model.predict_proba(x), atol=1e-9)
    assert np.abs(wrong - right).max() > 0.01
