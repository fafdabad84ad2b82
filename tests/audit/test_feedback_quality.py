"""Feedback labels predictions; quality reports exactly what the labels say - and the
held-out CICIDS2017 rows streamed through HTTP with their labels reproduce the offline
evaluation."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import numpy as np
import pytest

from mlgate.audit.keys import key_floor
from mlgate.evaluation.ids import evaluate_ids
from mlgate.settings import bundled_repository
from mlgate.training.ids import DEFAULT_DATA, load_ids_dataset, split_ids
from tests.audit.conftest import READING, ROW, AppFactory, AuditApp, Caller
from tests.conftest import PROJECT_ROOT, make_settings, running_app
from tests.dataplane.test_observers import Recorder

CLASSES = ["BENIGN", "Bot", "BruteForce", "DoS", "Infiltration", "PortScan", "WebAttack"]
FLOWS = [[float((i * k) % 11) for i in range(77)] for k in range(1, 7)]


async def _quality(a: AuditApp, caller: Caller, model: str, **params: str) -> dict[str, Any]:
    response = await a.client.get(
        f"/v1/models/{model}/quality", params=params, headers=caller.with_key
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _label(a: AuditApp, caller: Caller, pid: str, body: dict[str, Any]) -> Any:
    return await a.client.post(
        f"/v1/predictions/{pid}/feedback", json=body, headers=caller.with_key
    )


def _served(report: dict[str, Any], version: str) -> dict[str, Any]:
    (entry,) = [v for v in report["versions"] if v["version"] == version and not v["shadow"]]
    return entry


async def test_feedback_moves_accuracy_and_confusion_by_exactly_the_labelled_rows(
    audit_app: AppFactory,
) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        made = await a.predict(alice, "ids", FLOWS)
        predicted = [p["predicted_class_name"] for p in made]
        report = _served(await _quality(a, alice, "ids"), "1")
        assert report["labelled"] == 0 and report["accuracy"] is None
        assert report["predictions"] == 6

        wrong = next(c for c in CLASSES if c != predicted[3])
        for i in range(3):  # right
            assert (
                await _label(a, alice, made[i]["prediction_id"], {"label": predicted[i]})
            ).status_code == 200
        labelled = await _label(a, alice, made[3]["prediction_id"], {"label": wrong})
        assert labelled.status_code == 200, labelled.text
        assert labelled.json()["label"] == wrong
        report = _served(await _quality(a, alice, "ids"), "1")
        assert report["labelled"] == 4
        assert report["accuracy"] == 0.75
        matrix = np.zeros((7, 7), dtype=int)
        for true, pred in [(predicted[i], predicted[i]) for i in range(3)] + [
            (wrong, predicted[3])
        ]:
            matrix[CLASSES.index(true), CLASSES.index(pred)] += 1
        assert report["confusion_matrix"]["labels"] == CLASSES
        assert report["confusion_matrix"]["matrix"] == matrix.tolist()
        assert sum(c["support"] for c in report["per_class"].values()) == 4

        # A second label replaces the first (by index this time): now all four are right.
        fixed = await _label(
            a, alice, made[3]["prediction_id"], {"label": CLASSES.index(predicted[3])}
        )
        assert fixed.json()["label"] == predicted[3]
        report = _served(await _quality(a, alice, "ids"), "1")
        assert report["labelled"] == 4 and report["accuracy"] == 1.0
        matrix[CLASSES.index(wrong), CLASSES.index(predicted[3])] -= 1
        matrix[CLASSES.index(predicted[3]), CLASSES.index(predicted[3])] += 1
        assert report["confusion_matrix"]["matrix"] == matrix.tolist()
        assert report["macro_f1"] == 1.0
        one = (
            await a.client.get(
                f"/v1/predictions/{made[3]['prediction_id']}", headers=alice.with_key
            )
        ).json()
        assert one["feedback"]["label"] == predicted[3]
        assert one["feedback"]["labelled_by"] == f"key:{alice.key_id}"
        labelled_list = await a.list_all(alice.with_key, labelled="true")
        assert len(labelled_list) == 4


BAD_LABELS: list[tuple[Any, str]] = [
    ({"label": "Portscan"}, "body.label"),
    ({"label": 7}, "body.label"),
    ({"label": -1}, "body.label"),
    ({"label": True}, "body.label"),
    ({"label": 1.5}, "body.label"),
    ({"is_anomaly": True}, "body"),
    ({"label": "DoS", "is_anomaly": False}, "body"),
    ({}, "body"),
    ({"label": "DoS", "comment": "x"}, "body.comment"),
    ([], "body"),
]


async def test_bad_labels_are_422_naming_the_field(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        (made,) = await a.predict(alice, "ids", [ROW])
        for body, field in BAD_LABELS:
            response = await _label(a, alice, made["prediction_id"], body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["error"]["details"][0]["field"] == field, body
        report = _served(await _quality(a, alice, "ids"), "1")
    assert report["labelled"] == 0


async def test_anomaly_feedback_gives_the_skab_measures(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        odd = {**READING, "temperature": 140.0, "vibration": 3.0}
        made = await a.predict(alice, "iot", [odd, READING, odd, READING, READING])
        verdicts = [p["is_anomaly"] for p in made]
        assert True in verdicts and False in verdicts
        # Truth: the first two are anomalies, the other three are not.
        truth = [True, True, False, False, False]
        for p, true in zip(made, truth, strict=True):
            assert (
                await _label(a, alice, p["prediction_id"], {"is_anomaly": true})
            ).status_code == 200
        bad = await _label(a, alice, made[0]["prediction_id"], {"label": "BENIGN"})
        assert bad.status_code == 422
        version = a.app.state.mlgate.registry.resolve("iot").version
        report = _served(await _quality(a, alice, "iot"), version)
    tp = sum(t and v for t, v in zip(truth, verdicts, strict=True))
    fp = sum(v and not t for t, v in zip(truth, verdicts, strict=True))
    fn = sum(t and not v for t, v in zip(truth, verdicts, strict=True))
    tn = 5 - tp - fp - fn
    assert report["counts"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert report["labelled"] == 5
    assert report["false_alarm_rate"] == (round(fp / (fp + tn), 6) if fp + tn else None)
    assert report["missed_alarm_rate"] == (round(fn / (fn + tp), 6) if fn + tp else None)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert report["f1"] == round(f1, 6)


async def test_a_prediction_still_queued_is_labelled(audit_app: AppFactory) -> None:
    """Flush, then label: the record is written first, so the label is checked."""
    async with audit_app(audit={"flush_interval_s": 3600, "batch_records": 1000}) as a:
        alice = await a.caller("alice")
        (made,) = await a.predict(alice, "ids", [ROW])
        assert a.audit.log is not None and a.audit.log.stats().depth == 1
        response = await _label(a, alice, made["prediction_id"], {"label": "DoS"})
        assert response.status_code == 200, response.text
        assert a.audit.log.stats().depth == 0
        report = _served(await _quality(a, alice, "ids"), "1")
    assert report["labelled"] == 1
    assert (
        report["confusion_matrix"]["matrix"][CLASSES.index("DoS")][
            CLASSES.index(made["predicted_class_name"])
        ]
        == 1
    )


async def test_feedback_waits_for_a_prediction_queued_by_another_worker(
    database: dict[str, Any],
) -> None:
    """Two workers on one database: the prediction sits in the first one's queue for up
    to its flush interval; the second worker's feedback waits for it."""
    common = {**database, "auth": {"anonymous_enabled": False}}
    first = make_settings(**common, audit={"flush_interval_s": 0.3})
    second = make_settings(**common, audit={"flush_interval_s": 0.3})
    async with running_app(first) as (app1, client1), running_app(second) as (app2, client2):
        a, b = AuditApp(app1, client1), AuditApp(app2, client2)
        alice = await a.caller("alice")
        (made,) = await a.predict(alice, "ids", [ROW])
        response = await _label(b, alice, made["prediction_id"], {"label": "Bot"})
        assert response.status_code == 200, response.text
        unknown = made["prediction_id"][:-1] + "7"
        assert (await _label(b, alice, unknown, {"label": "Bot"})).status_code == 404
        # An id "answered" in ten years is not waited for (it would hold the request).
        forged = key_floor(time.time() + 10 * 365 * 86_400) + "-0"
        assert (await _label(b, alice, forged, {"label": "Bot"})).status_code == 404


