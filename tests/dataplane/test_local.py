"""The in-process data plane (what the CLI scores with) gives what HTTP gives."""

from __future__ import annotations

import numpy as np
import pytest

from mlgate.dataplane import ClassificationOutput, InferenceContext
from mlgate.dataplane.service import local_dataplane
from mlgate.errors import ValidationFailed
from mlgate.protocols.matrix import MatrixCodec
from mlgate.settings import bundled_repository
from tests.conftest import make_settings, running_app

CODEC = MatrixCodec()


async def test_local_scores_equal_http_and_apply_the_manifest_rules() -> None:
    dataplane = local_dataplane(bundled_repository())
    x = np.full((3, 77), 0.5)
    x[1, 13] = np.inf  # Flow Bytes/s: -1, as training did
    x[2, 14] = np.nan  # Flow Packets/s: 0
    result = await dataplane.score("ids", None, x, CODEC, InferenceContext(protocol="local"))
    assert isinstance(result.output, ClassificationOutput)
    assert result.inputs.substituted_total == 2
    clean = x.copy()
    clean[1, 13], clean[2, 14] = -1.0, 0.0
    async with running_app(make_settings()) as (_, client):
        response = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": clean.tolist()}
        )
    expected = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    np.testing.assert_array_equal(result.output.probabilities, expected)


async def test_local_refuses_what_http_refuses() -> None:
    dataplane = local_dataplane(bundled_repository())
    x = np.full((2, 77), 0.5)
    x[1, 0] = np.nan
    with pytest.raises(ValidationFailed, match="row 1, column 'Flow Duration'"):
        await dataplane.score("ids", None, x, CODEC, InferenceContext(protocol="local"))
    with pytest.raises(ValidationFailed, match="expected"):
        await dataplane.score(
            "ids", None, np.ones((2, 5)), CODEC, InferenceContext(protocol="local")
        )
