"""The servers the bench runs, in order. Add a configuration here; nothing else changes.

A configuration names its kind of server, the workloads it gets, and (for mlgate) its
settings:

- ``env``: settings always applied;
- ``features``: production features applied only when this mlgate has their settings
  (``mlgate config`` lists them), so audit and metrics switch on by themselves the day
  they land; the table says which were on;
- ``requires``: settings the configuration is about; when this mlgate lacks any of them
  the configuration is skipped with a message (batching, until it exists).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

Kind = Literal["ceiling", "mlserver", "mlgate"]


def _frozen(**items: str) -> Mapping[str, str]:
    return MappingProxyType(dict(items))


@dataclass(frozen=True)
class ServerConfig:
    """One server process and what is measured on it."""

    key: str
    label: str
    kind: Kind
    workloads: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    features: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    requires: Mapping[str, str] = field(default_factory=dict)
    redis: bool = False
    """Needs Redis (MLGATE_REDIS_URL and a key prefix of the run are added)."""


# Every production feature that exists today: production mode, API-key auth (the
# bench's key is sent on every request), rate limits in memory, the access log.
PRODUCTION = _frozen(
    MLGATE_ENV="production",
    MLGATE_RATE_LIMIT__ENABLED="true",
    MLGATE_RATE_LIMIT__BACKEND="memory",
    MLGATE_OBSERVABILITY__ACCESS_LOG="true",
)

# Switched on when this mlgate has the setting (issue 9: "audit + metrics once they
# exist"). If they land under other names, fix the names here.
OPTIONAL_FEATURES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "audit": _frozen(MLGATE_AUDIT__ENABLED="true"),
        "metrics": _frozen(MLGATE_METRICS__ENABLED="true"),
    }
)

# Adaptive batching for every model (MLGATE_MODELS__BATCHING, with its defaults for
# batch size and delay); configurations (c) compare it on and off.
BATCHING_SETTING = "MLGATE_MODELS__BATCHING"

CONFIGS: tuple[ServerConfig, ...] = (
    ServerConfig(
        "ceiling",
        "bare Starlette + uvicorn, fixed reply (ceiling)",
        "ceiling",
        ("W1", "W2-json", "W2-bin"),
    ),
    ServerConfig(
        "mlserver",
        "MLServer 1.7.1, sklearn runtime, parallel_workers 0",
        "mlserver",
        ("W1", "W2-json"),
    ),
    ServerConfig(
        "mlgate",
        "mlgate (a): API key, memory rate limits, access log",
        "mlgate",
        ("W1", "W2-json", "W2-bin"),
        env=PRODUCTION,
        features=OPTIONAL_FEATURES,
    ),
    ServerConfig(
        "mlgate-redis",
        "mlgate (b): the same, Redis rate limits",
        "mlgate",
        ("W1", "W2-json"),
        env={**PRODUCTION, "MLGATE_RATE_LIMIT__BACKEND": "redis"},
        features=OPTIONAL_FEATURES,
        redis=True,
    ),
    ServerConfig(
        "mlgate-no-obs",
        "mlgate (d): (a) without metrics and access log",
        "mlgate",
        ("W1",),
        # The cost of observability on W1: (a) against this, tracing off in both.
        env={**PRODUCTION, "MLGATE_OBSERVABILITY__ACCESS_LOG": "false"},
        features=MappingProxyType({"audit": OPTIONAL_FEATURES["audit"]}),
        requires=_frozen(MLGATE_METRICS__ENABLED="false"),
    ),
    ServerConfig(
        "mlgate-audit-wait",
        "mlgate (e): (a) recording every answered row (audit when_full: wait)",
        "mlgate",
        ("W2-json", "W2-bin"),
        # What batch traffic costs when the audit log may drop nothing.
        env=PRODUCTION,
        features=OPTIONAL_FEATURES,
        requires=_frozen(MLGATE_AUDIT__WHEN_FULL="wait"),
    ),
    ServerConfig(
        "mlgate-batch-off",
        "mlgate (c): (a) with batching off",
        "mlgate",
        ("W1-c64",),
        env=PRODUCTION,
        features=OPTIONAL_FEATURES,
        requires=_frozen(**{BATCHING_SETTING: "false"}),
    ),
    ServerConfig(
        "mlgate-batch-on",
        "mlgate (c): (a) with batching on",
        "mlgate",
        ("W1-c64",),
        env=PRODUCTION,
        features=OPTIONAL_FEATURES,
        requires=_frozen(**{BATCHING_SETTING: "true"}),
    ),
)


def config_by_key() -> dict[str, ServerConfig]:
    return {c.key: c for c in CONFIGS}


def resolve_settings(
    config: ServerConfig, known: set[str]
) -> tuple[dict[str, str], list[str], list[str], list[str]]:
    """The MLGATE_* settings to apply given the settings this mlgate ``known``s.

    Returns (settings, features on, features missing, required settings missing); a
    configuration with required settings missing is not run.
    """
    settings = dict(config.env)
    on, missing = [], []
    for feature, values in config.features.items():
        if all(name in known for name in values):
            settings.update(values)
            on.append(feature)
        else:
            missing.append(feature)
    absent = [name for name in config.requires if name not in known]
    settings.update(config.requires)
    return settings, on, missing, absent
