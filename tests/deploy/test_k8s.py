"""deploy/k8s: valid Kubernetes objects (kubernetes-validate, strict), probes on the
real routes, a hardened pod, graceful shutdown within the grace period, autoscaling on
CPU and requests per second, and real settings."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from mlgate.cli.main import cli
from mlgate.settings import bundled_repository
from tests.deploy.support import (
    K8S,
    exported_metrics,
    known_variables,
    settings_from,
)

KUBERNETES_VERSION = "1.33.0"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((K8S / name).read_text())


def _container(name: str = "deployment.yaml") -> dict[str, Any]:
    (container,) = _load(name)["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid(path: Path) -> None:
    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_unknown_fields() -> None:
    deployment = copy.deepcopy(_load("deployment.yaml"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    resources = _load("kustomization.yaml")["resources"]
    assert sorted(resources) == sorted(p.name for p in MANIFESTS)


async def test_probes_use_real_routes(app_factory: Any, tmp_path: Path) -> None:
    # One small model is enough for the probes to answer as in production.
    shutil.copytree(bundled_repository() / "iot", tmp_path / "models" / "iot")
    async with app_factory(models={"repository": tmp_path / "models", "default_model": "iot"}) as (
        _,
        client,
    ):
        await _check_probes(client)


async def _check_probes(client: httpx.AsyncClient) -> None:
    container = _container()
    port = container["ports"][0]
    assert port == {"name": "http", "containerPort": 8000}
    probes = {k: container[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    for name, probe in probes.items():
        assert probe["httpGet"]["port"] == "http", name
        # Open routes (no credentials) that answer once the models are loaded.
        answer = await client.get(probe["httpGet"]["path"])
        assert answer.status_code == 200, (name, answer.text)
    assert probes["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/health/live"
    # Models load in the background: startup waits for a live process, up to 60 s.
    startup = probes["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert _load("service.yaml")["spec"]["ports"][0]["targetPort"] == "http"


def test_pods_are_hardened() -> None:
    for manifest in ("deployment.yaml", "migrate-job.yaml"):
        pod = _load(manifest)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        container = _container(manifest)
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # The one writable place: /tmp on an emptyDir.
        (mount,) = container["volumeMounts"]
        assert mount["mountPath"] == "/tmp"
        (volume,) = pod["volumes"]
        assert volume["name"] == mount["name"] and "emptyDir" in volume
        assert {"requests", "limits"} <= set(container["resources"])


def test_graceful_shutdown_fits_the_grace_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """preStop sleep (the pod leaves the endpoints) + the server's shutdown timeout
    (requests in flight finish) end before Kubernetes kills the pod."""
    pod = _load("deployment.yaml")["spec"]["template"]["spec"]
    pre_stop = _container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    settings = settings_from(_load("configmap.yaml")["data"], monkeypatch)
    assert pre_stop + settings.server.shutdown_timeout_s < pod["terminationGracePeriodSeconds"]
    strategy = _load("deployment.yaml")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_configuration_is_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _load("configmap.yaml")["data"]
    container = _container()
    from_secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert set(config) | set(from_secrets) <= known_variables()
    assert {ref["name"] for ref in from_secrets.values()} == {"mlgate-secrets"}
    assert {"MLGATE_DATABASE_URL", "MLGATE_AUTH__JWT_SECRET", "MLGATE_REDIS_URL"} <= set(
        from_secrets
    )
    # Nothing secret in the ConfigMap.
    assert not {"MLGATE_DATABASE_URL", "MLGATE_AUTH__JWT_SECRET"} & set(config)
    assert container["envFrom"] == [{"configMapRef": {"name": "mlgate-config"}}]
    settings = settings_from({**config, **dict.fromkeys(from_secrets, "${secret}")}, monkeypatch)
    assert settings.env == "production"
    assert settings.database.auto_migrate is False
    assert settings.rate_limit.trusted_proxies


def test_migration_job_runs_a_real_command() -> None:
    job = _load("migrate-job.yaml")
    assert job["kind"] == "Job"
    args = _container("migrate-job.yaml")["args"]
    assert args == ["db", "upgrade"]
    assert cli.get_command(None, "db").get_command(None, "upgrade") is not None  # type: ignore[union-attr]
    assert _container()["args"] == ["serve"]
    assert _container()["image"] == _container("migrate-job.yaml")["image"]


def test_autoscaling_on_cpu_and_requests_per_second() -> None:
    hpa = _load("hpa.yaml")
    assert hpa["spec"]["minReplicas"] >= 2
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    pods_metric = kinds["Pods"]["pods"]["metric"]["name"]
    # The adapter rule derives the per-second metric from an exported counter.
    rules = yaml.safe_load(_load("prometheus-adapter-rules.yaml")["data"]["config.yaml"])
    (rule,) = rules["rules"]
    series = re.match(r"(mlgate_[a-z_]+)\{", rule["seriesQuery"])
    assert series and series[1] in exported_metrics()
    derived = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series[1])
    assert derived == pods_metric == "mlgate_http_requests_per_second"
    pdb = _load("pdb.yaml")
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]
    assert pdb["spec"]["selector"] == _load("deployment.yaml")["spec"]["selector"]


def test_every_replica_is_scraped() -> None:
    annotations = _load("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"
