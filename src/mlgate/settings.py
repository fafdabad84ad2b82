"""All configuration in one pydantic-settings root (env prefix ``MLGATE_``).

Nested sections are set with a double underscore: ``MLGATE_MODELS__DEFAULT_MODEL=iot``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Environment = Literal["development", "test", "production"]


def bundled_repository() -> Path:
    """The model repository shipped inside the package."""
    return Path(__file__).resolve().parent / "bundled_models"


class ServerSettings(BaseModel):
    """How `mlgate serve` listens and what HTTP it accepts."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    host: str = "127.0.0.1"
    """Interface to bind; use 0.0.0.0 in a container."""
    port: int = Field(default=8000, ge=1, le=65535)
    """TCP port."""
    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes (each loads the models)."""
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger bodies get 413."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS; empty disables CORS."""
    root_path: str = ""
    """Path prefix when served behind a proxy that strips it."""


class ModelSettings(BaseModel):
    """Where models come from and how they are served."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    repository: Path | None = None
    """Model repository directory; unset means the bundled models."""
    default_model: str = "ids"
    """Model used by routes that do not name one (seed `/predict` with `features`)."""
    max_batch_rows: int = Field(default=1000, ge=1, le=100_000)
    """Most instances one batch request may carry."""
    inline_threshold_us: float = Field(default=150.0, ge=0)
    """Models whose single-row call measured faster than this run on the event loop;
    slower ones run in a worker thread so they never stall other requests."""
    watch_interval_s: float = Field(default=0.0, ge=0)
    """Poll the repository for changes this often and reload (0 = only on request).
    Use it with several workers: an admin reload reaches only the worker that serves it."""
    load_in_background: bool = True
    """Start answering liveness at once and load models in the background
    (readiness stays 503 until they are loaded)."""
    iot_detectors: dict[str, str] = Field(
        default_factory=lambda: {
            "isolation_forest": "iot-isolation-forest",
            "lof": "iot-lof",
            "autoencoder": "iot-autoencoder",
        }
    )
    """Seed IoT client `model_name` values and the registry models they select."""
    iot_default_model: str = "iot"
    """Model for IoT seed requests that name no `model_name`."""

    @property
    def resolved_repository(self) -> Path:
        return self.repository if self.repository is not None else bundled_repository()


class ObservabilitySettings(BaseModel):
    """Logging."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of mlgate and uvicorn."""
    json_logs: bool = True
    """One JSON object per log line (False: human-readable lines)."""
    access_log: bool = False
    """Log every request line (uvicorn access log)."""


class Settings(BaseSettings):
    """The root of mlgate's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MLGATE_",
        env_nested_delimiter="__",
        env_file=None,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    env: Environment = "development"
    """development, test or production (production refuses unsafe settings)."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """HTTP server."""
    models: ModelSettings = Field(default_factory=ModelSettings)
    """Model repository and serving."""
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    """Logs."""

    @field_validator("env", mode="before")
    @classmethod
    def _lower_env(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def settings_rows() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) for every setting, for docs and `mlgate config`."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            env = f"{prefix}{name.upper()}"
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{env}__")
                continue
            default = field.get_default(call_default_factory=True)
            shown = (
                "(bundled models)" if name == "repository" and default is None else repr(default)
            )
            rows.append((env, shown, (field.description or "").replace("\n", " ")))

    walk(Settings, "MLGATE_")
    return rows
