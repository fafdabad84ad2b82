"""What the lifespan builds and the routes use: one object per app."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from mlgate.api.limits import EdgeLimits
from mlgate.api.signals import Signals
from mlgate.audit.service import AuditService
from mlgate.auth.accounts import Accounts
from mlgate.auth.principal_cache import AccountChanges
from mlgate.auth.service import AuthService
from mlgate.dataplane import DataPlane
from mlgate.devices.scoring import DeviceScorer
from mlgate.observability.instrument import Instrumentation
from mlgate.ratelimit import RateLimiter
from mlgate.registry.registry import ModelRegistry
from mlgate.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


@dataclass
class AppState:
    """The composition root's products, handed to routes through dependencies."""

    settings: Settings
    registry: ModelRegistry
    dataplane: DataPlane
    engine: AsyncEngine
    auth: AuthService
    accounts: Accounts
    limiter: RateLimiter
    limits: EdgeLimits
    devices: DeviceScorer
    account_changes: AccountChanges
    signals: Signals
    started_monotonic: float = field(default_factory=time.monotonic)
    load_error: str | None = None
    audit: AuditService | None = None
    """Audit log, feedback, retention and usage (issue 10)."""
    instrumentation: Instrumentation | None = None
    """The metrics hooked onto the parts above (None: metrics off)."""
    tracer: Tracer | None = None
    """Opens the spans of request steps (None: tracing off)."""

    @property
    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_monotonic

    @property
    def ready(self) -> bool:
        return self.registry.loaded_once and any(e.versions for e in self.registry.models())
