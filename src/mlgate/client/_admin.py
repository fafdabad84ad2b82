"""The calls of the admin API (users, API keys) and of feedback: what each sends,
whether it may be repeated, how its answer is read. Mixed into the core."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from mlgate.client._effects import Call, Flow, url_path
from mlgate.client._exceptions import InputError
from mlgate.client._models import ApiKey, Feedback, User


class AdminCalls:
    """Users, API keys and feedback; needs the core's :meth:`call`."""

    if TYPE_CHECKING:

        def call(self, call: Call[Any]) -> Flow[Any]: ...

    # -- feedback -----------------------------------------------------------------------

    def feedback(
        self,
        prediction_id: str,
        *,
        label: str | int | None = None,
        is_anomaly: bool | None = None,
    ) -> Flow[Feedback]:
        """Ground truth for one prediction: ``label`` (class name or index) for a
        classifier, ``is_anomaly`` for an anomaly model. Idempotent: a second label
        replaces the first, so it is retried like a prediction."""
        if (label is None) == (is_anomaly is None):
            raise InputError("give label (classifiers) or is_anomaly (anomaly models)")
        body: dict[str, Any] = {"label": label} if label is not None else {"is_anomaly": is_anomaly}
        return self.call(
            Call(
                "POST",
                url_path("v1", "predictions", prediction_id, "feedback"),
                lambda r: Feedback.from_json(prediction_id, r.json() if r.content else {}),
                True,
                json=body,
            )
        )

    # -- administration -----------------------------------------------------------------

    def create_user(
        self,
        username: str,
        *,
        password: str | None = None,
        scopes: Sequence[str] = (),
        tier: str | None = None,
        disabled: bool = False,
        rate_limit_overrides: Mapping[str, float] | None = None,
    ) -> Flow[User]:
        """Not retried on 429/503: a repeat could meet the user it created (409)."""
        body = _drop_none(
            {
                "username": username,
                "password": password,
                "scopes": list(scopes),
                "tier": tier,
                "disabled": disabled,
                "rate_limit_overrides": dict(rate_limit_overrides)
                if rate_limit_overrides
                else None,
            }
        )
        return self.call(Call("POST", "/v1/admin/users", _user, False, json=body))

    def list_users(self, *, limit: int = 100, offset: int = 0) -> Flow[list[User]]:
        return self.call(
            Call(
                "GET",
                "/v1/admin/users",
                lambda r: [User.from_json(u) for u in r.json()],
                True,
                params={"limit": str(limit), "offset": str(offset)},
            )
        )

    def get_user(self, user_id: int) -> Flow[User]:
        return self.call(Call("GET", url_path("v1", "admin", "users", str(user_id)), _user, True))

    def update_user(self, user_id: int, **changes: Any) -> Flow[User]:
        """Set fields (``tier``, ``scopes``, ``disabled``, ``password``,
        ``rate_limit_overrides``); setting values twice is the same as once."""
        return self.call(
            Call("PATCH", url_path("v1", "admin", "users", str(user_id)), _user, True, json=changes)
        )

    def create_key(
        self,
        name: str,
        *,
        user_id: int | None = None,
        username: str | None = None,
        scopes: Sequence[str] | None = None,
        tier: str | None = None,
        expires_at: str | None = None,
        rate_limit_overrides: Mapping[str, float] | None = None,
    ) -> Flow[ApiKey]:
        """A new API key (its secret is in ``ApiKey.key``, this once). Not retried on
        429/503: a repeat would create a second key."""
        if (user_id is None) == (username is None):
            raise InputError("give the key's owner as user_id or username")
        body = _drop_none(
            {
                "name": name,
                "user_id": user_id,
                "username": username,
                "scopes": list(scopes) if scopes is not None else None,
                "tier": tier,
                "expires_at": expires_at,
                "rate_limit_overrides": dict(rate_limit_overrides)
                if rate_limit_overrides
                else None,
            }
        )
        return self.call(Call("POST", "/v1/admin/api-keys", _key, False, json=body))

    def list_keys(self, *, user_id: int | None = None) -> Flow[list[ApiKey]]:
        return self.call(
            Call(
                "GET",
                "/v1/admin/api-keys",
                lambda r: [ApiKey.from_json(k) for k in r.json()],
                True,
                params={"user_id": str(user_id)} if user_id is not None else None,
            )
        )

    def get_key(self, key_id: int) -> Flow[ApiKey]:
        return self.call(Call("GET", url_path("v1", "admin", "api-keys", str(key_id)), _key, True))

    def update_key(self, key_id: int, **changes: Any) -> Flow[ApiKey]:
        return self.call(
            Call(
                "PATCH", url_path("v1", "admin", "api-keys", str(key_id)), _key, True, json=changes
            )
        )

    def revoke_key(self, key_id: int) -> Flow[ApiKey]:
        """Revoking twice changes nothing, so it is retried like a read."""
        return self.call(
            Call("DELETE", url_path("v1", "admin", "api-keys", str(key_id)), _key, True)
        )


def _user(response: httpx.Response) -> User:
    return User.from_json(response.json())


def _key(response: httpx.Response) -> ApiKey:
    return ApiKey.from_json(response.json())


def _drop_none(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}