async def test_batch_feedback_reports_each_label(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        bob = await a.caller("bob")
        mine = await a.predict(alice, "ids", [ROW, ROW])
        (bobs,) = await a.predict(bob, "ids", [ROW])
        response = await a.client.post(
            "/v1/feedback",
            json={
                "feedback": [
                    {"prediction_id": mine[0]["prediction_id"], "label": "PortScan"},
                    {"prediction_id": bobs["prediction_id"], "label": "PortScan"},
                    {"prediction_id": mine[1]["prediction_id"], "label": "Nope"},
                    {"prediction_id": "not-an-id", "label": 1},
                    {"prediction_id": mine[1]["prediction_id"], "label": 5},
                ]
            },
            headers=alice.with_key,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["accepted"] == 2
        assert [(r["index"], r["error"]["code"]) for r in body["rejected"]] == [
            (1, "not_found"),
            (2, "validation_error"),
            (3, "not_found"),
        ]
        report = _served(await _quality(a, alice, "ids"), "1")
        assert report["labelled"] == 2
        assert report["per_class"]["PortScan"]["support"] == 2
        for bad in ({}, {"feedback": []}, {"feedback": [{"label": 1}]}, {"feedback": "x"}):
            assert (
                await a.client.post("/v1/feedback", json=bad, headers=alice.with_key)
            ).status_code == 422
        too_many = {"feedback": [{"prediction_id": "x", "label": 1}] * 1001}
        assert (
            await a.client.post("/v1/feedback", json=too_many, headers=alice.with_key)
        ).status_code == 422
        reader = await a.caller("reader", ["predict", "models:read"])
        refused = await a.client.post(
            "/v1/feedback",
            json={"feedback": [{"prediction_id": mine[0]["prediction_id"], "label": 1}]},
            headers=reader.with_key,
        )
        assert refused.status_code == 403


async def test_estimated_accuracy_for_calibrated_versions(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        v1 = await a.predict(alice, "ids", FLOWS)
        response = await a.client.post(
            "/v1/models/ids/predict/batch",
            json={"instances": FLOWS, "version": "2"},
            headers=alice.with_key,
        )
        v2 = response.json()["predictions"]
        report = await _quality(a, alice, "ids")
        only_v2 = await _quality(a, alice, "ids", version="2", window="1h")
        bad_window = await a.client.get(
            "/v1/models/ids/quality", params={"window": "soon"}, headers=alice.with_key
        )
        unknown = await a.client.get("/v1/models/nope/quality", headers=alice.with_key)
        unknown_version = await a.client.get(
            "/v1/models/ids/quality", params={"version": "9"}, headers=alice.with_key
        )
    calibrated = _served(report, "2")["estimated"]
    assert calibrated["predictions"] == 6
    assert calibrated["accuracy"] == pytest.approx(np.mean([p["confidence"] for p in v2]), abs=1e-6)
    assert "CBPE" in calibrated["method"]
    assert calibrated["calibration"]["temperature"] > 0
    uncalibrated = _served(report, "1")["estimated"]
    assert uncalibrated["accuracy"] is None and uncalibrated["predictions"] == len(v1)
    assert [v["version"] for v in only_v2["versions"]] == ["2"]
    assert only_v2["window"]["from"] is not None
    assert bad_window.status_code == 422
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    assert unknown_version.status_code == 404


async def test_quality_compares_served_and_shadow_on_the_same_labelled_rows(
    audit_app: AppFactory,
) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        log = a.audit.log
        assert log is not None
        recorder = Recorder()
        a.app.state.mlgate.dataplane.add_observer(recorder)
        served = await a.predict(alice, "ids", FLOWS)
        event = recorder.events[-1]
        await a.client.post(
            "/v1/models/ids/predict/batch",
            json={"instances": FLOWS, "version": "2"},
            headers=alice.with_key,
        )
        challenger = recorder.events[-1]
        log.observe(
            dataclasses.replace(challenger, prediction_key=event.prediction_key, shadow=True)
        )
        truth = ["DoS", "BENIGN", "PortScan", "DoS"]  # four of six rows labelled
        for p, label in zip(served, truth, strict=False):
            await _label(a, alice, p["prediction_id"], {"label": label})
        report = await _quality(a, alice, "ids")
    (comparison,) = report["shadow_comparisons"]
    assert (comparison["served_version"], comparison["shadow_version"]) == ("1", "2")
    assert comparison["labelled"] == 4
    shadow_predicted = [CLASSES[i] for i in challenger.output.predicted[:4]]  # type: ignore[union-attr]
    served_predicted = [p["predicted_class_name"] for p in served[:4]]
    for side, predicted in (("served", served_predicted), ("shadow", shadow_predicted)):
        right = sum(t == p for t, p in zip(truth, predicted, strict=True))
        assert comparison[side]["accuracy"] == round(right / 4, 6), side
    shadow_entry = [v for v in report["versions"] if v["shadow"]]
    assert [(v["version"], v["labelled"]) for v in shadow_entry] == [("2", 4)]


def _literal_json(value: Any) -> str:
    """JSON with NaN and Infinity written as the literals CICFlowMeter files carry."""
    return json.dumps(value, allow_nan=True)


@pytest.mark.parametrize("version", ["1", "2"])
async def test_held_out_cicids2017_streamed_with_labels_gives_the_offline_accuracy(
    audit_app: AppFactory, version: str
) -> None:
    data = PROJECT_ROOT / DEFAULT_DATA
    # `mlgate eval ids --held-out`, which runs its own event loop.
    offline = await asyncio.to_thread(
        evaluate_ids, bundled_repository(), [data], version=version, held_out=True
    )
    dataset = load_ids_dataset([data])
    manifest_seed = _seed(version)
    split = split_ids(dataset.y, manifest_seed)
    x, y = dataset.x[split.test], dataset.y[split.test]
    async with audit_app() as a:
        alice = await a.caller("alice")
        ids: list[str] = []
        for start in range(0, len(x), 250):
            response = await a.client.post(
                "/v1/models/ids/predict/batch",
                content=_literal_json(
                    {"instances": x[start : start + 250].tolist(), "version": version}
                ),
                headers={**alice.with_key, "Content-Type": "application/json"},
            )
            assert response.status_code == 200, response.text
            ids += [p["prediction_id"] for p in response.json()["predictions"]]
        labels = [{"prediction_id": i, "label": str(t)} for i, t in zip(ids, y, strict=True)]
        for start in range(0, len(labels), 500):
            response = await a.client.post(
                "/v1/feedback",
                json={"feedback": labels[start : start + 500]},
                headers=alice.with_key,
            )
            assert response.json()["rejected"] == []
        report = _served(await _quality(a, alice, "ids", version=version), version)
    assert report["labelled"] == offline.rows == len(y)
    assert report["accuracy"] == offline.metrics["accuracy"]
    assert report["macro_f1"] == offline.metrics["macro_f1"]
    assert report["confusion_matrix"]["matrix"] == offline.metrics["confusion_matrix"]["matrix"]
    for name, row in offline.metrics["per_class"].items():
        assert report["per_class"][name] == row
    estimated = report["estimated"]
    assert estimated["predictions"] == len(y)
    assert (estimated["accuracy"] is None) == (version == "1")


def _seed(version: str) -> int:
    from mlgate.registry.manifest import load_manifest

    return int(load_manifest(bundled_repository() / "ids" / version).provenance["seed"])
