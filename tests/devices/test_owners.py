"""Device baselines belong to an owner (issue 8 item 3): the user, or the admin-defined
tenant the user belongs to. Another owner's device ids are invisible (404, never 403)
and another owner's readings never touch them; an admin can share a device. Same tests
on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import make_settings, running_app
from tests.devices.test_baselines import POINT, SENSORS, SPREAD, readings

REQUIRED = 5
BASELINE = "/v1/models/iot/devices/{}/baseline"


@dataclass
class Caller:
    """One principal's credentials, and its user id."""

    headers: dict[str, str]
    user_id: int

    @property
    def owner(self) -> str:
        return f"user:{self.user_id}"


async def caller(app: FastAPI, name: str, admin: bool = False, **fields: Any) -> Caller:
    accounts = app.state.mlgate.accounts
    scopes = ["admin"] if admin else ["predict", "models:read"]
    user = await accounts.create_user(name, password=None, scopes=scopes, **fields)
    key = (await accounts.create_key(user.id, name="k")).plaintext
    return Caller({"X-API-Key": key}, user.id)


def config(database: dict[str, Any], anonymous: bool = False) -> Any:
    return make_settings(
        **database,
        devices={"baseline_readings": REQUIRED},
        auth={"anonymous_enabled": anonymous},
    )


async def stream(
    client: httpx.AsyncClient, who: Caller, device: str, rows: list[dict[str, float]]
) -> list[dict[str, Any]]:
    response = await client.post(
        "/v1/models/iot/predict/batch",
        json={"instances": rows, "device_id": device, "version": "2"},  # baselines
        headers=who.headers,
    )
    assert response.status_code == 200, response.text
    return list(response.json()["predictions"])


async def test_another_owners_readings_never_touch_a_device(database: dict[str, Any]) -> None:
    async with running_app(config(database)) as (app, client):
        alice, mallory = await caller(app, "alice"), await caller(app, "mallory")
        # Mallory calibrates "pump-9" first, on readings far from Alice's pump...
        await stream(client, mallory, "pump-9", readings(REQUIRED, shift=40.0))
        # ...and Alice's pump-9 still calibrates on her own readings.
        first = await stream(client, alice, "pump-9", readings(REQUIRED))
        assert [p["status"] for p in first] == ["calibrating"] * REQUIRED
        assert first[0]["calibration"] == {"seen": 1, "required": REQUIRED}
        # So a real anomaly on Alice's pump is still one.
        (anomaly,) = await stream(client, alice, "pump-9", readings(1, shift=40.0))
        assert anomaly["status"] == "scored" and anomaly["is_anomaly"] is True
        # Mallory's readings for Alice's device calibrate Mallory's own device only.
        before = (await client.get(BASELINE.format("pump-9"), headers=alice.headers)).json()
        await stream(client, mallory, "pump-9", readings(3, seed=5))
        after = (await client.get(BASELINE.format("pump-9"), headers=alice.headers)).json()
        assert after == before
        assert after["owner"] == alice.owner


async def test_another_owners_device_is_a_404_like_an_unknown_one(
    database: dict[str, Any],
) -> None:
    async with running_app(config(database)) as (app, client):
        alice, carol = await caller(app, "alice"), await caller(app, "carol")
        await stream(client, alice, "pump-1", readings(2))
        mine = await client.get(BASELINE.format("pump-1"), headers=alice.headers)
        assert mine.status_code == 200 and mine.json()["calibration"]["seen"] == 2
        theirs = await client.get(BASELINE.format("pump-1"), headers=carol.headers)
        unknown = await client.get(BASELINE.format("pump-404"), headers=carol.headers)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"
        # The same answer as for a device that exists nowhere: nothing tells them apart.
        said, unknown_said = theirs.json()["error"], unknown.json()["error"]
        assert said["message"].replace("pump-1", "X") == unknown_said["message"].replace(
            "pump-404", "X"
        )
        assert said["details"] == {**unknown_said["details"], "device_id": "pump-1"}
        # Naming the owner does not help a non-admin either.
        named = await client.get(
            BASELINE.format("pump-1"), params={"owner": alice.owner}, headers=carol.headers
        )
        assert named.status_code == 404
        own = await client.get(
            BASELINE.format("pump-1"), params={"owner": alice.owner}, headers=alice.headers
        )
        assert own.status_code == 200


