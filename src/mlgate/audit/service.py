"""The audit package as the composition root builds it: one object holding the audit
log, feedback, the version catalog, retention and usage, and their background tasks."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.audit.catalog import VersionCatalog
from mlgate.audit.feedback import FeedbackService
from mlgate.audit.retention import Pruner
from mlgate.audit.settings import AuditSettings
from mlgate.audit.sink import SqlAuditSink
from mlgate.audit.usage import UsageMeter
from mlgate.audit.writer import AuditLog
from mlgate.dataplane import DataPlane
from mlgate.registry.registry import ModelRegistry


class AuditService:
    """Audit log, feedback, retention and usage of one worker."""

    def __init__(self, settings: AuditSettings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self.catalog = VersionCatalog()
        self.log: AuditLog | None = None
        self.feedback: FeedbackService | None = None
        if settings.enabled:
            self.log = AuditLog(settings, SqlAuditSink(engine), self.catalog.class_names)
            self.feedback = FeedbackService(
                engine, self.log, self.catalog, flush_interval_s=settings.flush_interval_s
            )
        self.pruner = Pruner(
            engine,
            retention_days=settings.retention_days,
            batch=settings.prune_batch,
            interval_s=settings.prune_interval_s,
        )
        self.usage = UsageMeter(engine, flush_interval_s=settings.usage_flush_interval_s)
        self._tasks: list[asyncio.Task[None]] = []

    def attach(self, registry: ModelRegistry, dataplane: DataPlane) -> None:
        """Hear of model versions and of every answered request."""
        registry.add_listener(self.catalog)
        if self.log is not None:
            dataplane.add_observer(self.log)
            if self.settings.when_full == "wait":
                dataplane.admission = self.log.admit
        dataplane.add_observer(self.usage)

    def start(self) -> None:
        """Start the background writers and the pruner (inside the running loop)."""
        self._tasks.append(asyncio.create_task(self.usage.run(), name="mlgate-usage"))
        if self.log is not None:
            self._tasks.append(asyncio.create_task(self.log.run(), name="mlgate-audit"))
        if self.pruner.enabled:  # also when recording is off: old records still expire
            self._tasks.append(asyncio.create_task(self.pruner.run(), name="mlgate-retention"))

    async def close(self) -> None:
        """Stop the tasks, then write what is still queued (graceful shutdown)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.log is not None:
            await self.log.close()
        await self.usage.close()
