"""Fixtures shared by the whole suite: settings, isolated apps, HTTP clients, repositories."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mlgate.api.app import create_app
from mlgate.settings import Settings, bundled_repository

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def make_settings(**overrides: Any) -> Settings:
    """Test settings: models load before the app answers; nothing read from env files."""
    models = {"load_in_background": False, **overrides.pop("models", {})}
    return Settings(env="test", models=models, **overrides)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app with its lifespan entered and a client talking to it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://mlgate.test") as client:
            yield app, client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app serving the bundled models with default settings."""
    async with running_app(make_settings()) as (_, c):
        yield c


@pytest.fixture
def app_factory() -> Callable[..., Any]:
    """``async with app_factory(**settings) as (app, client)`` for custom settings."""

    def factory(**overrides: Any) -> Any:
        return running_app(make_settings(**overrides))

    return factory


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    """A writable copy of the bundled model repository."""
    target = tmp_path / "models"
    shutil.copytree(bundled_repository(), target)
    return target
