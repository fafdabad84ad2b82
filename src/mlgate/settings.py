"""All configuration in one pydantic-settings root (env prefix ``MLGATE_``).

Nested sections are set with a double underscore: ``MLGATE_MODELS__DEFAULT_MODEL=iot``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import to_jsonable_python
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlgate.aliases.settings import AliasSettings
from mlgate.audit.settings import AuditSettings
from mlgate.auth.entropy import estimated_entropy_bits
from mlgate.auth.scopes import ADMIN, SCOPES
from mlgate.cache.settings import CacheSettings
from mlgate.drift.settings import DriftSettings
from mlgate.observability.settings import MetricsSettings, TracingSettings
from mlgate.ratelimit.settings import RateLimitSettings
from mlgate.shadow.settings import ShadowSettings
from mlgate.sinks.settings import SinkSettings

if TYPE_CHECKING:
    from mlgate.registry.runtimes import LoadOptions

Environment = Literal["development", "test", "production"]
JWTAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "EdDSA"]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./var/mlgate.db"
MIN_SECRET_BYTES = 32
# What a production JWT secret must hold at least, as estimated by
# mlgate.auth.entropy (random 32-byte secrets score about 190-300).
MIN_SECRET_BITS = 128
SECRET_HINT = "generate one with `mlgate secret`"
# Values copied from tutorials and .env examples; never accepted as a production secret.
_PLACEHOLDER_MARKERS = (
    "your-secret",
    "your_secret",
    "secret-key",
    "secret_key",
    "changeme",
    "change-me",
    "change_me",
    "change-in-production",
    "replace-me",
    "placeholder",
    "example",
    "insecure",
)


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
    max_header_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    """Largest request line plus headers; a longer one gets 431 before the app sees it
    (before authentication)."""
    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """Time a client has to send a request line and headers, from connecting (or from the
    first byte of a later request on a kept-alive connection); then 408 and the
    connection is closed. A new connection that sends nothing is closed after it."""
    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Time a client has to send a request body once its headers arrived; then 408 and
    the connection is closed (so uploads at a byte a second end). Raise it for large
    bodies over slow links."""
    keep_alive_timeout_s: float = Field(default=5.0, gt=0, le=3600)
    """An idle kept-alive connection is closed after this long."""
    max_connections: int = Field(default=1000, ge=1)
    """Open connections per worker; one more is answered 503 (with Retry-After) and
    closed."""
    max_discard_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """How much of a refused request (a body over the limit, a head too large) is read
    and dropped so that clients that send everything before reading get the error
    instead of a connection reset; beyond it the connection is cut."""
    shutdown_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """On SIGTERM, how long requests in flight may take to finish before they are
    cancelled; requests arriving meanwhile on open connections are answered with
    `Connection: close`."""
    gc_freeze: bool = True
    """After the models load (and after every reload), collect once and freeze what
    survived (`gc.freeze`), so that full garbage collections skip the models: without
    it each one stops the worker for ~0.2 s with the bundled models loaded."""
    malloc_mmap_threshold: int = Field(default=128 * 1024, ge=0, le=32 * 1024 * 1024)
    """Bytes from which glibc's malloc gives a block its own memory map, returned to the
    system when freed, kept fixed (large batches' buffers otherwise end up in a heap that
    never shrinks: ~90 MB more RSS after a batch load); 0 leaves glibc's adaptive
    threshold. Ignored off glibc."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed by CORS; empty disables CORS."""
    root_path: str = ""
    """Path prefix when served behind a proxy that strips it."""
    docs_enabled: bool | None = None
    """Serve /docs, /redoc and /openapi.json, without credentials (the API routes they
    describe still need them); unset: on, except in production."""


