"""DataFrames: columns matched by feature name or alias, rows over the binary tensor
path, results on the frame's own index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tests.client.conftest import Recorder
from tests.client.data import IDS_STABLE, distinct_rows, ids_columns, ids_sample, local_classes

from mlgate.client import AsyncClient, Client, InputError, ValidationError

CLASSES = ["BENIGN", "Bot", "BruteForce", "DoS", "Infiltration", "PortScan", "WebAttack"]


def _frame(rows: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
    # An index that is neither 0..n-1 nor sorted: it must come back as it was.
    index = pd.Index([f"flow-{i * 7 % len(rows)}" for i in range(len(rows))], name="flow")
    return pd.DataFrame(rows, columns=columns or ids_columns(), index=index)


def test_names_in_any_order_with_extra_columns(client: Client, recorder: Recorder) -> None:
    rows = distinct_rows(250)
    frame = _frame(rows)
    frame["Label"] = "unknown"  # not a feature: ignored
    shuffled = frame[list(reversed(frame.columns))]
    scored = client.predict_frame("ids", shuffled)
    assert scored.index.equals(frame.index)
    assert list(scored.columns) == [
        "predicted_class_name",
        "predicted_class",
        "confidence",
        "is_attack",
        *(f"probability_{c}" for c in CLASSES),
        "prediction_id",
    ]
    assert scored["predicted_class_name"].tolist() == local_classes(rows).tolist()
    assert scored.attrs == {"model": "ids", "model_version": IDS_STABLE}
    assert scored["is_attack"].dtype == bool
    # The schema is read once; the rows go as binary tensors pinned to its version.
    assert recorder.paths("GET") == ["/v1/models/ids", "/info"]
    assert {e.path for e in recorder.to("/infer")} == {
        f"/v2/models/ids/versions/{IDS_STABLE}/infer"
    }


def test_aliases_and_a_version(client: Client) -> None:
    info = client.model("ids", "2")
    rows = distinct_rows(20)
    frame = _frame(rows, [f.aliases[0] for f in info.features])
    scored = client.predict_frame("ids", frame, version="2")
    assert scored.attrs["model_version"] == "2"
    assert scored["predicted_class_name"].tolist() == local_classes(rows, "2").tolist()


def test_positional_only_when_asked(client: Client, recorder: Recorder) -> None:
    rows = distinct_rows(10)
    frame = pd.DataFrame(rows)  # columns 0..76
    with pytest.raises(InputError) as caught:
        client.predict_frame("ids", frame)
    assert "missing columns for 77 of 77 features" in caught.value.message
    scored = client.predict_frame("ids", frame, positional=True)
    assert scored["predicted_class_name"].tolist() == local_classes(rows).tolist()
    with pytest.raises(InputError):
        client.predict_frame("ids", frame.iloc[:, :70], positional=True)


def test_missing_columns_are_named_before_anything_is_scored(
    client: Client, recorder: Recorder
) -> None:
    frame = _frame(distinct_rows(5)).drop(columns=["Flow Duration", "Idle Min"])
    with pytest.raises(InputError) as caught:
        client.predict_frame("ids", frame)
    assert "'Flow Duration'" in caught.value.message and "'Idle Min'" in caught.value.message
    assert [d["field"] for d in caught.value.details] == ["Flow Duration", "Idle Min"]
    assert "flow_duration" in caught.value.details[0]["message"]
    assert recorder.to("/infer") == []


def test_missing_values_follow_the_manifest(client: Client) -> None:
    x, _ = ids_sample()
    raw = x[:300]  # NaN and Infinity in the rate features, as the flow meter wrote them
    frame = _frame(raw).astype(object)
    frame.iloc[3, 13] = ""  # an empty cell in Flow Bytes/s: a missing value
    frame.iloc[4, 14] = None
    scored = client.predict_frame("ids", frame)
    expected_input = raw.copy()
    expected_input[3, 13] = np.nan
    expected_input[4, 14] = np.nan
    assert scored["predicted_class_name"].tolist() == local_classes(expected_input).tolist()


def test_bad_cells_name_the_row_and_column(client: Client, recorder: Recorder) -> None:
    frame = _frame(distinct_rows(30)).astype(object)
    frame.iloc[17, 2] = "lots"
    with pytest.raises(InputError) as caught:
        client.predict_frame("ids", frame)
    label = frame.index[17]
    assert f"row {label!r}" in caught.value.message
    assert "'Total Backward Packets'" in caught.value.message and "'lots'" in caught.value.message
    assert recorder.to("/infer") == []
    # A number the model refuses (NaN where no rule applies) is the server's 422, with
    # the row in the frame.
    frame = _frame(distinct_rows(150))
    frame.iloc[120, 0] = np.nan
    with pytest.raises(ValidationError) as refused:
        client.predict_frame("ids", frame)
    assert refused.value.row == 120


def test_anomaly_frames(client: Client) -> None:
    readings = pd.DataFrame(
        {
            "Temperature": [89.4, 95.0],  # aliases of the IoT features (SKAB's names)
            "Accelerometer1RMS": [0.21, 2.8],
            "Pressure": [0.05, 6.5],
            "Volume Flow RateRMS": [125.7, 152.0],
            "Current": [2.5, 87.5],
        },
        index=[10, 20],
    )
    scored = client.predict_frame("iot", readings, version="1")
    assert list(scored.columns) == ["is_anomaly", "anomaly_score", "confidence", "prediction_id"]
    assert scored.index.tolist() == [10, 20]
    assert scored["is_anomaly"].tolist() == [False, True]


async def test_the_async_client_gives_the_same_frame(client: Client, aclient: AsyncClient) -> None:
    frame = _frame(distinct_rows(333))
    blocking = client.predict_frame("ids", frame)
    awaited = await aclient.predict_frame("ids", frame)
    pd.testing.assert_frame_equal(
        blocking.drop(columns="prediction_id"), awaited.drop(columns="prediction_id")
    )
