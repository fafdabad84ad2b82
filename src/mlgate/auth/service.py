"""Authentication: who is calling (API key, access token or nobody), and password login.

Cost per request in the steady state: a dict lookup. A credential is verified against
the database once - an API key by one indexed query (key joined with its owner), a
token by its signature and (``check_user_on_token``) one primary-key query for its user
(disabled, narrowed scopes, revoked sessions: the user's token epoch) - and the
principal is then reused from the worker's :class:`~mlgate.auth.principal_cache.PrincipalCache`
for a bounded time. Account changes clear that cache (at once on every worker with
Redis, else within its TTL). A key's last-use time is written at most once per interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mlgate.auth.accounts import USERNAME_PATTERN, normalize_username
from mlgate.auth.api_keys import key_matches, key_prefix, looks_like_key
from mlgate.auth.passwords import Passwords
from mlgate.auth.principal import Principal, frozen_overrides
from mlgate.auth.principal_cache import PrincipalCache
from mlgate.auth.scopes import narrow, parse_scopes, unknown_scopes
from mlgate.auth.tokens import IssuedToken, TokenClaims, TokenCodec
from mlgate.db.models import ApiKey, User
from mlgate.errors import Forbidden, ServiceUnavailable, Unauthorized, ValidationFailed
from mlgate.settings import AuthSettings

log = logging.getLogger("mlgate.auth")

_CREDENTIALS_HINT = "send an X-API-Key header or Authorization: Bearer <token or key>"
_MAX_ANONYMOUS = 10_000


TOKEN_USER_COLUMNS = (
    User.username,
    User.disabled,
    User.scopes,
    User.tier,
    User.rate_limit_overrides,
    User.token_epoch,
    User.tenant,
)
"""What :func:`token_principal` needs of a token's user (one primary-key query)."""


class TokenUser(Protocol):
    """A row of :data:`TOKEN_USER_COLUMNS`."""

    username: str
    disabled: bool
    scopes: list[str]
    tier: str
    rate_limit_overrides: dict[str, Any] | None
    token_epoch: int
    tenant: str | None


def token_principal(claims: TokenClaims, user: TokenUser | None) -> Principal:
    """The principal of a verified access token, given its user as stored now.

    The one place that decides whether a token still holds against its user (gone,
    disabled, sessions revoked since it was issued, scopes narrowed): a per-worker cache
    of user rows can call it with a cached row and keep every rule.
    """
    if user is None or user.username != claims.username:
        raise Unauthorized("token subject no longer exists", invalid_token=True)
    if user.disabled:
        raise Forbidden(f"user {user.username!r} is disabled")
    if claims.epoch != user.token_epoch:
        # A password change or "revoke sessions" since the token was issued.
        raise Unauthorized("token has been revoked: log in again", invalid_token=True)
    return Principal(
        kind="user",
        subject=user.username,
        user_id=claims.user_id,
        scopes=narrow(claims.scopes, user.scopes),
        tier=user.tier,
        rate_limit_overrides=frozen_overrides(user.rate_limit_overrides),
        tenant=user.tenant,
    )


def _database_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "the authentication database is unavailable", headers={"Retry-After": "1"}
    )