class ModelSettings(BaseModel):
    """Where models come from and how they are served."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    repository: Path | None = None
    """Model repository directory; unset means the bundled models."""
    follow_symlinks: bool = False
    """Load versions whose files or directories are symbolic links (a deliberate layout,
    e.g. versions linked from a shared store). Off: a link in the repository is a load
    error. An artifact path must stay inside its version directory either way."""
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
    twin_cache: bool = True
    """Keep the checked ONNX twins of scikit-learn classifiers, so that a restart serves a
    twin at once without loading scikit-learn (see `twin_cache_dir`)."""
    twin_cache_dir: Path | None = None
    """Where the twins are kept; unset: `$XDG_CACHE_HOME/mlgate/onnx-twins`
    (`~/.cache/mlgate/onnx-twins`). Keep it as trusted as the model repository: a twin
    found there is served once it reproduces the probabilities recorded with it."""
    manifest_cache: bool = True
    """Keep parsed manifests and model files as JSON, keyed by their content, so that a
    restart does not parse the YAML again (~0.2 s for the bundled models; see
    `manifest_cache_dir`)."""
    manifest_cache_dir: Path | None = None
    """Where parsed manifests are kept; unset: `$XDG_CACHE_HOME/mlgate/manifests`
    (`~/.cache/mlgate/manifests`). Keep it as trusted as the model repository."""
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
    batching: bool = False
    """Adaptive batching for every model whose manifest or model.yaml does not say: concurrent
    requests for one version share model calls (see the benchmark for when it pays)."""
    batching_max_batch_size: int = Field(default=32, ge=1, le=100_000)
    """Most rows one batched model call takes (default for models that do not say)."""
    batching_max_delay_ms: float = Field(default=2.0, ge=0, le=1000)
    """How long the first queued request waits for others to join its batch."""
    max_queue: int = Field(default=256, ge=1, le=1_000_000)
    """Requests that may wait for or run on one model version at once, per worker; more
    are shed at once with 503 and Retry-After."""
    prediction_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A prediction that takes longer is answered 504."""

    @property
    def resolved_repository(self) -> Path:
        return self.repository if self.repository is not None else bundled_repository()

    def load_options(self) -> LoadOptions:
        """What the registry and runtimes are told: where twins and parsed manifests are kept."""
        from mlgate.registry import twin_cache, yaml_cache
        from mlgate.registry.runtimes import LoadOptions

        return LoadOptions(
            twin_cache=twin_cache.TwinCache(self.twin_cache_dir or twin_cache.default_directory())
            if self.twin_cache
            else None,
            yaml_cache=yaml_cache.YamlCache(
                self.manifest_cache_dir or yaml_cache.default_directory()
            )
            if self.manifest_cache
            else None,
        )


class DatabaseSettings(BaseModel):
    """The database that holds users and API keys (its URL is `MLGATE_DATABASE_URL`)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    auto_migrate: bool = True
    """Apply pending migrations when the server starts (every worker may try: a lock makes
    it run once). Turn off to migrate only with `mlgate db upgrade`, e.g. from a deploy job."""
    schema_name: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    """PostgreSQL schema holding mlgate's tables (created if missing); unset: the
    server's search_path. Not used with SQLite."""
    pool_size: int = Field(default=5, ge=1, le=200)
    """Connections kept open per worker (PostgreSQL)."""
    max_overflow: int = Field(default=10, ge=0, le=200)
    """Extra connections a worker may open under load (PostgreSQL)."""
    pool_timeout_s: float = Field(default=10.0, gt=0)
    """Seconds to wait for a free connection before failing the request."""
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    """How long SQLite waits for another writer before giving up."""
    echo: bool = False
    """Log every SQL statement (debugging only)."""


class AuthSettings(BaseModel):
    """Users, tokens, API keys, scopes and tiers."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    jwt_algorithm: JWTAlgorithm = "HS256"
    """Signature algorithm of access tokens; the only one accepted. HS* use `jwt_secret`;
    RS*, ES256 and EdDSA use `jwt_private_key_file` (and `jwt_public_key_file`)."""
    jwt_secret: SecretStr | None = None
    """HMAC secret for HS* tokens, at least 32 random bytes (`mlgate secret` prints one);
    required in production, which refuses short, placeholder and patterned secrets. Unset
    in development: a random one is generated and kept in `jwt_secret_file`."""
    jwt_secret_file: Path | None = None
    """Where development keeps its generated secret (mode 0600); unset: `jwt_secret`
    beside the SQLite database, or ./var/jwt_secret."""
    jwt_private_key_file: Path | None = None
    """PEM private key that signs tokens (RS*, ES256, EdDSA)."""
    jwt_public_key_file: Path | None = None
    """PEM public key that verifies tokens; unset: derived from the private key."""
    jwt_issuer: str = "mlgate"
    """`iss` claim written and required."""
    jwt_audience: str = "mlgate-api"
    """`aud` claim written and required."""
    access_token_ttl_s: int = Field(default=1800, ge=60, le=7 * 24 * 3600)
    """Lifetime of an access token from `POST /v1/token`, in seconds."""
    jwt_leeway_s: float = Field(default=10.0, ge=0, le=300)
    """Clock skew tolerated when checking `exp` and `iat`, in seconds."""
    check_user_on_token: bool = True
    """Check a token's user (disabled, scopes, revoked sessions) when the token is verified
    (one indexed query, then cached like keys). False: tokens are stateless and stay valid
    until they expire."""
    principal_cache_ttl_s: float = Field(default=5.0, ge=0, le=3600)
    """How long a worker reuses a verified API key or token without asking the database.
    A revoked key, disabled user or narrowed scope reaches the worker that made the change
    at once, every worker at once with MLGATE_REDIS_URL (pub/sub), and otherwise within this
    time. 0: check the database on every request."""
    principal_cache_max_entries: int = Field(default=10_000, ge=1)
    """Most credentials a worker keeps verified (least recently used go first)."""
    tiers: list[str] = Field(default_factory=lambda: ["free", "pro", "enterprise"], min_length=1)
    """Tier names a user or key may have, least to most generous (the bootstrap admin gets
    the last); each needs limits in MLGATE_RATE_LIMIT__TIERS."""
    default_tier: str = "free"
    """Tier of new users that name none."""
    anonymous_enabled: bool = False
    """Serve callers without credentials as an anonymous principal identified by their
    IP address, IPv6 by network (rate limited per address; no device ids); off: they get
    401."""
    anonymous_tier: str = "free"
    """Tier of anonymous callers."""
    anonymous_scopes: list[str] = Field(default_factory=lambda: ["predict", "models:read"])
    """Scopes of anonymous callers (never `admin`)."""
    bootstrap_admin: bool | None = None
    """On first start with no users, create an `admin` user and API key and print the key
    once on stderr. Unset: on in development with SQLite, off otherwise; refused in
    production."""
    key_last_used_interval_s: float = Field(default=60.0, ge=0)
    """Record an API key's last use at most this often (saves a write per request)."""
    argon2_time_cost: int | None = Field(default=None, ge=1)
    """Argon2 iterations; unset: argon2-cffi's recommended default (RFC 9106)."""
    argon2_memory_cost_kib: int | None = Field(default=None, ge=8)
    """Argon2 memory in KiB; unset: argon2-cffi's recommended default."""
    argon2_parallelism: int | None = Field(default=None, ge=1)
    """Argon2 lanes; unset: argon2-cffi's recommended default."""

    @field_validator("anonymous_scopes")
    @classmethod
    def _known_anonymous_scopes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; use some of {list(SCOPES)}")
        if ADMIN in value:
            raise ValueError("anonymous callers may never have the admin scope")
        return value

    @model_validator(mode="after")
    def _known_tiers(self) -> Self:
        if len(set(self.tiers)) != len(self.tiers):
            raise ValueError(f"tiers must be unique, got {self.tiers}")
        for name in ("default_tier", "anonymous_tier"):
            if getattr(self, name) not in self.tiers:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {self.tiers}")
        return self

    @property
    def symmetric(self) -> bool:
        return self.jwt_algorithm.startswith("HS")


