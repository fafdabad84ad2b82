"""Dependency aliases so that routes read one line per dependency.

The getters are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in a
worker thread, a hop that costs more than the attribute lookup it does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security

from mlgate.api.security import get_principal, require_scope
from mlgate.api.state import AppState
from mlgate.audit.service import AuditService
from mlgate.auth.accounts import Accounts
from mlgate.auth.principal import Principal
from mlgate.auth.scopes import ADMIN, FEEDBACK, MODELS_READ, PREDICT
from mlgate.auth.service import AuthService
from mlgate.dataplane import DataPlane
from mlgate.devices.scoring import DeviceScorer
from mlgate.registry.registry import ModelRegistry


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.mlgate
    return state


async def get_dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.mlgate.dataplane
    return dataplane


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.mlgate.registry
    return registry


async def get_devices(request: Request) -> DeviceScorer:
    devices: DeviceScorer = request.app.state.mlgate.devices
    return devices


StateDep = Annotated[AppState, Depends(get_state)]
DevicesDep = Annotated[DeviceScorer, Depends(get_devices)]
DataPlaneDep = Annotated[DataPlane, Depends(get_dataplane)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def get_accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.mlgate.accounts
    return accounts


async def get_auth(request: Request) -> AuthService:
    auth: AuthService = request.app.state.mlgate.auth
    return auth


async def get_audit(request: Request) -> AuditService:
    audit: AuditService = request.app.state.mlgate.audit
    return audit


AccountsDep = Annotated[Accounts, Depends(get_accounts)]
AuthDep = Annotated[AuthService, Depends(get_auth)]
AuditDep = Annotated[AuditService, Depends(get_audit)]
PrincipalDep = Annotated[Principal, Security(get_principal)]
"""The caller, whatever its scopes (the route checks nothing more)."""

# Router-level guards: ``APIRouter(dependencies=[RequirePredict])``.
# The scopes also show in the OpenAPI document, per operation.
RequirePredict = Security(require_scope(PREDICT), scopes=[PREDICT])
InferencePredict = Security(require_scope(PREDICT, charge=False), scopes=[PREDICT])
"""The ``predict`` guard of inference routes: the request is charged with its rows."""
RequireModelsRead = Security(require_scope(MODELS_READ), scopes=[MODELS_READ])
RequireFeedback = Security(require_scope(FEEDBACK), scopes=[FEEDBACK])
RequireAdmin = Security(require_scope(ADMIN), scopes=[ADMIN])
