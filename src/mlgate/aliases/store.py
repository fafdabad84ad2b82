"""Aliases moved through the admin API: stored in the database, applied by every worker.

``model_aliases`` holds the current overrides (they win over model.yaml; ``latest``
stays computed and cannot be moved); ``alias_moves`` records every move and removal:
who, when, from which version to which. Each worker's :class:`AliasSync` reads the
overrides at start (before the models load, so a restart keeps them) and then every
``poll_interval_s`` seconds, and applies them to its registry; the worker that moved an
alias applies it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import datetime
from typing import Any

import anyio.to_thread
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mlgate.auth.principal import Principal
from mlgate.db.models import AliasMoveRow, ModelAliasRow, utcnow
from mlgate.errors import ValidationFailed
from mlgate.registry.manifest import ALIAS_PATTERN
from mlgate.registry.registry import LATEST, ModelRegistry

log = logging.getLogger("mlgate.aliases")

_ALIAS = re.compile(ALIAS_PATTERN)


def check_alias(alias: Any) -> str:
    """The alias name, or a 422 (``latest`` is computed and cannot be moved)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias):
        raise ValidationFailed(
            f"alias must match {ALIAS_PATTERN}",
            details=[{"field": "alias", "message": "invalid alias name"}],
        )
    if alias == LATEST:
        raise ValidationFailed(
            "'latest' is computed (the highest loaded version); it cannot be moved",
            details=[{"field": "alias", "message": "latest cannot be moved"}],
        )
    return alias


def _move_view(row: AliasMoveRow) -> dict[str, Any]:
    return {
        "model": row.model,
        "alias": row.alias,
        "from_version": row.from_version,
        "to_version": row.to_version,
        "moved_by": row.moved_by,
        "principal": row.principal,
        "moved_at": row.moved_at.isoformat(),
    }


class AliasStore:
    """Reads and writes moved aliases and their history."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def overrides(self) -> dict[str, dict[str, str]]:
        """model -> alias -> version, for every moved alias."""
        async with self.sessions() as session:
            rows = (await session.execute(select(ModelAliasRow))).scalars().all()
        result: dict[str, dict[str, str]] = {}
        for row in rows:
            result.setdefault(row.model, {})[row.alias] = row.version
        return result

    async def move(
        self, model: str, alias: str, version: str | None, previous: str | None, who: Principal
    ) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (None: remove the override) and record it."""
        now: datetime = utcnow()
        async with self.sessions.begin() as session:
            existing = await session.get(ModelAliasRow, (model, alias))
            if version is None:
                if existing is not None:
                    await session.execute(
                        delete(ModelAliasRow).where(
                            ModelAliasRow.model == model, ModelAliasRow.alias == alias
                        )
                    )
            elif existing is None:
                session.add(
                    ModelAliasRow(
                        model=model,
                        alias=alias,
                        version=version,
                        moved_by=who.subject,
                        moved_at=now,
                    )
                )
            else:
                existing.version = version
                existing.moved_by = who.subject
                existing.moved_at = now
            move = AliasMoveRow(
                model=model,
                alias=alias,
                from_version=previous,
                to_version=version,
                moved_by=who.subject,
                principal=who.log_id if who.kind != "anonymous" else "anonymous",
                moved_at=now,
            )
            session.add(move)
        return _move_view(move)

    async def history(self, model: str, limit: int = 100) -> list[dict[str, Any]]:
        """The latest moves of ``model``'s aliases, newest first."""
        async with self.sessions() as session:
            rows = (
                (
                    await session.execute(
                        select(AliasMoveRow)
                        .where(AliasMoveRow.model == model)
                        .order_by(AliasMoveRow.id.desc())
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        return [_move_view(row) for row in rows]


class AliasSync:
    """Applies the stored overrides to one worker's registry, now and periodically."""

    def __init__(self, store: AliasStore, registry: ModelRegistry, interval_s: float) -> None:
        self.store = store
        self.registry = registry
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._applied: dict[str, dict[str, str]] | None = None
        self.failures = 0

    async def apply(self) -> bool:
        """Read the overrides and apply them; False when the database did not answer."""
        try:
            overrides = await self.store.overrides()
        except Exception:
            self.failures += 1
            log.warning("moved aliases could not be read; keeping the current ones", exc_info=True)
            return False
        if overrides == self._applied:
            return True
        # In a thread: the registry's lock may be held by a reload that takes seconds.
        if await anyio.to_thread.run_sync(self.registry.set_alias_overrides, overrides):
            log.info("moved aliases applied", extra={"aliases": overrides})
        self._applied = overrides
        return True

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._run(), name="alias-sync")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.apply()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
