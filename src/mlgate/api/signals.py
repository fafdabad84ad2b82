"""The signals around the data plane, built and run by the lifespan: the prediction
cache (a step), shadow versions (a hand-off), drift histograms and detection sinks
(observers), and aliases moved through the admin API."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mlgate.aliases.store import AliasStore, AliasSync
from mlgate.cache.backends import CacheBackend, MemoryCache
from mlgate.cache.step import PredictionCache
from mlgate.dataplane import DataPlane
from mlgate.drift.observer import DriftObserver
from mlgate.drift.store import DriftStore
from mlgate.registry.registry import ModelRegistry
from mlgate.settings import Settings
from mlgate.shadow.scorer import ShadowScorer
from mlgate.sinks.delivery import DeliveryQueue
from mlgate.sinks.dispatcher import DetectionDispatcher
from mlgate.sinks.targets import EcsFileSink, Sink, WebhookSink


@dataclass
class Signals:
    """The components; each may be absent when turned off."""

    cache: PredictionCache
    drift_store: DriftStore
    drift: DriftObserver | None
    shadow: ShadowScorer | None
    detections: DetectionDispatcher | None
    aliases: AliasStore
    alias_sync: AliasSync
    settings: Settings

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the background tasks (in the running loop)."""
        self.cache.attach(loop)
        if self.drift is not None:
            self.drift.start()
        if self.shadow is not None:
            self.shadow.start()
        if self.detections is not None:
            for queue in self.detections.queues:
                queue.start()
        self.alias_sync.start()

    async def close(self) -> None:
        """Stop the tasks: flush drift counts, give queued detections a last chance."""
        await self.alias_sync.close()
        if self.shadow is not None:
            await self.shadow.close()
        if self.detections is not None:
            timeout = self.settings.sinks.shutdown_timeout_s
            for queue in self.detections.queues:
                await queue.close(timeout)
        if self.drift is not None:
            await self.drift.close()
        await self.cache.close()

    def stats(self) -> dict[str, Any]:
        """Per-worker counters (``GET /v1/admin/signals``)."""
        return {
            "cache": self.cache.stats(),
            "drift": self.drift.stats() if self.drift is not None else None,
            "shadow": self.shadow.stats() if self.shadow is not None else None,
            "detections": self.detections.stats() if self.detections is not None else None,
            "aliases": {
                "poll_interval_s": self.alias_sync.interval_s,
                "read_failures": self.alias_sync.failures,
            },
        }


def _cache_backend(settings: Settings) -> CacheBackend:
    cache = settings.cache
    if cache.backend == "redis":
        assert settings.redis_url is not None  # the settings refuse it otherwise
        from mlgate.cache.redis_backend import RedisCache

        return RedisCache.from_url(
            settings.redis_url,
            prefix=cache.redis_key_prefix,
            timeout=cache.redis_timeout_s,
            retry_interval=cache.outage_retry_s,
        )
    return MemoryCache(cache.max_entries)


def _sinks(settings: Settings) -> list[Sink]:
    config = settings.sinks
    sinks: list[Sink] = []
    if config.webhook_url is not None and config.webhook_secret is not None:
        secret = config.webhook_secret.get_secret_value().encode()
        sinks.append(WebhookSink(config.webhook_url, secret, config.webhook_timeout_s))
    if config.ecs_file is not None:
        sinks.append(EcsFileSink(config.ecs_file))
    return sinks


def build_signals(
    settings: Settings,
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    registry: ModelRegistry,
) -> Signals:
    """Everything but the wiring into the data plane (see :func:`wire`)."""
    cache = PredictionCache(_cache_backend(settings), settings.cache, registry)
    registry.add_listener(cache)
    drift_store = DriftStore(engine)
    drift = DriftObserver(registry, drift_store, settings.drift) if settings.drift.enabled else None
    sinks = _sinks(settings)
    config = settings.sinks
    detections = None
    if sinks:
        queues = [
            DeliveryQueue(
                sink,
                max_queue=config.max_queue,
                batch_size=config.webhook_batch_size if sink.name == "webhook" else 500,
                retry_initial_s=config.retry_initial_s,
                retry_max_s=config.retry_max_s,
            )
            for sink in sinks
        ]
        detections = DetectionDispatcher(registry, dict(config.rules), queues)
    aliases = AliasStore(sessions)
    return Signals(
        cache=cache,
        drift_store=drift_store,
        drift=drift,
        shadow=None,
        detections=detections,
        aliases=aliases,
        alias_sync=AliasSync(aliases, registry, settings.aliases.poll_interval_s),
        settings=settings,
    )


def wire(signals: Signals, dataplane: DataPlane) -> None:
    """The cache step and shadow hand-off into the data plane; observers onto it."""
    dataplane.cache = signals.cache
    if signals.settings.shadow.enabled:
        signals.shadow = ShadowScorer(dataplane.registry, signals.settings.shadow, dataplane.notify)
        dataplane.shadow = signals.shadow
    if signals.drift is not None:
        dataplane.add_observer(signals.drift)
    if signals.detections is not None:
        dataplane.add_observer(signals.detections)
