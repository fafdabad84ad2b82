"""The composition root: builds the registry and services, owns background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI

from mlgate.api.state import AppState
from mlgate.inference.service import InferenceService
from mlgate.registry.registry import ModelRegistry
from mlgate.settings import Settings

log = logging.getLogger("mlgate.lifespan")


def build_state(settings: Settings) -> AppState:
    """Everything a running app needs, built from settings (nothing loaded yet)."""
    registry = ModelRegistry(
        settings.models.resolved_repository,
        default_model=settings.models.default_model,
        inline_threshold_us=settings.models.inline_threshold_us,
    )
    inference = InferenceService(registry, max_batch_rows=settings.models.max_batch_rows)
    return AppState(settings=settings, registry=registry, inference=inference)


async def load_models(state: AppState) -> None:
    """Load the repository once; a failure is kept for readiness and logged."""
    try:
        report = await anyio.to_thread.run_sync(state.registry.reload)
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
    state = build_state(settings)
    app.state.mlgate = state
    tasks: list[asyncio.Task[None]] = []
    if settings.models.load_in_background:
        tasks.append(asyncio.create_task(load_models(state)))
    else:
        await load_models(state)
    if settings.models.watch_interval_s > 0:
        tasks.append(asyncio.create_task(watch_repository(state, settings.models.watch_interval_s)))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