async def test_members_of_a_tenant_share_their_devices(database: dict[str, Any]) -> None:
    async with running_app(config(database)) as (app, client):
        bob = await caller(app, "bob", tenant="acme")
        ben = await caller(app, "ben", tenant="acme")
        outsider = await caller(app, "olga")
        await stream(client, bob, "line-2", readings(REQUIRED))
        (scored,) = await stream(client, ben, "line-2", readings(1))
        assert scored["status"] == "scored"
        view = (await client.get(BASELINE.format("line-2"), headers=ben.headers)).json()
        assert view["owner"] == "tenant:acme"
        assert (
            await client.get(BASELINE.format("line-2"), headers=outsider.headers)
        ).status_code == 404
        me = (await client.get("/v1/users/me", headers=ben.headers)).json()
        assert me["device_owner"] == "tenant:acme"


async def test_an_admin_shares_a_device_and_takes_it_back(database: dict[str, Any]) -> None:
    async with running_app(config(database)) as (app, client):
        admin = await caller(app, "root", admin=True)
        alice, carol = await caller(app, "alice"), await caller(app, "carol")
        await stream(client, alice, "pump-1", readings(REQUIRED))
        share = f"/v1/admin/device-shares/{carol.owner}/pump-1"
        forbidden = await client.put(share, json={"owner": alice.owner}, headers=carol.headers)
        assert forbidden.status_code == 403
        put = await client.put(share, json={"owner": alice.owner}, headers=admin.headers)
        assert put.status_code == 200, put.text
        assert put.json() | {"created_at": None} == {
            "grantee": carol.owner,
            "device_id": "pump-1",
            "owner": alice.owner,
            "created_at": None,
        }
        # Carol now reads and streams Alice's pump-1 (it is calibrated: scored at once).
        got = await client.get(BASELINE.format("pump-1"), headers=carol.headers)
        assert got.status_code == 200 and got.json()["owner"] == alice.owner
        (scored,) = await stream(client, carol, "pump-1", readings(1))
        assert scored["status"] == "scored"
        listed = await client.get(
            "/v1/admin/device-shares", params={"owner": alice.owner}, headers=admin.headers
        )
        assert [s["grantee"] for s in listed.json()] == [carol.owner]
        assert (await client.delete(share, headers=admin.headers)).status_code == 204
        assert (await client.delete(share, headers=admin.headers)).status_code == 404
        gone = await client.get(BASELINE.format("pump-1"), headers=carol.headers)
        assert gone.status_code == 404
        # Sharing with a tenant works the same.
        tenant_share = "/v1/admin/device-shares/tenant:acme/pump-1"
        assert (
            await client.put(tenant_share, json={"owner": alice.owner}, headers=admin.headers)
        ).status_code == 200


async def test_share_errors(database: dict[str, Any]) -> None:
    async with running_app(config(database)) as (app, client):
        admin = await caller(app, "root", admin=True)
        alice, carol = await caller(app, "alice"), await caller(app, "carol")
        h = admin.headers
        base = "/v1/admin/device-shares"
        for grantee, device, body in (
            ("bob", "pump-1", {"owner": alice.owner}),  # not an owner string
            ("user:x", "pump-1", {"owner": alice.owner}),
            (carol.owner, "pump 1", {"owner": alice.owner}),
            (carol.owner, "pump-1", {"owner": "tenant:ACME"}),
            (carol.owner, "pump-1", {"owner": alice.owner + "\n"}),
            (carol.owner, "pump-1", {"owner": carol.owner}),  # with itself
            (carol.owner, "pump-1", {}),
            (carol.owner, "pump-1", {"owner": alice.owner, "extra": 1}),
        ):
            response = await client.put(f"{base}/{grantee}/{device}", json=body, headers=h)
            assert response.status_code == 422, (grantee, device, body, response.text)
        # No chains: a device that is itself shared is shared from its real owner.
        ok = await client.put(
            f"{base}/{carol.owner}/pump-1", json={"owner": alice.owner}, headers=h
        )
        assert ok.status_code == 200
        chain = await client.put(
            f"{base}/tenant:acme/pump-1", json={"owner": carol.owner}, headers=h
        )
        assert chain.status_code == 409
        onward = await client.put(
            f"{base}/{alice.owner}/pump-1", json={"owner": "tenant:acme"}, headers=h
        )
        assert onward.status_code == 409
        big = await client.delete(f"{base}/user:{2**64}/pump-1", headers=h)
        assert big.status_code in (404, 422)


