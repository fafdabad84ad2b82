"""Production refuses to start with a weak or missing secret, CORS '*', or the bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from mlgate.cli.main import cli
from mlgate.settings import Settings, normalize_database_url, secret_problem

STRONG = "Zq3!x9Lm-7fKpT2w_R8vYc4NbH6jD1sQeA5uG0"


def production(**overrides: object) -> Settings:
    return Settings(env="production", **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("auth", "says"),
    [
        ({}, "MLGATE_AUTH__JWT_SECRET is not set"),
        ({"jwt_secret": "too-short-secret"}, "shorter than 32 bytes"),
        ({"jwt_secret": "your-secret-key-change-in-production-0123"}, "placeholder"),
        ({"jwt_secret": "ab" * 20}, "too few characters"),
        ({"jwt_secret": STRONG, "bootstrap_admin": True}, "BOOTSTRAP_ADMIN"),
        ({"jwt_algorithm": "RS256"}, "JWT_PRIVATE_KEY_FILE"),
    ],
)
def test_unsafe_production_settings_are_refused(auth: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match="refusing to start in production") as info:
        production(auth=auth)
    assert says in str(info.value)


def test_cors_wildcard_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        production(auth={"jwt_secret": STRONG}, server={"cors_origins": ["*"]})


def test_all_problems_are_named_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        production(server={"cors_origins": ["*"]}, auth={"bootstrap_admin": True})
    message = str(info.value)
    assert "JWT_SECRET" in message and "CORS" in message and "BOOTSTRAP" in message


def test_safe_production_settings_start(tmp_path: Path) -> None:
    settings = production(auth={"jwt_secret": STRONG}, server={"cors_origins": ["https://a.b"]})
    assert not settings.bootstrap_admin_enabled and not settings.docs_enabled
    key = tmp_path / "key.pem"
    assert production(auth={"jwt_algorithm": "EdDSA", "jwt_private_key_file": key})


def test_development_accepts_no_secret() -> None:
    assert Settings(env="development").auth.jwt_secret is None


def test_serve_refuses_production_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_ENV", "production")
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "MLGATE_AUTH__JWT_SECRET" in result.output


def test_secret_problems() -> None:
    assert secret_problem(STRONG) is None
    assert secret_problem("changeme" * 5) is not None
    assert secret_problem("x" * 64) is not None


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/mlgate", "postgresql+asyncpg://u:p@db:5432/mlgate"),
        ("postgres://u@db/mlgate", "postgresql+asyncpg://u@db/mlgate"),
        ("postgresql+asyncpg://u@db/x", "postgresql+asyncpg://u@db/x"),
        ("sqlite:///./var/mlgate.db", "sqlite+aiosqlite:///./var/mlgate.db"),
    ],
)
def test_database_url_gets_the_async_driver(given: str, used: str) -> None:
    assert normalize_database_url(given) == used
    assert Settings(database_url=given).database_url == used


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+psycopg2://u@h/db", "nonsense"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="database URL"):
        Settings(database_url=url)


def test_database_url_is_top_level_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLGATE_DATABASE_URL", "postgresql://u@h/db")
    assert Settings().database_url == "postgresql+asyncpg://u@h/db"


PATTERNED_SECRETS = [
    "01234567890123456789012345678901",
    "abcdefghabcdefghabcdefghabcdefgh",
    "qwertyuiopasdfghjklzxcvbnm1234567890",
    "9876543210zyxwvutsrqponmlkjihgfedcba",
    "Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab1c2d3e4f5g6",
]


@pytest.mark.parametrize("secret", PATTERNED_SECRETS)
def test_patterned_secrets_are_refused_in_production(secret: str) -> None:
    with pytest.raises(ValidationError, match="follows a pattern") as info:
        production(auth={"jwt_secret": secret})
    assert "mlgate secret" in str(info.value)


def test_mlgate_secret_prints_secrets_production_accepts() -> None:
    runner = CliRunner()
    printed = {runner.invoke(cli, ["secret"]).output.strip() for _ in range(50)}
    assert len(printed) == 50  # new every time
    for secret in printed:
        assert len(secret) == 64  # 48 random bytes, URL-safe base64
        assert secret_problem(secret) is None
        assert production(auth={"jwt_secret": secret}).auth.jwt_secret is not None
    short = runner.invoke(cli, ["secret", "--bytes", "32"]).output.strip()
    assert len(short) == 43 and secret_problem(short) is None
    assert runner.invoke(cli, ["secret", "--bytes", "16"]).exit_code == 2  # too few


DB_PASSWORD = "Sup3r-S3cret-DB-Passw0rd"
REDIS_PASSWORD = "R3dis-S3cret-Passw0rd"


@pytest.mark.parametrize(
    "env",
    [
        {  # a patterned secret, a database URL with a password, and a refusal
            "MLGATE_ENV": "production",
            "MLGATE_AUTH__JWT_SECRET": PATTERNED_SECRETS[0],
            "MLGATE_DATABASE_URL": f"postgresql://mlgate:{DB_PASSWORD}@db.internal/mlgate",
            "MLGATE_SERVER__CORS_ORIGINS": '["*"]',
        },
        {  # only a patterned secret: it ends the input pydantic would quote
            "MLGATE_ENV": "production",
            "MLGATE_AUTH__JWT_SECRET": PATTERNED_SECRETS[0],
        },
        {  # a secret that is too short, at the end of the input too
            "MLGATE_ENV": "production",
            "MLGATE_AUTH__JWT_SECRET": "a-short-secret-value-0123",
        },
        {  # a malformed database URL (no ://)
            "MLGATE_DATABASE_URL": f"postgres:mlgate:{DB_PASSWORD}@db.internal",
        },
        {  # a Redis URL of the wrong scheme, with a password
            "MLGATE_REDIS_URL": f"http://:{REDIS_PASSWORD}@redis.internal:6379/0",
            "MLGATE_AUTH__JWT_SECRET": "a-short-secret-value-0123",
            "MLGATE_ENV": "production",
        },
    ],
    ids=[
        "production-refusal",
        "patterned-secret",
        "short-secret",
        "malformed-database-url",
        "bad-redis-url",
    ],
)
def test_startup_refusals_never_print_secrets(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Should a configuration pass, serve stops at the missing repository, not serving.
    monkeypatch.setenv("MLGATE_MODELS__REPOSITORY", str(tmp_path / "no-models"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2
    assert "invalid configuration" in result.output
    for secret in (PATTERNED_SECRETS[0], DB_PASSWORD, REDIS_PASSWORD, "a-short-secret-value"):
        # Not even a fragment (pydantic quotes the start and the end of long values).
        fragments = {secret[i : i + 8] for i in range(len(secret) - 7)}
        assert not [f for f in fragments if f in result.output], result.output
