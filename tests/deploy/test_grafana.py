"""Grafana: the provisioned datasource and dashboard files parse, point at each other,
and every panel queries metrics mlgate exports."""

from __future__ import annotations

import json

import yaml

from tests.deploy.support import DEPLOY, exported_metrics, metrics_in

GRAFANA = DEPLOY / "grafana"


def _dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "mlgate.json").read_text())


def test_datasource_and_provider_are_provisioned() -> None:
    (source,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "mlgate.yml").read_text()
    )["providers"]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    # The provider reads the directory the dashboards are mounted at.
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    for panel in _dashboard()["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_dashboard_panels_query_exported_metrics() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "mlgate"
    panels = dashboard["panels"]
    assert len(panels) >= 10
    assert len({p["id"] for p in panels}) == len(panels)
    exported = exported_metrics()
    shown: set[str] = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metrics_in(target["expr"])
            assert names, f"{panel['title']}: {target['expr']} reads no mlgate metric"
            assert names <= exported, f"{panel['title']} reads unknown {names - exported}"
            shown |= names
    # The families the issue names are all on the dashboard.
    for metric in (
        "mlgate_http_requests_total",
        "mlgate_http_request_duration_seconds",
        "mlgate_rate_limit_refusals_total",
        "mlgate_predictions_total",
        "mlgate_audit_dropped_total",
        "mlgate_drift_score",
        "mlgate_live_accuracy",
        "mlgate_model_load_failures_total",
    ):
        assert metric in shown, metric


def test_the_dashboard_does_not_overlap_panels() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in _dashboard()["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        columns, rows = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & taken, panel["title"]
        taken |= cells
