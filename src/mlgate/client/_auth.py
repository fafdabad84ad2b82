"""Credentials: an API key, or a username and password exchanged for access tokens.

Sans-IO: this module decides which header a request carries and when a token must be
fetched; the client shells do the fetching (one at a time, under a lock).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

ENV_URL = "MLGATE_URL"
ENV_API_KEY = "MLGATE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True, slots=True)
class Token:
    """An access token and when (on the client's monotonic clock) to replace it."""

    value: str
    expires_at: float
    refresh_at: float
    scope: str


class Credentials:
    """What the client authenticates with, and the current access token if any.

    A token is replaced ``refresh_margin_s`` before it expires (at most halfway through
    its life), so that a request never leaves with a token that expires on the way.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        refresh_margin_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if api_key is not None and username is not None:
            raise ValueError("give an API key or a username and password, not both")
        self.api_key = api_key
        self.username = username
        self.password = password
        self.refresh_margin_s = refresh_margin_s
        self.clock = clock
        self.token: Token | None = None

    @classmethod
    def resolve(
        cls,
        api_key: str | None,
        username: str | None,
        password: str | None,
        **options: object,
    ) -> Credentials:
        """Explicit credentials, else ``MLGATE_API_KEY`` from the environment, else none."""
        if api_key is None and username is None:
            api_key = os.environ.get(ENV_API_KEY) or None
        return cls(api_key=api_key, username=username, password=password, **options)  # type: ignore[arg-type]

    @property
    def uses_tokens(self) -> bool:
        return self.username is not None

    def needs_token(self) -> bool:
        """Password credentials without a token, or with one due for replacement."""
        if not self.uses_tokens:
            return False
        return self.token is None or self.clock() >= self.token.refresh_at

    def headers(self) -> dict[str, str]:
        """The authentication header of the next request (none when anonymous)."""
        if self.api_key is not None:
            return {"X-API-Key": self.api_key}
        if self.token is not None:
            return {"Authorization": f"Bearer {self.token.value}"}
        return {}

    def token_form(self) -> dict[str, str]:
        """The OAuth2 password grant's form fields."""
        assert self.username is not None and self.password is not None
        return {"grant_type": "password", "username": self.username, "password": self.password}

    def accept(self, body: dict[str, object], sent_at: float) -> Token:
        """Keep the token of a ``POST /v1/token`` answer (lifetime counted from the send)."""
        value = body.get("access_token")
        expires_in = body.get("expires_in")
        if not isinstance(value, str) or not isinstance(expires_in, int | float):
            raise ValueError("the token response lacks access_token or expires_in")
        lifetime = float(expires_in)
        margin = min(self.refresh_margin_s, lifetime / 2)
        self.token = Token(
            value, sent_at + lifetime, sent_at + lifetime - margin, str(body.get("scope", ""))
        )
        return self.token

    def forget(self, value: str | None) -> None:
        """Drop the token ``value`` the server refused (unless already replaced)."""
        if self.token is not None and self.token.value == value:
            self.token = None


def resolve_url(base_url: str | None) -> str:
    """The server's URL: the argument, else ``MLGATE_URL``, else the local default."""
    url = base_url or os.environ.get(ENV_URL) or DEFAULT_URL
    return url.rstrip("/")
