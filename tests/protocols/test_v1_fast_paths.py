"""The v1 batch fast paths (simdjson, then msgspec) answer exactly as the general path,
and hand anything they cannot vouch for to it, so that errors still name the field."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from mlgate.protocols import v1
from tests.api.test_errors import assert_envelope, post_raw

URL = "/v1/models/ids/predict/batch"


def rows(n: int = 5, seed: int = 0) -> list[list[float]]:
    return np.abs(np.random.default_rng(seed).normal(100, 50, size=(n, 77))).tolist()


def test_a_batch_of_positional_rows_takes_the_simdjson_path() -> None:
    payload = v1.parse(orjson.dumps({"instances": rows(3), "version": "2"}), batch=True)
    assert payload.matrix is not None and payload.matrix.shape == (3, 77)
    assert payload.version == "2" and payload.data is None
    np.testing.assert_array_equal(payload.matrix, np.array(rows(3)))


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, [2], 3]]}',  # a nested array: flattened by simdjson
        b'{"instances": [[1, 2], [3, 4, 5]]}',
        b'{"instances": [[1, true, 3]]}',
        b'{"instances": [[1, "2", 3]]}',
        b'{"instances": [[1, 1e400, 3]]}',
        b'{"instances": [[1, NaN, 3]]}',
        b'{"instances": [{"a": 1}]}',
        b'{"instances": [[1, 2, 3]], "version": "v[1]"}',
        b'{"instances": [[1, 2, 3]], "version": 2}',
        b'{"instances": []}',
        b"[[1, 2, 3]]",
    ],
)
def test_what_simdjson_cannot_vouch_for_goes_elsewhere(body: bytes) -> None:
    assert v1._simd_batch(body) is None


async def test_fast_and_general_paths_answer_alike(client: httpx.AsyncClient) -> None:
    batch = rows(6, seed=3)
    fast = await client.post(URL, json={"instances": batch})
    names = [f["name"] for f in (await client.get("/v1/models/ids")).json()["schema"]["features"]]
    named = [dict(zip(names, row, strict=True)) for row in batch]
    general = await client.post(URL, json={"instances": named})
    assert fast.status_code == general.status_code == 200
    for a, b in zip(fast.json()["predictions"], general.json()["predictions"], strict=True):
        a.pop("prediction_id"), b.pop("prediction_id")
        assert a == b


@pytest.mark.parametrize(
    ("row_literal", "field"),
    [
        ("[1, [2], " + ", ".join(["0.5"] * 75) + "]", "instances[1][1]"),
        ("[" + ", ".join(["0.5"] * 76) + "]", "instances[1]"),
        ("[true, " + ", ".join(["0.5"] * 76) + "]", "instances[1][0]"),
    ],
)
async def test_bad_rows_after_good_ones_are_named(
    client: httpx.AsyncClient, row_literal: str, field: str
) -> None:
    good = "[" + ", ".join(["0.5"] * 77) + "]"
    response = await post_raw(client, URL, '{"instances": [' + good + ", " + row_literal + "]}")
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"][0]["field"] == field
