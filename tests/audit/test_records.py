"""Requests converted to audit rows together (the flusher's batches) give exactly the rows
each request gives alone, whatever the mix of models, versions and device readings."""

from __future__ import annotations

import dataclasses

from mlgate.audit.catalog import VersionCatalog
from mlgate.audit.keys import key_floor, key_seconds
from mlgate.audit.records import COLUMNS, batch_rows, event_rows
from mlgate.dataplane.ids import new_key
from tests.audit.conftest import READING, ROW
from tests.conftest import make_settings, running_app
from tests.dataplane.test_observers import Recorder


async def test_batched_rows_equal_rows_one_request_at_a_time() -> None:
    recorder = Recorder()
    catalog = VersionCatalog()
    async with running_app(make_settings(), as_admin=True) as (app, client):
        app.state.mlgate.registry.add_listener(catalog)
        app.state.mlgate.dataplane.add_observer(recorder)
        calls = [
            ("/v1/models/ids/predict", {"features": ROW}),
            ("/v1/models/ids/predict", {"features": [0.0] * 77}),
            ("/v1/models/ids/predict/batch", {"instances": [ROW] * 3}),
            ("/v1/models/ids/predict/batch", {"instances": [ROW] * 2, "version": "2"}),
            ("/v1/models/ids/predict", {"features": ROW}),
            ("/v1/models/iot/predict", {"features": READING}),
            ("/v1/models/iot/predict/batch", {"instances": [READING] * 2}),
            ("/v1/models/iot/predict/batch", {"instances": [READING] * 2, "device_id": "d-1"}),
            ("/v1/models/iot/predict", {"features": READING}),
            ("/predict", {"features": ROW}),
        ]
        for path, body in calls:
            response = await client.post(path, json=body)
            assert response.status_code == 200, response.text
    events = recorder.events
    events.append(
        dataclasses.replace(events[3], shadow=True, prediction_key=events[2].prediction_key)
    )

    def raw(model: str) -> bool:
        return model == "iot"

    together = batch_rows(events, catalog.class_names, raw)
    alone = [
        row
        for event in events
        for row in event_rows(
            event, catalog.class_names(event.model, event.version), raw_inputs=raw(event.model)
        )
    ]
    assert together == alone
    assert len(together) == sum(event.rows for event in events) == 17
    assert all(len(row) == len(COLUMNS) for row in together)
    predicted = COLUMNS.index("predicted")
    assert {row[predicted] for row in together if row[COLUMNS.index("model")] == "ids"} <= set(
        catalog.class_names("ids", "1") or ()
    )


def test_request_keys_order_by_time() -> None:
    key = new_key()
    seconds = key_seconds(key)
    assert key_floor(seconds) <= key < key_floor(seconds + 0.0015)  # mid next ms: float-safe
    assert key_floor(seconds - 1) < key
    assert key_seconds(key_floor(1_700_000_000.123)) == 1_700_000_000.123
