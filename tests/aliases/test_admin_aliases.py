"""Moving aliases through the admin API: who did it and when is recorded, the move wins
over model.yaml until removed, survives a restart, and `latest` stays computed."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import create_admin_key, make_settings, running_app

FEATURES = {"features": [0.5] * 77}


async def test_moving_stable_is_recorded_and_survives_a_restart(model_repo: Path) -> None:
    settings = make_settings(models={"repository": model_repo})
    async with running_app(settings, as_admin=True) as (app, client):
        before = await client.post("/v1/models/ids/predict", json=FEATURES)
        assert before.json()["model_version"] == "3"  # model.yaml's stable
        response = await client.post(
            "/v1/admin/models/ids/aliases", json={"alias": "stable", "version": "2"}
        )
        assert response.status_code == 200, response.text
        move = response.json()
        assert move["from_version"] == "3" and move["to_version"] == "2"
        assert move["moved_by"] == "test-admin" and move["principal"].startswith("key:")
        assert move["aliases"] == {"latest": "4", "stable": "2"}
        after = await client.post("/v1/models/ids/predict", json=FEATURES)
        assert after.json()["model_version"] == "2"
        # Another admin moves a second alias; the record lists both, newest first.
        other = {"X-API-Key": await create_admin_key(app, "second-admin")}
        canary = await client.post(
            "/v1/admin/models/ids/aliases",
            json={"alias": "canary", "version": "1"},
            headers=other,
        )
        assert canary.status_code == 200
        listing = (await client.get("/v1/admin/models/ids/aliases")).json()
        assert listing["aliases"] == {"latest": "4", "stable": "2", "canary": "1"}
        assert listing["moved"] == {"stable": "2", "canary": "1"}
        assert listing["declared"] == {"stable": "3"}
        assert [(m["alias"], m["moved_by"]) for m in listing["history"]] == [
            ("canary", "second-admin"),
            ("stable", "test-admin"),
        ]
        assert listing["history"][1]["moved_at"] <= listing["history"][0]["moved_at"]
        admin_key = client.headers["X-API-Key"]
    # A restart (same database) keeps the moves, before any poll.
    restarted = make_settings(models={"repository": model_repo}, aliases={"poll_interval_s": 0})
    async with running_app(restarted) as (_, client):
        client.headers["X-API-Key"] = admin_key
        info = (await client.get("/v1/models/ids")).json()
        assert info["aliases"] == {"latest": "4", "stable": "2", "canary": "1"}
        assert (await client.post("/v1/models/ids/predict", json=FEATURES)).json()[
            "model_version"
        ] == "2"
        # Removing the move brings model.yaml's target back.
        removed = await client.delete("/v1/admin/models/ids/aliases/stable")
        assert removed.status_code == 200, removed.text
        assert removed.json()["from_version"] == "2" and removed.json()["to_version"] is None
        assert removed.json()["aliases"]["stable"] == "3"
        assert (await client.post("/v1/models/ids/predict", json=FEATURES)).json()[
            "model_version"
        ] == "3"


async def test_bad_moves_are_refused(model_repo: Path) -> None:
    settings = make_settings(models={"repository": model_repo})
    async with running_app(settings, as_admin=True) as (_, client):
        url = "/v1/admin/models/ids/aliases"
        for body, field in (
            ({"alias": "latest", "version": "1"}, "alias"),
            ({"alias": "Not An Alias", "version": "1"}, "alias"),
            ({"alias": "stable", "version": "9"}, "version"),
        ):
            response = await client.post(url, json=body)
            assert response.status_code == 422, body
            assert response.json()["error"]["details"][0]["field"] == field
        missing = await client.post(
            "/v1/admin/models/nope/aliases", json={"alias": "stable", "version": "1"}
        )
        assert missing.status_code == 404
        assert (await client.delete("/v1/admin/models/ids/aliases/latest")).status_code == 422
        # Nothing was recorded.
        assert (await client.get(url)).json()["history"] == []
        # Only admins move aliases.
        del client.headers["X-API-Key"]
        anonymous = await client.post(url, json={"alias": "stable", "version": "2"})
        assert anonymous.status_code in (401, 403)


async def test_a_reload_keeps_a_moved_alias(model_repo: Path) -> None:
    settings = make_settings(models={"repository": model_repo})
    async with running_app(settings, as_admin=True) as (_, client):
        await client.post("/v1/admin/models/ids/aliases", json={"alias": "stable", "version": "2"})
        (model_repo / "ids" / "model.yaml").write_text("aliases:\n  stable: '1'\n")
        report = await client.post("/v1/admin/models/reload")
        assert report.status_code == 200
        info = (await client.get("/v1/models/ids")).json()
        assert info["aliases"]["stable"] == "2"
