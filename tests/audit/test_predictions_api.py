"""`GET /v1/predictions` and `GET /v1/predictions/{id}`: own predictions (a user's, through
any of its keys), everyone's for admins, others' are 404; filters, cursor pages, bad
input."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.audit.conftest import READING, ROW, AppFactory

PORT_SCAN = [float(i % 7) for i in range(77)]


async def test_callers_see_their_users_predictions_admins_see_all(
    audit_app: AppFactory,
) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        bob = await a.caller("bob")
        admin = await a.caller("root", ["admin"])
        with_key = await a.predict(alice, "ids", [ROW, ROW])
        with_token = await a.predict(alice, "ids", [ROW], headers=alice.with_token)
        bobs = await a.predict(bob, "iot", [READING])
        mine = {p["prediction_id"] for p in with_key + with_token}

        # A user sees what they made with any of their credentials, nothing of others.
        for headers in (alice.with_key, alice.with_token):
            assert {r["prediction_id"] for r in await a.list_all(headers)} == mine
        assert {r["prediction_id"] for r in await a.list_all(bob.with_key)} == {
            bobs[0]["prediction_id"]
        }
        everyone = await a.list_all(admin.with_key)
        assert {r["prediction_id"] for r in everyone} == mine | {bobs[0]["prediction_id"]}
        principals = {r["prediction_id"]: r["principal"] for r in everyone}
        assert principals[with_key[0]["prediction_id"]] == f"key:{alice.key_id}"
        assert principals[with_token[0]["prediction_id"]] == f"user:{alice.user_id}"

        # Someone else's prediction does not exist, for reading and for labelling.
        bobs_id = bobs[0]["prediction_id"]
        other = await a.client.get(f"/v1/predictions/{bobs_id}", headers=alice.with_key)
        assert other.status_code == 404
        assert other.json()["error"]["code"] == "not_found"
        label = await a.client.post(
            f"/v1/predictions/{bobs_id}/feedback",
            json={"is_anomaly": True},
            headers=alice.with_key,
        )
        assert label.status_code == 404
        assert (await a.client.get(f"/v1/predictions/{bobs_id}", headers=bob.with_key)).json()[
            "feedback"
        ] is None
        assert (
            await a.client.get(f"/v1/predictions/{bobs_id}", headers=admin.with_key)
        ).status_code == 200
        # The principal filter narrows an admin's view; it never widens a user's.
        keyed = await a.list_all(admin.with_key, principal=f"key:{alice.key_id}")
        assert {r["prediction_id"] for r in keyed} == {p["prediction_id"] for p in with_key}
        assert await a.list_all(alice.with_key, principal=f"key:{bob.key_id}") == []


async def test_filters_and_cursor_pages(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        start = datetime.now(UTC) - timedelta(seconds=1)
        first = await a.predict(alice, "ids", [ROW] * 5)
        benign_or_not = await a.predict(alice, "ids", [PORT_SCAN] * 4)
        v2 = await a.client.post(
            "/v1/models/ids/predict/batch",
            json={"instances": [ROW] * 3, "version": "2"},
            headers=alice.with_key,
        )
        readings = await a.predict(alice, "iot", [READING] * 2)
        # Times select request keys, which have millisecond resolution.
        await asyncio.sleep(0.002)
        middle = datetime.now(UTC)
        await asyncio.sleep(0.002)
        late = await a.predict(alice, "ids", [ROW] * 2)
        h = alice.with_key

        everything = await a.list_all(h)
        assert len(everything) == 16
        # Newest first: request keys descending, rows ascending within a request.
        assert [r["prediction_id"] for r in everything[:2]] == [p["prediction_id"] for p in late]
        # Pages of 5 walk the same list without gaps or repeats.
        pages, cursor = [], None
        while True:
            params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            body = (await a.client.get("/v1/predictions", params=params, headers=h)).json()
            pages.append([r["prediction_id"] for r in body["predictions"]])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [5, 5, 5, 1]
        assert [i for page in pages for i in page] == [r["prediction_id"] for r in everything]

        assert len(await a.list_all(h, model="iot")) == 2
        assert {r["prediction_id"] for r in await a.list_all(h, model="ids", version="2")} == {
            p["prediction_id"] for p in v2.json()["predictions"]
        }
        name = benign_or_not[0]["predicted_class_name"]
        index = benign_or_not[0]["predicted_class"]
        by_name = await a.list_all(h, predicted_class=name)
        assert by_name == await a.list_all(h, predicted_class=str(index))
        assert {r["predicted_class_name"] for r in by_name} == {name}
        expected = [p for p in first + benign_or_not + late if p["predicted_class_name"] == name]
        assert len([r for r in by_name if r["model_version"] == "1"]) == len(expected)
        verdict = readings[0]["is_anomaly"]
        assert len(await a.list_all(h, is_anomaly=str(verdict).lower())) == sum(
            r["is_anomaly"] == verdict for r in readings
        )
        attacks = await a.list_all(h, is_attack="true")
        assert all(r["is_attack"] for r in attacks)
        assert len(await a.list_all(h, since=middle.isoformat())) == 2
        assert len(await a.list_all(h, until=middle.isoformat())) == 14
        assert len(await a.list_all(h, since=start.isoformat(), until=middle.isoformat())) == 14
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await a.list_all(h, since=future) == []
        assert await a.list_all(h, labelled="true") == []
        assert len(await a.list_all(h, labelled="false")) == 16


BAD_PARAMETERS: list[tuple[dict[str, object], str]] = [
    ({"cursor": "nope"}, "cursor"),
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"since": "yesterday"}, "since"),
    ({"is_anomaly": "maybe"}, "is_anomaly"),
]


async def test_bad_listing_parameters_are_422_naming_the_field(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        for params, field in BAD_PARAMETERS:
            response = await a.client.get("/v1/predictions", params=params, headers=alice.with_key)
            assert response.status_code == 422, (params, response.text)
            assert field in response.text


async def test_unknown_ids_and_scopes(audit_app: AppFactory) -> None:
    async with audit_app() as a:
        alice = await a.caller("alice")
        reader = await a.caller("reader", ["models:read"])
        (made,) = await a.predict(alice, "ids", [ROW])
        for bad in ("nope", made["prediction_id"][:-1] + "9", made["prediction_id"] + "0"):
            response = await a.client.get(f"/v1/predictions/{bad}", headers=alice.with_key)
            assert response.status_code == 404, bad
        assert (await a.client.get("/v1/predictions", headers=reader.with_key)).status_code == 403
        assert (await a.client.get("/v1/predictions")).status_code == 401
        assert (
            await a.client.get(f"/v1/predictions/{made['prediction_id']}", headers=alice.with_key)
        ).status_code == 200


async def test_anonymous_callers_own_no_predictions(audit_app: AppFactory) -> None:
    async with audit_app(auth={"anonymous_enabled": True}) as a:
        response = await a.client.post("/v1/models/ids/predict", json={"features": ROW})
        assert response.status_code == 200
        pid = response.json()["prediction_id"]
        assert (await a.client.get("/v1/predictions")).json()["predictions"] == []
        assert (await a.client.get(f"/v1/predictions/{pid}")).status_code == 404
        admin = await a.caller("root", ["admin"])
        (record,) = await a.list_all(admin.with_key)
    assert record["prediction_id"] == pid
    assert record["principal"] == "anonymous" and record["user_id"] is None


async def test_audit_log_off(audit_app: AppFactory) -> None:
    async with audit_app(audit={"enabled": False}) as a:
        alice = await a.caller("alice")
        (made,) = await a.predict(alice, "ids", [ROW])
        listing = await a.client.get("/v1/predictions", headers=alice.with_key)
        one = await a.client.get(f"/v1/predictions/{made['prediction_id']}", headers=alice.with_key)
    assert listing.status_code == one.status_code == 404
    assert "MLGATE_AUDIT__ENABLED" in listing.json()["error"]["message"]
