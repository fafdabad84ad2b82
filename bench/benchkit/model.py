"""The benchmarked model and the repositories that serve it.

One scikit-learn ``MLPClassifier(hidden_layer_sizes=(128, 64))`` trained on the
project's real CICIDS2017 sample (77 CICFlowMeter features; the sample has 7 labels, so
the model has 7 classes), deterministically (fixed seed, one BLAS thread). It is saved
once as a joblib file that MLServer's sklearn runtime and mlgate's ``sklearn`` runtime
both load, so every server computes exactly the same thing.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from benchkit.tools import ROOT
from benchkit.workloads import MODEL_NAME
from mlgate.registry.manifest import Manifest, sha256_file
from mlgate.training.common import reference_stats, single_threaded
from mlgate.training.ids import BENIGN, clean_features, feature_specs, load_ids_dataset

MODEL_VERSION = "1"
DATA = ROOT / "data" / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
HIDDEN_LAYERS = (128, 64)
SEED = 0
# Enough epochs for a model that separates the classes (~0.9 training accuracy); the
# benchmark measures serving, so more would only slow the first run down.
MAX_ITER = 50
W2_ROWS = 1000
BUNDLED_MODELS = ROOT / "src" / "mlgate" / "bundled_models"


@dataclass(frozen=True)
class BenchModel:
    """The trained model on disk and the rows the workloads send, with their answers."""

    joblib_path: Path
    classes: list[str]
    n_features: int
    training_accuracy: float
    reference: dict[str, object]
    w1_row: np.ndarray
    w1_class: str
    w2_rows: np.ndarray
    w2_classes: list[str]


def train(work: Path, *, max_iter: int = MAX_ITER) -> BenchModel:
    """Train the MLP on the CICIDS2017 sample and save it as ``work/model.joblib``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    dataset = load_ids_dataset([DATA])
    x, y = clean_features(dataset.x), dataset.y
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN_LAYERS, random_state=SEED, max_iter=max_iter)
    with single_threaded(), warnings.catch_warnings():
        # Stopping before convergence is deliberate (see MAX_ITER).
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
        predicted = clf.predict(x)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "model.joblib"
    joblib.dump(clf, path)
    classes = [str(c) for c in clf.classes_]
    # W1 sends one row the model gets right, of a class that is not the most common one,
    # so that a server answering a constant class fails the check.
    counts = {c: int((predicted == c).sum()) for c in classes}
    common = max(counts, key=lambda c: counts[c])
    rare = [i for i in range(len(y)) if predicted[i] != common]
    index = next((i for i in rare if predicted[i] == y[i]), rare[0] if rare else 0)
    w2 = x[:W2_ROWS]
    return BenchModel(
        joblib_path=path,
        classes=classes,
        n_features=x.shape[1],
        training_accuracy=float((predicted == y).mean()),
        reference=reference_stats(x),
        w1_row=x[index],
        w1_class=str(predicted[index]),
        w2_rows=w2,
        w2_classes=[str(c) for c in predicted[:W2_ROWS]],
    )


def write_mlgate_repository(model: BenchModel, repo: Path, *, bundled: bool = True) -> Path:
    """An mlgate model repository: ``mlp/1/`` (manifest.yaml + the joblib, sha256 checked)
    and, with ``bundled``, a copy of the bundled models (the RSS target counts them)."""
    if repo.exists():
        shutil.rmtree(repo)
    version_dir = repo / MODEL_NAME / MODEL_VERSION
    version_dir.mkdir(parents=True)
    artifact = version_dir / "model.joblib"
    shutil.copyfile(model.joblib_path, artifact)
    manifest = Manifest.model_validate(
        {
            "name": MODEL_NAME,
            "version": MODEL_VERSION,
            "runtime": "sklearn",
            "task": "classification",
            "artifact": artifact.name,
            "artifact_sha256": sha256_file(artifact),
            "description": (
                "Benchmark model: scikit-learn MLPClassifier(hidden_layer_sizes=(128, 64)) on "
                "the CICIDS2017 sample, written by bench/run.py."
            ),
            "features": feature_specs(),
            "classes": model.classes,
            "attack_classes": [c for c in model.classes if c != BENIGN],
            "reference": model.reference,
            "metrics": {"training_accuracy": round(model.training_accuracy, 4)},
            "provenance": {"data": str(DATA.relative_to(ROOT)), "trained_by": "bench/run.py"},
        }
    )
    (version_dir / "manifest.yaml").write_text(manifest.to_yaml(), encoding="utf-8")
    if bundled:
        for source in sorted(p for p in BUNDLED_MODELS.iterdir() if p.is_dir()):
            shutil.copytree(source, repo / source.name)
    return repo


def write_mlserver_repository(model: BenchModel, repo: Path) -> Path:
    """An MLServer model repository: ``mlp/model-settings.json`` + ``mlp/model.joblib``.

    The server-wide ``settings.json`` (ports, ``parallel_workers: 0``) is written when
    the server starts (see :mod:`benchkit.servers`).
    """
    if repo.exists():
        shutil.rmtree(repo)
    model_dir = repo / MODEL_NAME
    model_dir.mkdir(parents=True)
    shutil.copyfile(model.joblib_path, model_dir / "model.joblib")
    settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": MODEL_VERSION},
    }
    (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    return repo
