"""Dependency aliases so that routes read one line per dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlgate.api.state import AppState
from mlgate.inference.service import InferenceService
from mlgate.registry.registry import ModelRegistry


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.mlgate
    return state


def get_inference(request: Request) -> InferenceService:
    service: InferenceService = request.app.state.mlgate.inference
    return service


def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.mlgate.registry
    return registry


StateDep = Annotated[AppState, Depends(get_state)]
InferenceDep = Annotated[InferenceService, Depends(get_inference)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
