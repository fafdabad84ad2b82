"""What the deployment tests share: where the files are, the metric names mlgate
exports, and the tools that are installed here (or required under CI=true)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

import pytest

from mlgate.settings import Settings, settings_rows

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

_METRIC = re.compile(r"\bmlgate_[a-z0-9_]+\b")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def exported_metrics() -> set[str]:
    """The metric names mlgate exports (tests/deploy/metric_names.txt)."""
    lines = (Path(__file__).parent / "metric_names.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def metrics_in(promql: str) -> set[str]:
    """The mlgate metric families a PromQL expression reads (``_bucket`` and the other
    histogram series count as their family)."""
    names = set()
    for name in _METRIC.findall(promql):
        for suffix in _HISTOGRAM_SERIES:
            if name.endswith(suffix) and name.removesuffix(suffix) in exported_metrics():
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def required_tool(name: str, install: str) -> str:
    """The path of an installed program; skip without it, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed ({install})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return path


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a server started with ``env`` would run with; the values a deployment
    takes from its secrets (``${...}`` in compose, secretKeyRef in Kubernetes) are filled
    with stand-ins."""
    for key in [k for k in os.environ if k.startswith("MLGATE_")]:
        monkeypatch.delenv(key)
    stand_ins = {
        "MLGATE_DATABASE_URL": "postgresql://mlgate:stand-in@postgres:5432/mlgate",
        "MLGATE_REDIS_URL": "redis://redis:6379/0",
        "MLGATE_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
    }
    for key, value in {**stand_ins, **env}.items():
        monkeypatch.setenv(key, stand_ins[key] if "${" in value else value)
    return Settings()


def known_variables() -> set[str]:
    """Every MLGATE_* variable mlgate reads."""
    return {env for env, _default, _meaning in settings_rows()}
