"""Real rows for the client tests: the project's copy of the CICIDS2017 sample, and
what the data plane in this process answers for them (to check order and values)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numpy as np
from tests.conftest import DATA_DIR

from mlgate.dataplane import ClassificationOutput, InferenceContext
from mlgate.dataplane.service import local_dataplane
from mlgate.protocols.matrix import MatrixCodec
from mlgate.settings import bundled_repository
from mlgate.training.ids import FEATURE_COLUMNS, load_ids_dataset

IDS_CSV = DATA_DIR / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
IOT_FEATURES = ("temperature", "vibration", "pressure", "flow_rate", "current")


@cache
def ids_sample() -> tuple[np.ndarray, np.ndarray]:
    """(raw features [5050, 77] in model order, labels); NaN/inf cells as in the file."""
    dataset = load_ids_dataset([IDS_CSV])
    return dataset.x, dataset.y


def ids_columns() -> list[str]:
    return list(FEATURE_COLUMNS)


# The version the bundled `stable` alias of ids names (trees; `latest` is the DQN).
IDS_STABLE = "3"


def local_classes(x: np.ndarray, version: str | None = None) -> np.ndarray:
    """The class names the data plane in this process gives the rows of ``x``."""
    dataplane = local_dataplane(bundled_repository())
    scoring = dataplane.score("ids", version, x, MatrixCodec(), InferenceContext("local"))
    with ThreadPoolExecutor(1) as pool:  # a loop of its own: callable from async tests too
        result = pool.submit(asyncio.run, scoring).result()
    assert isinstance(result.output, ClassificationOutput)
    return np.asarray(result.model.manifest.classes, dtype=object)[result.output.predicted]


def distinct_rows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` rows drawn from the sample, each made unique (its first feature, the flow
    duration, is set to its position), so that any reordering shows."""
    x, _ = ids_sample()
    rng = np.random.default_rng(seed)
    rows = x[rng.integers(0, len(x), n)].copy()
    rows[:, 0] = np.arange(n, dtype=np.float64)
    return rows