def secret_problem(secret: str) -> str | None:
    """Why a JWT secret is unfit for production, or None when it is fine."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        return f"it is shorter than {MIN_SECRET_BYTES} bytes"
    lowered = secret.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return "it is a placeholder copied from an example"
    if len(set(secret)) < 8:
        return "it repeats too few characters to be random"
    bits = estimated_entropy_bits(secret)
    if bits < MIN_SECRET_BITS:
        return (
            f"it follows a pattern (runs, repeats or keyboard rows): about {bits:.0f} bits of "
            f"randomness where {MIN_SECRET_BITS} are needed"
        )
    return None


def normalize_database_url(url: str) -> str:
    """Pin the async driver: ``postgresql://`` becomes ``postgresql+asyncpg://``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        # Not echoed: the value may hold a password.
        raise ValueError("database URL must look like scheme://user:password@host/db")
    scheme = {
        "postgres": "postgresql+asyncpg",
        "postgresql": "postgresql+asyncpg",
        "sqlite": "sqlite+aiosqlite",
    }.get(scheme, scheme)
    if scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise ValueError(
            f"unsupported database URL scheme {scheme!r}: use sqlite+aiosqlite:///path.db "
            "or postgresql://user:password@host/db"
        )
    return f"{scheme}://{rest}"


class ObservabilitySettings(BaseModel):
    """Logging (metrics: ``MLGATE_METRICS__*``)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of mlgate and uvicorn."""
    json_logs: bool | None = None
    """One JSON object per log line (False: human-readable lines); unset: JSON unless
    the server's stderr is a terminal."""
    access_log: bool = False
    """One access line per request (logger `mlgate.access`): request id, principal id,
    route template, status, latency, model, version, rows, cache, client IP."""


