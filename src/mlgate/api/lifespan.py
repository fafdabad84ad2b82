"""The composition root: builds the database, auth, registry and services; owns tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.api.limits import EdgeLimits
from mlgate.api.signals import build_signals, wire
from mlgate.api.state import AppState
from mlgate.audit.service import AuditService
from mlgate.auth.accounts import Accounts
from mlgate.auth.bootstrap import announce_key, bootstrap_admin
from mlgate.auth.passwords import Passwords
from mlgate.auth.principal_cache import PrincipalCache, account_changes
from mlgate.auth.service import AuthService
from mlgate.auth.signing import load_signing_keys
from mlgate.auth.tokens import TokenCodec
from mlgate.dataplane import DataPlane
from mlgate.dataplane.runner import Runner, RunnerPolicy
from mlgate.db.engine import build_engine, session_factory
from mlgate.db.migrate import check_schema, upgrade
from mlgate.devices.detector_store import DetectorStore
from mlgate.devices.scoring import DeviceScorer
from mlgate.devices.store import BaselineStore
from mlgate.devices.windows import ReadingWindows
from mlgate.observability.instrument import Instrumentation
from mlgate.ratelimit import build_rate_limiter
from mlgate.registry.registry import ModelRegistry, ReloadReport
from mlgate.server.heap import return_large_blocks, settle, unfreeze
from mlgate.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("mlgate.lifespan")


def build_state(settings: Settings, engine: AsyncEngine) -> AppState:
    """Everything a running app needs, built from settings (nothing loaded yet)."""
    registry = ModelRegistry(
        settings.models.resolved_repository,
        default_model=settings.models.default_model,
        inline_threshold_us=settings.models.inline_threshold_us,
        follow_symlinks=settings.models.follow_symlinks,
        load_options=settings.models.load_options(),
    )
    devices = DeviceScorer(
        BaselineStore(
            engine,
            required=settings.devices.baseline_readings,
            cache_ttl_s=settings.devices.cache_ttl_s,
        ),
        ReadingWindows(settings.devices.max_windows),
        DetectorStore(engine),
    )
    models = settings.models
    runner = Runner(
        RunnerPolicy(
            batching=models.batching,
            max_batch_size=models.batching_max_batch_size,
            max_delay_s=models.batching_max_delay_ms / 1000,
            max_queue=models.max_queue,
            timeout_s=models.prediction_timeout_s,
            inline_threshold_us=models.inline_threshold_us,
        )
    )
    registry.add_listener(runner)
    dataplane = DataPlane(
        registry, max_batch_rows=models.max_batch_rows, runner=runner, devices=devices
    )
    sessions = session_factory(engine)
    signals = build_signals(settings, engine, sessions, registry)
    wire(signals, dataplane)
    passwords = Passwords(settings.auth)
    tokens = TokenCodec(settings.auth, load_signing_keys(settings))
    limiter = build_rate_limiter(settings.rate_limit, settings.redis_url)
    principals = PrincipalCache(
        settings.auth.principal_cache_ttl_s, settings.auth.principal_cache_max_entries
    )
    changes = account_changes(settings.redis_url)
    changes.subscribe(principals.clear)
    audit = AuditService(settings.audit, engine)
    audit.attach(registry, dataplane)
    return AppState(
        settings=settings,
        registry=registry,
        dataplane=dataplane,
        engine=engine,
        auth=AuthService(settings.auth, engine, sessions, passwords, tokens, principals),
        accounts=Accounts(
            settings.auth,
            sessions,
            passwords,
            # The limiter owns the meaning of overrides: refuse bad ones when stored.
            check_overrides=settings.rate_limit.check_overrides,
            on_change=changes.publish,
        ),
        account_changes=changes,
        limiter=limiter,
        limits=EdgeLimits(limiter, settings.rate_limit),
        devices=devices,
        signals=signals,
        audit=audit,
    )


def trace_steps(state: AppState, tracer: Tracer) -> None:
    """Hand the tracer to every part that opens a span for a step of a request."""
    state.tracer = tracer
    state.limits.tracer = tracer
    state.dataplane.tracer = tracer
    state.dataplane.runner.tracer = tracer
    if state.audit is not None and state.audit.log is not None:
        state.audit.log.tracer = tracer


async def prepare_database(state: AppState) -> None:
    """Migrate (unless disabled) and, on a first embedded start, create the admin."""
    settings = state.settings
    if settings.database.auto_migrate:
        await upgrade(state.engine, schema=settings.database.schema_name)
    else:
        await check_schema(state.engine)  # never run on a newer mlgate's schema
    if settings.bootstrap_admin_enabled:
        key = await bootstrap_admin(state.accounts, tier=settings.auth.tiers[-1])
        if key is not None:
            announce_key(key, "admin")


async def reload_repository(state: AppState) -> ReloadReport:
    """Rescan and load the repository in a worker thread, then settle the heap
    (:mod:`mlgate.server.heap`: the loaded models leave the garbage collector's work)."""
    report = await anyio.to_thread.run_sync(state.registry.reload)
    if state.settings.server.gc_freeze:
        # The replaced versions' cycles become collectable, the new ones are frozen.
        unfreeze()
        settle()
    return report


async def load_models(state: AppState) -> None:
    """Load the repository once; a failure is kept for readiness and logged."""
    try:
        report = await reload_repository(state)
    except Exception as exc:
        state.load_error = f"model repository failed to load: {exc}"
        log.error(state.load_error)
        return
    state.load_error = None
    if report.failed:
        log.warning("some model versions failed to load", extra={"failed": report.failed})


async def watch_repository(state: AppState, interval: float) -> None:
    """Reload when the repository changes on disk (so every worker follows a deploy)."""
    registry = state.registry
    while True:
        await asyncio.sleep(interval)
        try:
            current = await anyio.to_thread.run_sync(registry.scan_fingerprint)
            if registry.loaded_once and current != registry.repository_fingerprint:
                log.info("model repository changed on disk, reloading")
                await load_models(state)
        except Exception:
            log.exception("repository watch failed; retrying")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.server.malloc_mmap_threshold:
        return_large_blocks(settings.server.malloc_mmap_threshold)
    engine = build_engine(settings)
    try:
        state = build_state(settings, engine)
        await prepare_database(state)
    except BaseException:
        await engine.dispose()
        raise
    app.state.mlgate = state
    metrics = getattr(app.state, "metrics", None)
    if metrics is not None:  # before the models load: their failures are counted
        state.instrumentation = Instrumentation(metrics, state)
    tracing = getattr(app.state, "tracing", None)
    if tracing is not None:
        trace_steps(state, tracing.tracer)
    state.dataplane.runner.attach(asyncio.get_running_loop())
    # Aliases moved through the admin API, before the models load: a restart keeps them.
    await state.signals.alias_sync.apply()
    state.signals.start(asyncio.get_running_loop())
    if settings.rate_limit.backend == "redis" and not await state.limiter.check():
        log.warning("Redis is not answering at start; rate limits are degraded until it does")
    tasks: list[asyncio.Task[None]] = [asyncio.create_task(state.account_changes.listen())]
    if settings.models.load_in_background:
        tasks.append(asyncio.create_task(load_models(state)))
    else:
        await load_models(state)
    if settings.models.watch_interval_s > 0:
        tasks.append(asyncio.create_task(watch_repository(state, settings.models.watch_interval_s)))
    if state.audit is not None:
        state.audit.start()
    if state.instrumentation is not None:
        state.instrumentation.start()
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await state.signals.close()
        await state.dataplane.runner.close()
        await state.account_changes.close()
        if state.audit is not None:
            await state.audit.close()  # after the last request: writes what is queued
        await state.limiter.close()
        if state.instrumentation is not None:
            await state.instrumentation.close()
        if tracing is not None:
            await anyio.to_thread.run_sync(tracing.flush)
        await engine.dispose()
