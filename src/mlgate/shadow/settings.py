"""Shadow (challenger) versions configuration (``MLGATE_SHADOW__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mlgate.registry.manifest import ALIAS_PATTERN


class ShadowSettings(BaseModel):
    """Scoring every request again with a model's shadow version, off the request path."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    enabled: bool = True
    """Score requests with the version the model's shadow alias names (when it has one)."""
    alias: str = Field(default="shadow", pattern=ALIAS_PATTERN)
    """The alias that names a model's shadow version (in model.yaml `aliases:` or moved
    with `POST /v1/admin/models/{model}/aliases`)."""
    max_queue: int = Field(default=1000, ge=1, le=1_000_000)
    """Requests waiting for their shadow scoring, per worker; more are dropped and counted."""
    concurrency: int = Field(default=1, ge=1, le=64)
    """Shadow model calls running at once per worker (each in a thread of its own)."""
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A shadow call slower than this is given up (counted; its thread finishes unseen)."""