async def test_admins_manage_any_owners_baseline(database: dict[str, Any]) -> None:
    async with running_app(config(database)) as (app, client):
        admin = await caller(app, "root", admin=True)
        alice = await caller(app, "alice")
        stats = {
            name: {"mean": float(m), "std": float(s)}
            for name, m, s in zip(SENSORS, POINT, SPREAD, strict=True)
        }
        url = BASELINE.format("pump-5")
        owner = {"owner": alice.owner}
        put = await client.put(url, params=owner, json={"baseline": stats}, headers=admin.headers)
        assert put.status_code == 200 and put.json()["owner"] == alice.owner
        (scored,) = await stream(client, alice, "pump-5", readings(1))
        assert scored["status"] == "scored"
        # Without ?owner= an admin works on its own devices.
        assert (await client.get(url, headers=admin.headers)).status_code == 404
        assert (await client.get(url, params=owner, headers=admin.headers)).status_code == 200
        bad = await client.get(url, params={"owner": "somebody"}, headers=admin.headers)
        assert bad.status_code == 422
        deleted = await client.delete(url, params=owner, headers=admin.headers)
        assert deleted.status_code == 204
        assert (await client.get(url, headers=alice.headers)).status_code == 404


async def test_anonymous_callers_cannot_use_device_ids(database: dict[str, Any]) -> None:
    async with running_app(config(database, anonymous=True)) as (_, client):
        reading = readings(1)[0]
        for path, body in (
            ("/v1/models/iot/predict", {"features": reading, "device_id": "p1"}),
            ("/v1/models/iot/predict/batch", {"instances": [reading], "device_id": "p1"}),
            ("/predict", {"sensor_data": reading, "device_id": "p1"}),
            ("/predict/batch", {"readings": [reading], "device_id": "p1"}),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 401, (path, response.text)
            assert "device" in response.json()["error"]["message"]
        assert (await client.get(BASELINE.format("p1"))).status_code == 401
        # Without device_id anonymous prediction is unchanged.
        assert (await client.post("/predict", json={"sensor_data": reading})).status_code == 200
        assert (await client.get("/v1/users/me")).json()["device_owner"] is None


async def test_tenants_through_the_admin_api(database: dict[str, Any]) -> None:
    async with running_app(config(database)) as (app, client):
        admin = await caller(app, "root", admin=True)
        h = admin.headers
        created = await client.post(
            "/v1/admin/users", json={"username": "tina", "tenant": "acme-ops"}, headers=h
        )
        assert created.status_code == 201 and created.json()["tenant"] == "acme-ops"
        path = f"/v1/admin/users/{created.json()['id']}"
        assert (await client.patch(path, json={"tier": "pro"}, headers=h)).json()["tenant"]
        cleared = await client.patch(path, json={"tenant": None}, headers=h)
        assert cleared.json()["tenant"] is None
        for tenant in ("ACME", "a b", "", "x" * 65, "-lead", "acme\n"):
            bad = await client.patch(path, json={"tenant": tenant}, headers=h)
            assert bad.status_code == 422, tenant
            assert bad.json()["error"]["details"][0]["field"] == "tenant"


@pytest.mark.parametrize("shape", ["v1", "seed"])
async def test_a_users_keys_and_tokens_are_one_owner(database: dict[str, Any], shape: str) -> None:
    async with running_app(config(database)) as (app, client):
        accounts = app.state.mlgate.accounts
        user = await accounts.create_user(
            "dana", password="dana's long password", scopes=["predict"]
        )
        keys = [{"X-API-Key": (await accounts.create_key(user.id, name=n)).plaintext} for n in "ab"]
        token = (
            await client.post(
                "/v1/token", data={"username": "dana", "password": "dana's long password"}
            )
        ).json()["access_token"]
        credentials = [*keys, {"Authorization": f"Bearer {token}"}]
        seen = []
        for i, row in enumerate(readings(3)):
            if shape == "v1":
                response = await client.post(
                    "/v1/models/iot/predict",
                    json={"features": row, "device_id": "d"},
                    headers=credentials[i],
                )
            else:
                response = await client.post(
                    "/predict",
                    json={"sensor_data": row, "model_name": "autoencoder", "device_id": "d"},
                    headers=credentials[i],
                )
            assert response.status_code == 200, response.text
            seen.append(response.json()["calibration"]["seen"])
        assert seen == [1, 2, 3]