class DeviceSettings(BaseModel):
    """Per-device baselines of anomaly models (IoT)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    baseline_readings: int = Field(default=400, ge=2, le=100_000)
    """Readings of a new device that calibrate its baseline before it gets verdicts."""
    cache_ttl_s: float = Field(default=1.0, ge=0, le=60)
    """How long a worker reuses a finished baseline before re-reading it from the
    database: an upload or reset reaches every worker within this time."""
    max_windows: int = Field(default=10_000, ge=1)
    """Devices whose recent readings (the smoothing window) a worker keeps in memory."""


class Settings(BaseSettings):
    """The root of mlgate's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="MLGATE_",
        env_nested_delimiter="__",
        env_file=None,
        extra="ignore",
        use_attribute_docstrings=True,
        # Errors name the variable and the rule, never the value: a rejected value may be
        # a secret or a database URL with its password.
        hide_input_in_errors=True,
    )

    env: Environment = "development"
    """development, test or production (production refuses unsafe settings)."""
    database_url: str = DEFAULT_DATABASE_URL
    """Database of users, API keys and the audit log: a SQLite file (directory created)
    or PostgreSQL (`postgresql://user:password@host:5432/db`; the asyncpg driver is used)."""
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    """Database pool and migrations."""
    auth: AuthSettings = Field(default_factory=AuthSettings)
    """Authentication and authorization."""
    server: ServerSettings = Field(default_factory=ServerSettings)
    """HTTP server."""
    models: ModelSettings = Field(default_factory=ModelSettings)
    """Model repository and serving."""
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    """Redis shared by all workers and replicas (`redis://host:6379/0`); unset: in-process."""
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    """Rate limits per principal and per client IP."""
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    """Logs."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """Prometheus metrics."""
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    """OpenTelemetry traces."""
    devices: DeviceSettings = Field(default_factory=DeviceSettings)
    """Per-device baselines."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """The prediction cache."""
    drift: DriftSettings = Field(default_factory=DriftSettings)
    """Input drift against the training reference."""
    shadow: ShadowSettings = Field(default_factory=ShadowSettings)
    """Shadow (challenger) versions."""
    aliases: AliasSettings = Field(default_factory=AliasSettings)
    """Aliases moved through the admin API."""
    sinks: SinkSettings = Field(default_factory=SinkSettings)
    """Detections pushed to a webhook and an ECS JSON-lines file."""
    audit: AuditSettings = Field(default_factory=AuditSettings)
    """Prediction audit log, feedback, retention and usage counters."""

    @field_validator("env", mode="before")
    @classmethod
    def _lower_env(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @model_validator(mode="after")
    def _safe_in_production(self) -> Self:
        if self.env != "production":
            return self
        problems = []
        auth = self.auth
        if auth.symmetric:
            if auth.jwt_secret is None:
                problems.append(
                    "MLGATE_AUTH__JWT_SECRET is not set: set it to at least 32 random bytes "
                    f"({SECRET_HINT}), or sign with a key pair "
                    "(MLGATE_AUTH__JWT_ALGORITHM=EdDSA and MLGATE_AUTH__JWT_PRIVATE_KEY_FILE)"
                )
            elif (why := secret_problem(auth.jwt_secret.get_secret_value())) is not None:
                problems.append(
                    f"MLGATE_AUTH__JWT_SECRET is too weak ({why}): use at least 32 random "
                    f"bytes, {SECRET_HINT}"
                )
        elif auth.jwt_private_key_file is None:
            problems.append(
                f"MLGATE_AUTH__JWT_ALGORITHM={auth.jwt_algorithm} needs "
                "MLGATE_AUTH__JWT_PRIVATE_KEY_FILE (a PEM private key)"
            )
        if "*" in self.server.cors_origins:
            problems.append(
                "MLGATE_SERVER__CORS_ORIGINS contains '*': list the allowed origins explicitly"
            )
        if auth.bootstrap_admin:
            problems.append(
                "MLGATE_AUTH__BOOTSTRAP_ADMIN is on: create the first admin with "
                "`mlgate users create --admin` instead"
            )
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _redis_when_needed(self) -> Self:
        if self.rate_limit.backend == "redis" and not self.redis_url:
            raise ValueError(
                "MLGATE_RATE_LIMIT__BACKEND=redis needs MLGATE_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"
            )
        unknown = set(self.auth.tiers) - set(self.rate_limit.tiers)
        if unknown:
            raise ValueError(
                f"tiers {sorted(unknown)} have no rate limits: add them to MLGATE_RATE_LIMIT__TIERS"
            )
        return self

    @model_validator(mode="after")
    def _cache_redis(self) -> Self:
        if self.cache.backend == "redis" and not self.redis_url:
            raise ValueError(
                "MLGATE_CACHE__BACKEND=redis needs MLGATE_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"
            )
        return self

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def bootstrap_admin_enabled(self) -> bool:
        """Whether the first start creates an admin (see `auth.bootstrap_admin`)."""
        if self.auth.bootstrap_admin is not None:
            return self.auth.bootstrap_admin
        return self.env == "development" and self.uses_sqlite

    @property
    def docs_enabled(self) -> bool:
        if self.server.docs_enabled is not None:
            return self.server.docs_enabled
        return self.env != "production"


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
            if name == "repository" and default is None:
                shown = "(bundled models)"
            elif default is None:
                shown = "(unset)"
            elif isinstance(default, str):
                shown = default
            else:  # as it would be written in the environment (JSON for lists and maps)
                shown = json.dumps(to_jsonable_python(default, exclude_none=True))
            rows.append((env, shown, (field.description or "").replace("\n", " ")))

    walk(Settings, "MLGATE_")
    return rows
