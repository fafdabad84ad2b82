"""Reloading the repository: new versions appear, broken ones never replace good ones."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from mlgate.registry.manifest import sha256_file
from tests.api.gated_model import HOLD, Gate, write_gated_model
from tests.conftest import make_settings, running_app

FEATURES = {"features": [0.5] * 77}


def add_version(repo: Path, model: str, source: str, version: str) -> Path:
    """Copy a version directory under a new version number."""
    target = repo / model / version
    shutil.copytree(repo / model / source, target)
    manifest_path = target / "manifest.yaml"
    manifest = yaml.safe_load(manifest_path.read_text())
    manifest["version"] = version
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return target


def corrupt_artifact(version_dir: Path) -> None:
    manifest = yaml.safe_load((version_dir / "manifest.yaml").read_text())
    (version_dir / manifest["artifact"]).write_bytes(b"not a model")


def admin_app(model_repo: Path) -> Any:
    """The app serving ``model_repo``, with a client holding an admin key (reload needs it)."""
    return running_app(make_settings(models={"repository": model_repo}), as_admin=True)


async def reload(client: httpx.AsyncClient) -> dict:
    response = await client.post("/v1/admin/models/reload")
    assert response.status_code == 200, response.text
    return response.json()


async def test_reload_picks_up_a_new_version(model_repo: Path) -> None:
    async with admin_app(model_repo) as (_, client):
        add_version(model_repo, "ids", "1", "12")
        report = await reload(client)
        assert report["loaded"] == {"ids": ["12"]}
        assert "ids" in report["unchanged"]
        info = (await client.get("/v1/models/ids")).json()
        assert info["aliases"] == {"latest": "12", "stable": "1"}
        # The default is `stable`; `latest` and explicit versions reach version 2.
        assert (await client.post("/v1/models/ids/predict", json=FEATURES)).json()[
            "model_version"
        ] == "1"
        latest = await client.post(
            "/v1/models/ids/predict", json=FEATURES, params={"version": "latest"}
        )
        assert latest.json()["model_version"] == "12"


async def test_broken_new_version_is_reported_and_previous_keeps_serving(
    model_repo: Path,
) -> None:
    async with admin_app(model_repo) as (_, client):
        corrupt_artifact(add_version(model_repo, "ids", "1", "12"))
        report = await reload(client)
        assert "12" in report["failed"]["ids"]
        assert "sha256" in report["failed"]["ids"]["12"]
        info = (await client.get("/v1/models/ids")).json()
        assert info["aliases"]["latest"] == "2"
        assert "12" in info["load_errors"]
        response = await client.post(
            "/v1/models/ids/predict", json=FEATURES, params={"version": "latest"}
        )
        assert response.status_code == 200
        assert response.json()["model_version"] == "2"
        missing = await client.post(
            "/v1/models/ids/predict", json=FEATURES, params={"version": "12"}
        )
        assert missing.status_code == 404
        assert "sha256" in missing.json()["error"]["details"]["load_error"]


async def test_broken_replacement_of_a_served_version_keeps_the_old_one(
    model_repo: Path,
) -> None:
    async with admin_app(model_repo) as (_, client):
        before = (await client.post("/v1/models/ids/predict", json=FEATURES)).json()
        manifest_path = model_repo / "ids" / "1" / "manifest.yaml"
        corrupt_artifact(model_repo / "ids" / "1")
        # The hash matches the corrupt artifact: the runtime itself fails to load it.
        manifest = yaml.safe_load(manifest_path.read_text())
        manifest["artifact_sha256"] = sha256_file(model_repo / "ids" / "1" / manifest["artifact"])
        manifest_path.write_text(yaml.safe_dump(manifest))
        report = await reload(client)
        assert "1" in report["failed"]["ids"]
        after = await client.post("/v1/models/ids/predict", json=FEATURES)
        assert after.status_code == 200
        assert after.json()["probabilities"] == before["probabilities"]


async def test_stable_alias_to_a_broken_version_stays_on_the_previous_target(
    model_repo: Path,
) -> None:
    async with admin_app(model_repo) as (_, client):
        corrupt_artifact(add_version(model_repo, "ids", "1", "12"))
        (model_repo / "ids" / "model.yaml").write_text(
            yaml.safe_dump({"aliases": {"stable": "12"}})
        )
        report = await reload(client)
        assert "12" in report["failed"]["ids"]
        info = (await client.get("/v1/models/ids")).json()
        assert info["aliases"]["stable"] == "1"
        assert "alias:stable" in info["load_errors"]


async def test_reload_does_not_fail_requests_in_flight(model_repo: Path) -> None:
    async with admin_app(model_repo) as (_, client):
        for version in ("12", "13", "14"):
            add_version(model_repo, "ids", "1", version)

        async def hammer() -> list[int]:
            codes = []
            for _ in range(30):
                response = await client.post(
                    "/v1/models/ids/predict/batch",
                    json={"instances": [[0.5] * 77] * 20},
                    params={"version": "latest"},
                )
                codes.append(response.status_code)
            return codes

        results = await asyncio.gather(hammer(), hammer(), reload(client), hammer())
        codes = [c for r in results if isinstance(r, list) for c in r]
        assert codes and set(codes) == {200}
        assert (await client.get("/v1/models/ids")).json()["aliases"]["latest"] == "14"


async def test_requests_in_flight_finish_on_the_version_they_started_with(
    tmp_path: Path,
) -> None:
    """A slow version is replaced on disk and a version 2 appears while three requests
    are inside its model call: they finish on the old version 1 (its output and its
    threshold), while new requests get what the reload loaded."""
    repo = tmp_path / "models"
    gate = Gate()
    write_gated_model(repo, "gated", "1", score=0.25, threshold=0.5, gate=gate)
    async with admin_app(repo) as (_, client):

        async def predict(features: list[float], **params: str) -> httpx.Response:
            return await client.post(
                "/v1/models/gated/predict", json={"features": features}, params=params
            )

        held = [asyncio.create_task(predict([HOLD, 0.0])) for _ in range(3)]
        await gate.entered()
        write_gated_model(repo, "gated", "1", score=0.75, threshold=0.1, gate=gate)
        write_gated_model(repo, "gated", "2", score=0.9, threshold=0.5, gate=gate)
        report = await reload(client)
        assert report["loaded"] == {"gated": ["1", "2"]}
        assert gate.held >= 1  # the reload did not wait for the requests in flight
        new_default = (await predict([0.0, 0.0])).json()
        assert (new_default["model_version"], new_default["anomaly_score"]) == ("2", 0.9)
        new_one = (await predict([0.0, 0.0], version="1")).json()
        assert (new_one["anomaly_score"], new_one["threshold"], new_one["is_anomaly"]) == (
            0.75,
            0.1,
            True,
        )
        gate.open()
        finished = await asyncio.gather(*held)
    assert not gate.timed_out
    for response in finished:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model_version"] == "1"
        assert (body["anomaly_score"], body["threshold"], body["is_anomaly"]) == (0.25, 0.5, False)


async def test_removed_version_disappears(model_repo: Path) -> None:
    async with admin_app(model_repo) as (_, client):
        shutil.rmtree(model_repo / "iot-lof")
        report = await reload(client)
        assert report["removed"] == {"iot-lof": ["1", "2"]}
        assert (await client.get("/v1/models/iot-lof")).status_code == 404


async def test_repository_watch_reloads_by_itself(model_repo: Path) -> None:
    settings = make_settings(models={"repository": model_repo, "watch_interval_s": 0.05})
    async with running_app(settings) as (_, client):
        add_version(model_repo, "ids", "1", "15")
        for _ in range(200):
            info = (await client.get("/v1/models/ids")).json()
            if info["aliases"]["latest"] == "15":
                break
            await asyncio.sleep(0.05)
        assert info["aliases"]["latest"] == "15"
