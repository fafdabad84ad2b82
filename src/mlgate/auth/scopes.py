"""Scopes: what a principal may do. ``admin`` implies every other scope."""

from __future__ import annotations

from collections.abc import Iterable

PREDICT = "predict"
MODELS_READ = "models:read"
FEEDBACK = "feedback"
METRICS_READ = "metrics:read"
ADMIN = "admin"

SCOPES: dict[str, str] = {
    PREDICT: "Score instances with a model",
    MODELS_READ: "List models and read their information",
    FEEDBACK: "Send ground-truth feedback on predictions",
    METRICS_READ: "Scrape the Prometheus metrics",
    ADMIN: "Manage users, API keys and models (implies every other scope)",
}


def parse_scopes(value: str | Iterable[str]) -> frozenset[str]:
    """Scopes from a space-separated string (the OAuth2 ``scope`` form) or a list."""
    items = value.split() if isinstance(value, str) else value
    return frozenset(s for s in items if s)


def unknown_scopes(scopes: Iterable[str]) -> list[str]:
    """The names in ``scopes`` that are not scopes, sorted."""
    return sorted(set(scopes) - SCOPES.keys())


def grants(held: Iterable[str], scope: str) -> bool:
    """Whether holding ``held`` allows ``scope``."""
    held = set(held)
    return scope in held or ADMIN in held


def narrow(requested: Iterable[str], allowed: Iterable[str]) -> frozenset[str]:
    """The requested scopes that ``allowed`` grants (a token or key never exceeds its user)."""
    allowed = frozenset(allowed)
    return frozenset(s for s in requested if grants(allowed, s))


def format_scopes(scopes: Iterable[str]) -> str:
    """Space-separated, in a stable order (the JWT ``scope`` claim)."""
    return " ".join(sorted(scopes))
