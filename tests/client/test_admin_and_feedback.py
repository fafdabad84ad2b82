"""Admin helpers (users and API keys) against the real admin API, and feedback.

Feedback (``POST /v1/predictions/{id}/feedback``) is being built on another branch: the
stub test below drives the client against a stand-in route with the documented shape;
``test_feedback_against_the_server`` runs once the real route is served (it skips
until then). Replace the stub test when the real route has landed.
"""

from __future__ import annotations

import httpx
import pytest
from tests.client.conftest import BASE_URL, InProcessServer, Recorder

from mlgate.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    NotFound,
    PermissionDenied,
    ValidationError,
)


def test_users_and_keys(client: Client, recorder: Recorder) -> None:
    admin = client.admin
    user = admin.create_user("dave", scopes=["predict"], tier="pro", password="a-long-password")
    assert user.username == "dave" and user.tier == "pro" and user.has_password
    assert "dave" in [u.username for u in admin.list_users()]
    key = admin.create_key("dave-service", username="dave")
    assert key.key is not None and key.status == "active" and key.username == "dave"
    assert "key" not in key.raw, "the secret is kept only in ApiKey.key"
    assert admin.get_key(key.id).key is None  # never shown again
    assert [k.id for k in admin.list_keys(user_id=user.id)] == [key.id]
    with Client(BASE_URL, api_key=key.key, transport=recorder) as dave:
        assert dave.predict("ids", [0.0] * 77).prediction_id
        with pytest.raises(PermissionDenied):
            dave.admin.list_users()
        admin.update_key(key.id, name="renamed")
        assert admin.get_key(key.id).name == "renamed"
        assert admin.update_user(user.id, tier="free").tier == "free"
        revoked = admin.revoke_key(key.id)
        assert revoked.status == "revoked" and revoked.revoked_at
        with pytest.raises(AuthenticationError):
            dave.predict("ids", [0.0] * 77)
    assert admin.disable_user(user.id).disabled
    with pytest.raises(NotFound):
        admin.get_user(999_999)
    with pytest.raises(ValidationError) as caught:
        admin.create_user("erin", scopes=["no-such-scope"])
    assert caught.value.status_code == 422


async def test_the_async_admin_does_the_same(aclient: AsyncClient) -> None:
    user = await aclient.admin.create_user("frank", scopes=["models:read"])
    key = await aclient.admin.create_key("frank-key", user_id=user.id)
    assert (await aclient.admin.get_user(user.id)).username == "frank"
    assert (await aclient.admin.revoke_key(key.id)).status == "revoked"
    assert (await aclient.admin.disable_user(user.id)).disabled


# -- feedback -------------------------------------------------------------------------


async def test_feedback_against_the_server(server: InProcessServer, recorder: Recorder) -> None:
    async with AsyncClient(BASE_URL, api_key=server.admin_key, transport=recorder) as c:
        flow = await c.predict("ids", [0.0] * 77)
        answer = await c.feedback(flow.prediction_id, label="BENIGN")
        assert answer.prediction_id == flow.prediction_id
        # A second label replaces the first (by class index this time).
        await c.feedback(flow.prediction_id, label=3)
        reading = await c.predict("iot", [60.0, 0.2, 0.5, 125.0, 2.5])
        await c.feedback(reading.prediction_id, is_anomaly=False)
        with pytest.raises(NotFound):
            await c.feedback("01JD7X0000000000000000000A-0", label="BENIGN")
        async with httpx.AsyncClient(transport=recorder, base_url=BASE_URL) as raw:
            stored = await raw.get(
                f"/v1/predictions/{flow.prediction_id}", headers={"X-API-Key": server.admin_key}
            )
    assert stored.status_code == 200, stored.text
    classes = await _classes(server)
    assert stored.json()["feedback"]["label"] == classes[3]


async def _classes(server: InProcessServer) -> list[str]:
    return list(server.app.state.mlgate.registry.resolve("ids").manifest.classes)