class AuthService:
    """Turns credentials into a :class:`Principal` and passwords into access tokens."""

    def __init__(
        self,
        settings: AuthSettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        tokens: TokenCodec,
        cache: PrincipalCache | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._sessions = sessions
        self._passwords = passwords
        self.tokens = tokens
        self.cache = cache if cache is not None else PrincipalCache(0)
        self._verifying: dict[str, asyncio.Future[Principal]] = {}
        self._anonymous_principals: OrderedDict[str, Principal] = OrderedDict()

    # -- requests -----------------------------------------------------------------------

    async def authenticate(
        self, *, api_key: str | None, bearer: str | None, client_ip: str
    ) -> Principal:
        """The caller; an ``X-API-Key`` wins over ``Authorization`` when both are sent."""
        credential = api_key or bearer
        if not credential:
            if self._settings.anonymous_enabled:
                return self._anonymous(client_ip)
            raise Unauthorized(f"authentication required: {_CREDENTIALS_HINT}")
        cached = self.cache.get(credential)
        if cached is not None:
            return cached
        # Concurrent requests with a credential not yet verified wait for one check.
        pending = self._verifying.get(credential)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The request that was checking went away: check for this one.
        future = asyncio.get_running_loop().create_future()
        self._verifying[credential] = future
        try:
            principal = await self._verify(credential, by_key=bool(api_key))
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it, nobody else must
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(principal)
            return principal
        finally:
            if self._verifying.get(credential) is future:
                del self._verifying[credential]

    async def _verify(self, credential: str, *, by_key: bool) -> Principal:
        try:
            if by_key or looks_like_key(credential):
                principal, expires_at = await self._from_key(credential)
            else:
                principal, expires_at = await self._from_token(credential)
        except (SQLAlchemyError, OSError, TimeoutError):
            # OSError: a connection the driver could not open is not always wrapped.
            log.exception("authentication query failed")
            raise _database_down() from None
        self.cache.put(credential, principal, expires_at)
        return principal

    def _anonymous(self, client: str) -> Principal:
        """The anonymous principal of a client address (one object per address, so that
        what is derived from it - its rate-limit buckets - is worked out once)."""
        principal = self._anonymous_principals.get(client)
        if principal is None:
            principal = Principal(
                kind="anonymous",
                subject=client,
                scopes=frozenset(self._settings.anonymous_scopes),
                tier=self._settings.anonymous_tier,
            )
            self._anonymous_principals[client] = principal
            while len(self._anonymous_principals) > _MAX_ANONYMOUS:
                self._anonymous_principals.popitem(last=False)
        return principal

    async def _from_key(self, plaintext: str) -> tuple[Principal, float | None]:
        prefix = key_prefix(plaintext)
        if prefix is None:
            raise Unauthorized("malformed API key", invalid_token=True)
        query = (
            select(
                ApiKey.id,
                ApiKey.key_hash,
                ApiKey.scopes,
                ApiKey.rate_limit_overrides,
                ApiKey.expires_at,
                ApiKey.revoked_at,
                ApiKey.last_used_at,
                User.id.label("user_id"),
                User.username,
                User.disabled,
                User.scopes.label("user_scopes"),
                User.tier.label("user_tier"),
                User.rate_limit_overrides.label("user_overrides"),
                User.tenant,
            )
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.prefix == prefix)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or not key_matches(plaintext, row.key_hash):
            raise Unauthorized("invalid API key", invalid_token=True)
        now = datetime.now(UTC)
        if row.revoked_at is not None:
            raise Unauthorized("API key has been revoked", invalid_token=True)
        if row.expires_at is not None and row.expires_at <= now:
            raise Unauthorized("API key has expired", invalid_token=True)
        if row.disabled:
            raise Forbidden(f"user {row.username!r} is disabled")
        await self._touch(row.id, row.last_used_at, now)
        expires_at = row.expires_at.timestamp() if row.expires_at is not None else None
        return Principal(
            kind="api_key",
            subject=row.username,
            user_id=row.user_id,
            key_id=row.id,
            # A key never exceeds its owner, even after the owner loses a scope.
            scopes=narrow(row.scopes, row.user_scopes),
            # Limits are the account's; the key's own overrides only cap it further.
            tier=row.user_tier,
            rate_limit_overrides=frozen_overrides(row.user_overrides),
            key_rate_limit_overrides=(
                frozen_overrides(row.rate_limit_overrides) if row.rate_limit_overrides else None
            ),
            tenant=row.tenant,
        ), expires_at

    async def _touch(self, key_id: int, last_used_at: datetime | None, now: datetime) -> None:
        """Record the key's use, at most once per interval (the WHERE keeps workers from
        all writing at the same moment)."""
        interval = timedelta(seconds=self._settings.key_last_used_interval_s)
        if last_used_at is not None and now - last_used_at < interval:
            return
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == key_id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - interval),
                    )
                    .values(last_used_at=now)
                )
        except SQLAlchemyError:
            # Bookkeeping only: never fail a request because this write lost a lock race.
            log.warning("could not record API key use", extra={"key_id": key_id})

    async def _from_token(self, token: str) -> tuple[Principal, float | None]:
        claims = self.tokens.verify(token)
        if not self._settings.check_user_on_token:
            return Principal(
                kind="user",
                subject=claims.username,
                user_id=claims.user_id,
                scopes=claims.scopes,
                tier=claims.tier,
                tenant=claims.tenant,
            ), float(claims.expires_at)
        query = select(*TOKEN_USER_COLUMNS).where(User.id == claims.user_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return token_principal(claims, row), float(claims.expires_at)

    # -- login --------------------------------------------------------------------------

    async def login(self, username: str, password: str, scope: str = "") -> IssuedToken:
        """An access token for a correct password (the OAuth2 password grant).

        ``scope`` may ask for fewer scopes than the user has; never more.
        """
        requested = parse_scopes(scope)
        if unknown := unknown_scopes(requested):
            raise ValidationFailed(
                f"unknown scopes {unknown}", details=[{"field": "scope", "message": "unknown"}]
            )
        name = normalize_username(username)
        user = None
        # A name no user can have is not looked up (PostgreSQL refuses NUL characters in
        # a query's text, for one); it still costs the argon2 check below.
        if USERNAME_PATTERN.match(name):
            try:
                async with self._sessions() as session:
                    user = await session.scalar(select(User).where(User.username == name))
            except SQLAlchemyError:
                log.exception("login query failed")
                raise _database_down() from None
        stored = user.password_hash if user is not None else None
        # Always one argon2 verification, so timing does not reveal which usernames exist.
        if not await self._passwords.verify(stored, password) or user is None:
            raise Unauthorized("incorrect username or password")
        if user.disabled:
            raise Forbidden(f"user {user.username!r} is disabled")
        if stored is not None and self._passwords.needs_rehash(stored):
            await self._rehash(user.id, password)
        scopes = narrow(requested, user.scopes) if requested else frozenset(user.scopes)
        return self.tokens.issue(
            username=user.username,
            user_id=user.id,
            scopes=scopes,
            tier=user.tier,
            epoch=user.token_epoch,
            tenant=user.tenant,
        )

    async def _rehash(self, user_id: int, password: str) -> None:
        """Upgrade a hash made with older parameters, now that we know the password."""
        try:
            new_hash = await self._passwords.hash(password)
        except ValidationFailed:
            return  # set before today's length policy; it still verifies
        async with self._sessions() as session:
            await session.execute(
                update(User).where(User.id == user_id).values(password_hash=new_hash)
            )
            await session.commit()
