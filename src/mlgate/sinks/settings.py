"""Detection sinks configuration (``MLGATE_SINKS__*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from mlgate.registry.manifest import DetectionSpec

MIN_WEBHOOK_SECRET_BYTES = 32


class SinkSettings(BaseModel):
    """Where detections go (a signed webhook, an ECS JSON-lines file) and which do."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    rules: dict[str, DetectionSpec] = Field(default_factory=dict)
    """Detection rules by model, e.g. `{"ids": {"min_confidence": 0.9}, "iot": {}}`; a
    model's `detections:` in model.yaml applies when it has none here."""
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    """POST detections here (JSON, signed with HMAC-SHA256); unset: no webhook."""
    webhook_secret: SecretStr | None = None
    """Shared secret of the webhook signature, at least 32 bytes; required with a URL."""
    webhook_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """A webhook delivery that takes longer failed (and is retried)."""
    webhook_batch_size: int = Field(default=20, ge=1, le=10_000)
    """Most detections in one webhook POST."""
    ecs_file: Path | None = None
    """Append detections to this file as JSON lines with Elastic Common Schema field
    names (for Filebeat or Logstash); unset: no file."""
    max_queue: int = Field(default=10_000, ge=1, le=10_000_000)
    """Detections waiting per sink and worker; more are dropped and counted."""
    retry_initial_s: float = Field(default=0.5, gt=0, le=3600)
    """First wait after a failed delivery; it doubles after each failure."""
    retry_max_s: float = Field(default=60.0, gt=0, le=86400)
    """Longest wait between two delivery attempts."""
    shutdown_timeout_s: float = Field(default=5.0, ge=0, le=600)
    """At shutdown, how long queued detections may still be delivered (the rest are
    dropped and counted)."""

    @model_validator(mode="after")
    def _secret_with_url(self) -> Self:
        if self.webhook_url is None:
            return self
        if self.webhook_secret is None:
            raise ValueError("MLGATE_SINKS__WEBHOOK_URL needs MLGATE_SINKS__WEBHOOK_SECRET")
        if len(self.webhook_secret.get_secret_value().encode()) < MIN_WEBHOOK_SECRET_BYTES:
            raise ValueError(
                f"MLGATE_SINKS__WEBHOOK_SECRET must be at least {MIN_WEBHOOK_SECRET_BYTES} bytes"
            )
        return self
