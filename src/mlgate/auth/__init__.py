"""Authentication and authorization: principals, scopes, passwords, tokens and API keys.

Only the light, dependency-free parts are re-exported here (settings import them); the
services live in :mod:`mlgate.auth.service` and :mod:`mlgate.auth.accounts`.
"""

from __future__ import annotations

from mlgate.auth.principal import Principal, PrincipalKind
from mlgate.auth.scopes import ADMIN, FEEDBACK, MODELS_READ, PREDICT, SCOPES

__all__ = [
    "ADMIN",
    "FEEDBACK",
    "MODELS_READ",
    "PREDICT",
    "SCOPES",
    "Principal",
    "PrincipalKind",
]
