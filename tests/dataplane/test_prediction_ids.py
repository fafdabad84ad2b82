"""Every scored row has a prediction id, returned in every protocol and unique."""

from __future__ import annotations

import secrets
from typing import Any

from mlgate.dataplane.ids import _ALPHABET, encode_key, new_key, parse_prediction_id
from tests.conftest import make_settings, running_app
from tests.dataplane.test_observers import READING, ROW, Recorder


def ids_in(path: str, body: Any) -> list[str]:
    """The prediction ids a response carries, in row order."""
    if path.startswith("/v2"):
        return str(body["parameters"]["prediction_ids"]).split(",")
    if isinstance(body, list):
        return [row["prediction_id"] for row in body]
    if "predictions" in body:
        return [row["prediction_id"] for row in body["predictions"]]
    return [body["prediction_id"]]


async def test_every_protocol_returns_one_id_per_row_matching_the_event() -> None:
    calls: list[tuple[str, Any, int]] = [
        ("/v1/models/ids/predict", {"features": ROW}, 1),
        ("/v1/models/ids/predict/batch", {"instances": [ROW] * 3}, 3),
        ("/predict", {"features": ROW}, 1),
        ("/predict/batch", [{"features": ROW}] * 2, 2),
        ("/predict", {"sensor_data": READING}, 1),
        ("/predict/batch", {"readings": [READING] * 2}, 2),
        (
            "/v2/models/ids/infer",
            {"inputs": [{"name": "x", "shape": [2, 77], "datatype": "FP64", "data": [ROW] * 2}]},
            2,
        ),
    ]
    recorder = Recorder()
    seen: set[str] = set()
    async with running_app(make_settings()) as (app, client):
        app.state.mlgate.dataplane.add_observer(recorder)
        for path, body, rows in calls:
            response = await client.post(path, json=body)
            assert response.status_code == 200, response.text
            ids = ids_in(path, response.json())
            event = recorder.events[-1]
            assert ids == [f"{event.prediction_key}-{i}" for i in range(rows)], path
            parsed = [parse_prediction_id(i) for i in ids]
            assert parsed == [(event.prediction_key, i) for i in range(rows)]
            assert not seen & set(ids)
            seen |= set(ids)


def test_keys_are_unique_time_ordered_and_parse() -> None:
    keys = [new_key() for _ in range(2000)]
    assert len(set(keys)) == 2000
    assert all(len(k) == 26 for k in keys)
    assert keys[0][:8] <= keys[-1][:8]  # milliseconds lead
    assert parse_prediction_id(f"{keys[0]}-12") == (keys[0], 12)
    for bad in ("", "x-1", f"{keys[0]}-01", f"{keys[0]}--1", f"{keys[0]}-", keys[0]):
        assert parse_prediction_id(bad) is None


def test_keys_are_the_numbers_crockford_base32() -> None:
    """The table-driven encoding writes what five bits at a time would."""

    def five_bits_at_a_time(value: int) -> str:
        chars = []
        for _ in range(26):
            chars.append(_ALPHABET[value & 31])
            value >>= 5
        return "".join(reversed(chars))

    for value in [0, 1, 31, 32, 1023, 1024, (1 << 128) - 1, (1 << 130) - 1]:
        assert encode_key(value) == five_bits_at_a_time(value), value
    for _ in range(1000):
        value = secrets.randbits(128)
        assert encode_key(value) == five_bits_at_a_time(value)
