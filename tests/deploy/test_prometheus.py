"""Prometheus: the configuration and alert rules pass promtool, the alerts cover what
the issue asks for, and they name only metrics mlgate exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.support import DEPLOY, exported_metrics, metrics_in, required_tool
from tests.servers import LiveServer

ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"


def _rules() -> list[dict[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    promtool = required_tool("promtool", "apt-get install prometheus")
    done = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_promtool_accepts_the_config(tmp_path: Path) -> None:
    promtool = required_tool("promtool", "apt-get install prometheus")
    # Laid out as the container sees it: the rule file next to the configuration.
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = ["alerts.yml"]
    # The scrape key is the compose secret of that name.
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "mlgate"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/mlgate_metrics_key"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["services"]["prometheus"]["secrets"] == ["mlgate_metrics_key"]
    assert "mlgate_metrics_key" in compose["secrets"]
    (tmp_path / "key").write_text("mlg_stand-in")
    job["authorization"]["credentials_file"] = str(tmp_path / "key")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_replica_is_scraped_directly() -> None:
    """DNS service discovery on the compose service name: one target per replica, not
    one target behind nginx (which would sample a random replica each scrape)."""
    jobs = yaml.safe_load(CONFIG.read_text())["scrape_configs"]
    (job,) = [j for j in jobs if j["job_name"] == "mlgate"]
    assert job["metrics_path"] == "/metrics"
    assert job["dns_sd_configs"] == [
        {"names": ["mlgate"], "type": "A", "port": 8000, "refresh_interval": "15s"}
    ]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert "mlgate" in compose["services"]
    assert "8000" in compose["services"]["mlgate"]["expose"]


def test_the_alerts_cover_the_issue() -> None:
    """Error rate, p99 latency, rate-limit refusals, audit drops, drift, model load
    failures: each has an alert on the metric that measures it."""
    by_metric: dict[str, list[str]] = {}
    for rule in _rules():
        for name in metrics_in(rule["expr"]):
            by_metric.setdefault(name, []).append(rule["alert"])
    for metric in (
        "mlgate_http_requests_total",
        "mlgate_http_request_duration_seconds",
        "mlgate_rate_limit_refusals_total",
        "mlgate_audit_dropped_total",
        "mlgate_drift_score",
        "mlgate_model_load_failures_total",
    ):
        assert metric in by_metric, f"no alert reads {metric}"
    p99 = [r for r in _rules() if "histogram_quantile(0.99" in r["expr"]]
    assert p99 and "mlgate_http_request_duration_seconds_bucket" in p99[0]["expr"]
    for rule in _rules():
        assert rule["annotations"]["summary"], rule["alert"]


def test_alerts_name_only_exported_metrics() -> None:
    exported = exported_metrics()
    for rule in _rules():
        unknown = metrics_in(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} reads metrics mlgate does not export: {unknown}"


def test_metric_names_match_a_live_metrics_endpoint(live_server: LiveServer) -> None:
    """Once the server exports /metrics (the observability work), every name the alerts
    and the dashboard may use is one of its metric families."""
    families: set[str] = set()
    for headers in ({}, {"X-API-Key": live_server.admin_key}):
        answer = httpx.get(f"{live_server.url}/metrics", headers=headers)
        if answer.status_code == 200:
            for line in answer.text.splitlines():
                if line.startswith(("# TYPE ", "# HELP ")):
                    families.add(line.split()[2])
            break
    if not families:
        pytest.skip("this server has no /metrics yet: names checked against metric_names.txt")
    missing = {
        name
        for name in exported_metrics()
        if name not in families and name.removesuffix("_total") not in families
    }
    assert not missing, f"metric_names.txt names metrics the server does not export: {missing}"
