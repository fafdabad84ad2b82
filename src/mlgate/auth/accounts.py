"""Managing users and API keys: what the admin API and the CLI call."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mlgate.auth.api_keys import generate_key
from mlgate.auth.passwords import Passwords
from mlgate.auth.principal_cache import ChangeHook, no_change
from mlgate.auth.scopes import ADMIN, narrow, unknown_scopes
from mlgate.db.models import ApiKey, User, storable_id
from mlgate.errors import Conflict, NotFound, ValidationFailed
from mlgate.settings import AuthSettings

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.@+-]{0,63}$")
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# Marks "leave unchanged" in updates where None is a meaningful new value.
UNSET: Any = object()

OverridesCheck = Callable[[Mapping[str, Any]], object]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key row and its plaintext, which exists only in this object."""

    key: ApiKey
    plaintext: str
    username: str


def normalize_username(username: str) -> str:
    """Usernames are case-insensitive: stored and looked up in lower case."""
    return username.strip().lower()


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


class Accounts:
    """Creates, lists, updates users and keys; every change is one transaction."""

    def __init__(
        self,
        settings: AuthSettings,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        *,
        check_overrides: OverridesCheck | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        """``check_overrides`` validates rate-limit overrides before they are stored (the
        rate limiter knows their meaning; auth keeps them opaque); it raises ValueError.
        ``on_change`` is awaited after every change that can narrow what a credential
        allows (so caches of verified principals are cleared)."""
        self._settings = settings
        self._sessions = sessions
        self._passwords = passwords
        self._check_overrides_hook = check_overrides
        self._changed = on_change or no_change

    # -- validation ---------------------------------------------------------------------

    def _check_scopes(self, scopes: Iterable[str], field: str = "scopes") -> list[str]:
        scopes = list(dict.fromkeys(scopes))
        if unknown := unknown_scopes(scopes):
            raise _invalid(field, f"unknown scopes {unknown}")
        return sorted(scopes)

    def _check_tier(self, tier: str) -> str:
        if tier not in self._settings.tiers:
            raise _invalid("tier", f"unknown tier {tier!r}; use one of {self._settings.tiers}")
        return tier

    @staticmethod
    def _check_tenant(tenant: str | None) -> str | None:
        if tenant is not None and not TENANT_PATTERN.fullmatch(tenant):
            raise _invalid(
                "tenant",
                "use 1-64 lower-case letters, digits and . _ - (starting with one of "
                "the first two)",
            )
        return tenant

    def _check_overrides(self, value: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        for name, limit in value.items():
            if not isinstance(limit, int | float) or isinstance(limit, bool) or limit < 0:
                raise _invalid("rate_limit_overrides", f"{name} must be a number >= 0")
        if self._check_overrides_hook is not None:
            try:
                self._check_overrides_hook(value)
            except ValueError as exc:
                raise _invalid("rate_limit_overrides", str(exc).splitlines()[0]) from None
        return dict(value)

    # -- users --------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        *,
        password: str | None,
        scopes: Iterable[str] = (),
        tier: str | None = None,
        disabled: bool = False,
        rate_limit_overrides: Mapping[str, Any] | None = None,
        tenant: str | None = None,
    ) -> User:
        """A new user (409 if the name is taken); ``password=None``: API keys only.

        ``tenant`` puts the user in an admin-defined group whose members share device
        baselines (see :mod:`mlgate.devices.owners`)."""
        name = normalize_username(username)
        if not USERNAME_PATTERN.match(name):
            raise _invalid(
                "username", "use 1-64 letters, digits and . _ @ + - (starting with a letter/digit)"
            )
        user = User(
            username=name,
            password_hash=await self._passwords.hash(password) if password is not None else None,
            scopes=self._check_scopes(scopes),
            tier=self._check_tier(tier or self._settings.default_tier),
            disabled=disabled,
            rate_limit_overrides=self._check_overrides(rate_limit_overrides),
            tenant=self._check_tenant(tenant),
        )
        async with self._sessions() as session:
            session.add(user)
            try:
                await session.commit()
            except IntegrityError:
                raise Conflict(
                    f"user {name!r} already exists", details={"username": name}
                ) from None
        return user

    async def count_users(self) -> int:
        async with self._sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(User)) or 0)

    async def list_users(self, *, limit: int = 100, offset: int = 0) -> list[User]:
        async with self._sessions() as session:
            rows = await session.scalars(select(User).order_by(User.id).limit(limit).offset(offset))
            return list(rows)

    async def get_user(self, user_id: int) -> User:
        async with self._sessions() as session:
            user = await _user(session, user_id)
        if user is None:
            raise _no_user(user_id)
        return user

    async def find_user(self, username: str) -> User:
        """The user named ``username`` (404 if none)."""
        name = normalize_username(username)
        async with self._sessions() as session:
            user = await session.scalar(select(User).where(User.username == name))
        if user is None:
            raise NotFound(f"no user named {name!r}", details={"username": name})
        return user

    async def update_user(
        self,
        user_id: int,
        *,
        tier: str | None = None,
        scopes: Iterable[str] | None = None,
        disabled: bool | None = None,
        password: str | None = None,
        rate_limit_overrides: Mapping[str, Any] | None = UNSET,
        tenant: str | None = UNSET,
    ) -> User:
        """Change what is given; the rest stays (``tenant=None`` takes the user out of
        its tenant: it owns its own devices again)."""
        password_hash = await self._passwords.hash(password) if password is not None else None
        async with self._sessions() as session:
            user = await _user(session, user_id)
            if user is None:
                raise _no_user(user_id)
            if tier is not None:
                user.tier = self._check_tier(tier)
            if scopes is not None:
                user.scopes = self._check_scopes(scopes)
            if disabled is not None:
                user.disabled = disabled
            if password_hash is not None:
                user.password_hash = password_hash
                # Whoever held the old password may hold a token too: refuse them all.
                user.token_epoch += 1
            if rate_limit_overrides is not UNSET:
                user.rate_limit_overrides = self._check_overrides(rate_limit_overrides)
            if tenant is not UNSET:
                user.tenant = self._check_tenant(tenant)
            await session.commit()
        await self._changed()
        return user

    async def revoke_sessions(self, user_id: int) -> User:
        """Refuse every access token issued to the user so far (on every worker, at the
        next request: tokens are checked against the user's row). API keys stay."""
        async with self._sessions() as session:
            user = await _user(session, user_id)
            if user is None:
                raise _no_user(user_id)
            user.token_epoch += 1
            await session.commit()
        await self._changed()
        return user

    # -- API keys -----------------------------------------------------------------------

    async def create_key(
        self,
        user_id: int,
        *,
        name: str,
        scopes: Iterable[str] | None = None,
        tier: str | None = None,
        expires_at: datetime | None = None,
        rate_limit_overrides: Mapping[str, Any] | None = None,
    ) -> CreatedKey:
        """A new key for a user, with the user's scopes (or a subset) and tier by default."""
        name = _key_name(name)
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        async with self._sessions() as session:
            user = await _user(session, user_id)
            if user is None:
                raise _no_user(user_id)
            key_scopes = self._owner_subset(user, scopes)
            material = generate_key()
            key = ApiKey(
                prefix=material.prefix,
                key_hash=material.digest,
                name=name,
                user_id=user.id,
                scopes=key_scopes,
                tier=self._check_tier(tier or user.tier),
                expires_at=expires_at,
                rate_limit_overrides=self._check_overrides(rate_limit_overrides),
            )
            session.add(key)
            await session.commit()
        return CreatedKey(key=key, plaintext=material.plaintext, username=user.username)

    def _owner_subset(self, user: User, scopes: Iterable[str] | None) -> list[str]:
        if scopes is None:
            return list(user.scopes)
        wanted = self._check_scopes(scopes)
        if excess := sorted(set(wanted) - narrow(wanted, user.scopes)):
            raise _invalid(
                "scopes",
                f"user {user.username!r} does not have {excess}; a key cannot exceed its owner",
            )
        return wanted

    async def list_keys(self, *, user_id: int | None = None) -> list[tuple[ApiKey, str]]:
        """Keys with their owners' usernames, oldest first."""
        query = select(ApiKey, User.username).join(User).order_by(ApiKey.id)
        if user_id is not None:
            if not storable_id(user_id):
                return []
            query = query.where(ApiKey.user_id == user_id)
        async with self._sessions() as session:
            return [(key, username) for key, username in (await session.execute(query)).all()]

    async def get_key(self, key_id: int) -> tuple[ApiKey, str]:
        if not storable_id(key_id):
            raise _no_key(key_id)
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User.username).join(User).where(ApiKey.id == key_id)
                )
            ).first()
        if row is None:
            raise _no_key(key_id)
        return row[0], row[1]

    async def find_key(self, prefix: str) -> tuple[ApiKey, str]:
        """A key by its public prefix (what `mlgate keys list` shows)."""
        if prefix.startswith("mlg_"):
            prefix = prefix[4:].split("_", 1)[0]
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User.username).join(User).where(ApiKey.prefix == prefix)
                )
            ).first()
        if row is None:
            raise NotFound(f"no API key with prefix {prefix!r}", details={"prefix": prefix})
        return row[0], row[1]

    async def update_key(
        self,
        key_id: int,
        *,
        name: str | None = None,
        scopes: Iterable[str] | None = None,
        tier: str | None = None,
        expires_at: datetime | None = UNSET,
        rate_limit_overrides: Mapping[str, Any] | None = UNSET,
    ) -> tuple[ApiKey, str]:
        """Change what is given; a revoked key cannot change (409)."""
        if not storable_id(key_id):
            raise _no_key(key_id)
        async with self._sessions() as session:
            row = (
                await session.execute(select(ApiKey, User).join(User).where(ApiKey.id == key_id))
            ).first()
            if row is None:
                raise _no_key(key_id)
            key, user = row
            if key.revoked_at is not None:
                raise Conflict(f"API key {key_id} is revoked", details={"key_id": key_id})
            if name is not None:
                key.name = _key_name(name)
            if scopes is not None:
                key.scopes = self._owner_subset(user, scopes)
            if tier is not None:
                key.tier = self._check_tier(tier)
            if expires_at is not UNSET:
                key.expires_at = expires_at
            if rate_limit_overrides is not UNSET:
                key.rate_limit_overrides = self._check_overrides(rate_limit_overrides)
            await session.commit()
        await self._changed()
        return key, user.username

    async def revoke_key(self, key_id: int) -> tuple[ApiKey, str]:
        """Revoke at once for every worker (each request reads the row); idempotent."""
        if not storable_id(key_id):
            raise _no_key(key_id)
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User.username).join(User).where(ApiKey.id == key_id)
                )
            ).first()
            if row is None:
                raise _no_key(key_id)
            key, username = row
            if key.revoked_at is None:
                key.revoked_at = datetime.now(UTC)
                await session.commit()
        await self._changed()
        return key, username

    @staticmethod
    def is_admin(user: User) -> bool:
        return ADMIN in user.scopes


async def _user(session: AsyncSession, user_id: int) -> User | None:
    """The user with this id, or None (also for ids no row can have)."""
    return await session.get(User, user_id) if storable_id(user_id) else None


def _shown_id(value: int) -> int | str:
    # JSON encoders stop at 64 bits: a longer id given by a client is echoed as text.
    return value if storable_id(value) else str(value)


def _no_user(user_id: int) -> NotFound:
    return NotFound(f"no user with id {user_id}", details={"user_id": _shown_id(user_id)})


def _no_key(key_id: int) -> NotFound:
    return NotFound(f"no API key with id {key_id}", details={"key_id": _shown_id(key_id)})


def _key_name(name: str) -> str:
    """A key's name, trimmed (422 unless 1-100 printable characters: it is shown in
    listings and logs, and PostgreSQL refuses NUL characters)."""
    if not name.strip() or len(name) > 100 or not name.isprintable():
        raise _invalid("name", "give the key a name of 1-100 printable characters")
    return name.strip()
