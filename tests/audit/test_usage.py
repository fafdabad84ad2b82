"""`GET /v1/usage` and `GET /v1/admin/usage`: requests, rows, errors and rate-limit
refusals per principal, tier, model and day, summed over workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.audit.conftest import READING, ROW, AppFactory, AuditApp
from tests.conftest import make_settings, running_app


def _by(rows: list[dict[str, Any]]) -> dict[tuple[str, str | None], tuple[int, int, int, int]]:
    return {
        (r["principal"], r["model"]): (r["requests"], r["rows"], r["errors"], r["refusals"])
        for r in rows
    }


async def test_usage_counts_requests_rows_errors_and_refusals(audit_app: AppFactory) -> None:
    async with audit_app(rate_limit={"enabled": True}) as a:
        alice = await a.caller("alice", rate_limit_overrides={"requests_per_minute": 4, "burst": 4})
        bob = await a.caller("bob")
        admin = await a.caller("root", ["admin"])
        await a.predict(alice, "ids", [ROW])
        await a.predict(alice, "ids", [ROW] * 3)
        bad = await a.client.post(
            "/v1/models/ids/predict", json={"features": [1, 2]}, headers=alice.with_key
        )
        assert bad.status_code == 422
        await a.predict(alice, "iot", [READING, READING])
        refused = await a.client.post(
            "/v1/models/ids/predict", json={"features": ROW}, headers=alice.with_key
        )
        assert refused.status_code == 429
        await a.predict(bob, "ids", [ROW] * 5)
        # Alice's token is her user (another principal, another bucket): same usage owner.
        await a.predict(alice, "iot", [READING], headers=alice.with_token)

        own = (await a.client.get("/v1/usage", headers=alice.with_token)).json()
        everyone = (await a.client.get("/v1/admin/usage", headers=admin.with_key)).json()
        bobs = (
            await a.client.get(
                "/v1/admin/usage", params={"user_id": bob.user_id}, headers=admin.with_key
            )
        ).json()
        only_iot = (
            await a.client.get("/v1/usage", params={"model": "iot"}, headers=alice.with_token)
        ).json()
        forbidden = await a.client.get("/v1/admin/usage", headers=alice.with_key)

    key, user = f"key:{alice.key_id}", f"user:{alice.user_id}"
    assert _by(own["usage"]) == {
        # The refusal is counted against the model: an inference request is charged (its
        # request and rows together) once its model is resolved and its input decoded.
        (key, "ids"): (2, 4, 1, 1),
        (key, "iot"): (1, 2, 0, 0),
        (user, "iot"): (1, 1, 0, 0),
    }
    assert own["totals"] == {"requests": 4, "rows": 7, "errors": 1, "refusals": 1}
    today = datetime.now(UTC).date().isoformat()
    assert {r["day"] for r in own["usage"]} == {today}
    assert {r["tier"] for r in own["usage"]} == {"free"}
    assert _by(bobs["usage"]) == {(f"key:{bob.key_id}", "ids"): (1, 5, 0, 0)}
    assert _by(everyone["usage"]) == {**_by(own["usage"]), **_by(bobs["usage"])}
    assert _by(only_iot["usage"]) == {(key, "iot"): (1, 2, 0, 0), (user, "iot"): (1, 1, 0, 0)}
    assert forbidden.status_code == 403


async def test_usage_of_several_workers_adds_up(database: dict[str, Any]) -> None:
    common = {**database, "auth": {"anonymous_enabled": False}}
    async with (
        running_app(make_settings(**common)) as (app1, client1),
        running_app(make_settings(**common)) as (app2, client2),
    ):
        a, b = AuditApp(app1, client1), AuditApp(app2, client2)
        alice = await a.caller("alice")
        await a.predict(alice, "ids", [ROW] * 2)
        await b.predict(alice, "ids", [ROW] * 3)
        await b.predict(alice, "ids", [ROW])
        first = (await a.client.get("/v1/usage", headers=alice.with_key)).json()
        both = (await b.client.get("/v1/usage", headers=alice.with_key)).json()
        yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        none = (
            await b.client.get("/v1/usage", params={"until": yesterday}, headers=alice.with_key)
        ).json()
    assert first["totals"]["requests"] == 1  # only the first worker's had been written
    assert both["totals"] == {"requests": 3, "rows": 6, "errors": 0, "refusals": 0}
    assert none["usage"] == []


async def test_anonymous_callers_have_no_usage_page(audit_app: AppFactory) -> None:
    async with audit_app(auth={"anonymous_enabled": True}) as a:
        response = await a.client.get("/v1/usage")
        bad_day = await a.client.get(
            "/v1/usage", params={"since": "monday"}, headers=(await a.caller("x")).with_key
        )
    assert response.status_code == 403
    assert bad_day.status_code == 422


async def test_a_usage_batch_retried_after_a_lost_answer_is_added_once(
    audit_app: AppFactory,
) -> None:
    """The connection dies after the commit: the retry (same flush id) adds nothing."""
    async with audit_app() as a:
        alice = await a.caller("alice")
        await a.predict(alice, "ids", [ROW] * 2)
        meter = a.audit.usage
        rows = meter._take()  # what the next flush would add
        await meter._add("f" * 32, rows)
        await meter._add("f" * 32, rows)  # the retry of a batch already added
        usage = (await a.client.get("/v1/usage", headers=alice.with_key)).json()
    assert usage["totals"] == {"requests": 1, "rows": 2, "errors": 0, "refusals": 0}
