"""Keeps bench/ honest without running any load: no wrk, no MLServer, no server process.

What the bench serves must be what it checks against (the mlgate repository loads in
mlgate's registry and answers like the joblib file), the requests must be the ones each
server expects, wrong answers and errors under load must be caught, and the command must
explain itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import joblib
import numpy as np
import orjson
import pytest
from benchkit import checks, configs, model, profiling, report, servers, tools, workloads

from mlgate.registry.manifest import load_manifest, sha256_file
from mlgate.registry.registry import ModelRegistry

from .conftest import BENCH_DIR

RUN = BENCH_DIR / "run.py"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> model.BenchModel:
    # Three epochs: the test is about serving what was trained, not about accuracy.
    return model.train(tmp_path_factory.mktemp("bench-model"), max_iter=3)


# --------------------------------------------------------------------------- the command


def test_help_describes_the_options() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    for option in ("--rounds", "--duration", "--quick", "--only", "--profile", "--workloads"):
        assert option in done.stdout


def test_list_names_every_configuration_and_workload() -> None:
    done = _run("--list")
    assert done.returncode == 0, done.stderr
    for key in configs.config_by_key():
        assert key in done.stdout
    for name in workloads.WORKLOADS:
        assert name in done.stdout


def test_missing_wrk_is_explained_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no wrk, no taskset on this PATH
    done = _run("--quick", "--results", str(tmp_path / "results"), env=env)
    assert done.returncode == 2
    assert "apt-get install wrk" in done.stdout
    assert not (tmp_path / "results").exists()


def test_scripts_exist() -> None:
    lua = workloads.LUA_SCRIPT.read_text()
    assert "BENCH_RESULT" in lua and "function init" in lua and "function done" in lua
    profile = BENCH_DIR / "profile.sh"
    assert os.access(profile, os.X_OK)
    assert "--profile" in profile.read_text()
    assert (BENCH_DIR / "README.md").exists()


# --------------------------------------------------------------------------- configurations


def test_mlgate_is_served_by_the_command_the_bench_chose(tmp_path: Path) -> None:
    """mlgate runs from bench/.venv-mlgate (the core install) unless told otherwise; the
    install is redone when the project's dependency list changes."""
    mlgate = tmp_path / "venv" / "bin" / "mlgate"
    argv = servers.server_argv(configs.config_by_key()["mlgate"], 8123, tmp_path, mlgate)
    assert argv[:2] == [str(mlgate), "serve"] and "8123" in argv
    assert tools.MLGATE_VENV.name == ".venv-mlgate"
    marker = tools.mlgate_venv_marker()
    digest = hashlib.sha256((tools.ROOT / "pyproject.toml").read_bytes())
    assert digest.hexdigest() in marker and sys.version.split()[0] in marker


def test_the_bench_install_follows_every_source_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular install serves a copy: the bench re-installs when any file under src/
    changes (its digest), and not otherwise."""
    (tmp_path / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    module = tmp_path / "src" / "pkg" / "a.py"
    module.write_text("x = 1\n")
    monkeypatch.setattr(tools, "ROOT", tmp_path)
    first = tools.source_digest()
    (tmp_path / "src" / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert tools.source_digest() == first  # bytecode caches do not count
    module.write_text("x = 2\n")
    assert tools.source_digest() != first
    module.write_text("x = 1\n")
    (tmp_path / "src" / "pkg" / "b.yaml").write_text("")
    assert tools.source_digest() != first


def test_configurations_name_known_workloads_and_the_peers() -> None:
    by_key = configs.config_by_key()
    assert len(by_key) == len(configs.CONFIGS)
    assert {"ceiling", "mlserver", "mlgate", "mlgate-redis"} <= set(by_key)
    for config in configs.CONFIGS:
        assert config.workloads and set(config.workloads) <= set(workloads.WORKLOADS)
    assert by_key["mlgate-redis"].redis
    assert by_key["mlgate"].env["MLGATE_OBSERVABILITY__ACCESS_LOG"] == "true"
    # Every (configuration, workload) a target compares exists.
    for _, mine, base, _ in report.RATIO_TARGETS:
        for key, workload in (mine, base):
            assert workload in by_key[key].workloads


def test_features_switch_on_only_when_mlgate_has_their_settings() -> None:
    config = configs.config_by_key()["mlgate"]
    settings, on, missing, absent = configs.resolve_settings(config, set())
    assert on == [] and set(missing) == set(configs.OPTIONAL_FEATURES) and absent == []
    assert "MLGATE_AUDIT__ENABLED" not in settings
    known = {name for values in configs.OPTIONAL_FEATURES.values() for name in values}
    settings, on, missing, _ = configs.resolve_settings(config, known)
    assert set(on) == set(configs.OPTIONAL_FEATURES) and missing == []
    assert settings["MLGATE_AUDIT__ENABLED"] == "true"


def test_batching_configurations_wait_for_the_setting() -> None:
    for key, value in (("mlgate-batch-on", "true"), ("mlgate-batch-off", "false")):
        config = configs.config_by_key()[key]
        assert config.workloads == ("W1-c64",)
        assert workloads.WORKLOADS["W1-c64"].connections == 64
        _, _, _, absent = configs.resolve_settings(config, set())
        assert absent == [configs.BATCHING_SETTING]
        settings, _, _, absent = configs.resolve_settings(config, {configs.BATCHING_SETTING})
        assert absent == [] and settings[configs.BATCHING_SETTING] == value


# --------------------------------------------------------------------------- the model


def test_mlgate_repository_loads_and_answers_like_the_joblib(
    trained: model.BenchModel, tmp_path: Path
) -> None:
    repo = model.write_mlgate_repository(trained, tmp_path / "repo", bundled=False)
    version_dir = repo / workloads.MODEL_NAME / model.MODEL_VERSION
    manifest = load_manifest(version_dir)
    assert manifest.runtime == "sklearn" and len(manifest.features) == 77
    assert manifest.artifact_sha256 == sha256_file(version_dir / manifest.artifact)

    registry = ModelRegistry(repo, default_model=workloads.MODEL_NAME)
    report_ = registry.reload()
    assert not report_.failed, report_.failed
    served = registry.resolve(workloads.MODEL_NAME)
    estimator = joblib.load(trained.joblib_path)
    rows = np.vstack([trained.w1_row, trained.w2_rows])
    got = [manifest.classes[k] for k in np.argmax(served.runtime.run(rows), axis=1)]
    assert got == [str(c) for c in estimator.predict(rows)]
    assert got[0] == trained.w1_class and got[1:] == trained.w2_classes
    assert len(trained.w2_classes) == 1000 and len(trained.classes) >= 2


def test_repository_with_the_bundled_models(trained: model.BenchModel, tmp_path: Path) -> None:
    repo = model.write_mlgate_repository(trained, tmp_path / "repo")
    names = {p.name for p in repo.iterdir()}
    assert workloads.MODEL_NAME in names and "ids" in names and "iot" in names


def test_mlserver_repository(trained: model.BenchModel, tmp_path: Path) -> None:
    repo = model.write_mlserver_repository(trained, tmp_path / "mlserver")
    settings = json.loads((repo / workloads.MODEL_NAME / "model-settings.json").read_text())
    assert settings["implementation"] == "mlserver_sklearn.SKLearnModel"
    assert settings["name"] == workloads.MODEL_NAME
    artifact = repo / workloads.MODEL_NAME / settings["parameters"]["uri"]
    assert artifact.read_bytes() == trained.joblib_path.read_bytes()


# --------------------------------------------------------------------------- requests


def test_each_server_gets_its_own_request_for_the_same_rows(trained: model.BenchModel) -> None:
    w = workloads.WORKLOADS
    one = workloads.build_request("mlgate", w["W1"], trained)
    assert one is not None and one.path == "/v1/models/mlp/predict"
    assert orjson.loads(one.body)["features"] == trained.w1_row.tolist()

    batch = workloads.build_request("mlgate", w["W2-json"], trained)
    assert batch is not None and batch.path.endswith("/predict/batch")
    assert np.array_equal(np.array(orjson.loads(batch.body)["instances"]), trained.w2_rows)

    oip = workloads.build_request("mlserver", w["W2-json"], trained)
    assert oip is not None and oip.path == "/v2/models/mlp/infer"
    tensor = orjson.loads(oip.body)["inputs"][0]
    assert tensor["shape"] == [1000, 77] and tensor["datatype"] == "FP64"
    assert np.array_equal(np.array(tensor["data"]).reshape(1000, 77), trained.w2_rows)
    assert orjson.loads(oip.body)["outputs"] == [{"name": "predict_proba"}]

    binary = workloads.build_request("mlgate", w["W2-bin"], trained)
    assert binary is not None and binary.content_type == "application/octet-stream"
    length = int(binary.headers[workloads.BINARY_HEADER])
    header = json.loads(binary.body[:length])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 1000 * 77 * 8
    data = np.frombuffer(binary.body[length:], dtype="<f8").reshape(1000, 77)
    assert np.array_equal(data, trained.w2_rows)

    # MLServer's REST API has no binary tensors: the target compares with its JSON.
    assert workloads.build_request("mlserver", w["W2-bin"], trained) is None
    ceiling = workloads.build_request("ceiling", w["W1"], trained)
    assert ceiling is not None and ceiling.body == one.body


# --------------------------------------------------------------------------- answer checks


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.Response(status, content=content, headers=headers)


def test_checks_catch_wrong_and_refused_answers(trained: model.BenchModel) -> None:
    w1, w2 = workloads.WORKLOADS["W1"], workloads.WORKLOADS["W2-json"]
    right = _response(200, {"predicted_class_name": trained.w1_class})
    assert checks.check_answer("mlgate", w1, right, trained).ok
    other = next(c for c in trained.classes if c != trained.w1_class)
    wrong = checks.check_answer(
        "mlgate", w1, _response(200, {"predicted_class_name": other}), trained
    )
    assert not wrong.ok and not wrong.skip and "differ" in wrong.message
    refused = checks.check_answer("mlgate", w1, _response(401, {"error": {}}), trained)
    assert not refused.ok and not refused.skip and "401" in refused.message
    batch = [{"predicted_class_name": c} for c in trained.w2_classes]
    assert checks.check_answer("mlgate", w2, _response(200, {"predictions": batch}), trained).ok
    assert not checks.check_answer(
        "mlgate", w2, _response(200, {"predictions": batch[:-1]}), trained
    ).ok


def test_checks_read_oip_json_and_binary_answers(trained: model.BenchModel) -> None:
    w2, w2bin = workloads.WORKLOADS["W2-json"], workloads.WORKLOADS["W2-bin"]
    index = [trained.classes.index(c) for c in trained.w2_classes]
    proba = np.eye(len(trained.classes))[index]
    out = {"name": "predict_proba", "shape": list(proba.shape), "datatype": "FP64"}
    as_json = _response(200, {"outputs": [{**out, "data": proba.reshape(-1).tolist()}]})
    assert checks.check_answer("mlserver", w2, as_json, trained).ok

    raw = proba.astype("<f4").tobytes()
    binary_out = {**out, "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}
    header = orjson.dumps({"outputs": [binary_out]})
    answer = _response(200, header + raw, {workloads.BINARY_HEADER: str(len(header))})
    assert checks.check_answer("mlgate", w2bin, answer, trained).ok
    shuffled = _response(200, {"outputs": [{**out, "data": proba[::-1].reshape(-1).tolist()}]})
    assert not checks.check_answer("mlserver", w2, shuffled, trained).ok


def test_binary_workload_waits_for_the_v2_route_only(trained: model.BenchModel) -> None:
    w2bin = workloads.WORKLOADS["W2-bin"]
    no_route = _response(404, {"error": {"code": "not_found", "message": "Not Found"}})
    skipped = checks.check_answer("mlgate", w2bin, no_route, trained)
    assert skipped.skip and "/v2" in skipped.message
    no_model = _response(404, {"error": {"code": "model_not_found", "message": "..."}})
    failed = checks.check_answer("mlgate", w2bin, no_model, trained)
    assert not failed.ok and not failed.skip


# --------------------------------------------------------------------------- wrk and the table

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:8000/v1/models/mlp/predict
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   279.46ms   89.03ms 596.60ms   69.79%
  331 requests in 3.02s, 196.49KB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:    109.53
BENCH_RESULT {"requests": 331, "duration_us": 3000000, "bytes": 201206, \
"latency_us": {"p50": 2500, "p90": 4000, "p99": 9000, "max": 12000, "mean": 2600.5}, \
"errors": {"connect": 0, "read": 2, "write": 0, "status": 12, "timeout": 1}}
"""


def test_wrk_output_is_parsed_with_its_errors() -> None:
    result = workloads.parse_wrk_output(WRK_OUTPUT)
    assert result.requests == 331 and result.req_per_s == pytest.approx(331 / 3)
    assert (result.p50_ms, result.p99_ms) == (2.5, 9.0)
    assert result.non_2xx == 12 and result.errors == 15
    with pytest.raises(ValueError, match="BENCH_RESULT"):
        workloads.parse_wrk_output("Running 3s test\n")


def _cell(config: str, workload: str, req_per_s: float, *, errors: int = 0) -> report.Cell:
    rows = workloads.WORKLOADS[workload].rows
    kind = "mlgate" if config.startswith("mlgate") else config
    cell = report.Cell(config, config, kind, workload, rows, ready_s=1.0, rss_mb=200.0)
    result = workloads.WrkResult(int(req_per_s * 10), 10.0, 1.0, 2.0, 3.0, 4.0, errors, {})
    cell.rounds.append(result)
    return cell


def test_table_flags_errors_and_targets_say_met_or_not() -> None:
    cells = [
        _cell("ceiling", "W1", 20000),
        _cell("mlserver", "W1", 1000),
        _cell("mlserver", "W2-json", 100),
        _cell("mlgate", "W1", 3500),
        _cell("mlgate", "W2-json", 120, errors=3),
        report.Cell("mlgate", "mlgate", "mlgate", "W2-bin", 1000, "skipped", "no /v2 yet"),
    ]
    table = report.table(cells)
    assert "3 (flagged)" in table and "skipped: no /v2 yet" in table
    assert "| 3.50 | 0.175 |" in table  # × MLServer, × ceiling of mlgate W1
    outcomes = {o.target.split(":")[0]: o for o in report.targets(cells)}
    assert outcomes["W1, (a) all production features"].status == "met"
    w2 = outcomes["W2 JSON, (a)"]
    assert w2.status == "not met" and "errors" in w2.detail  # 1.2× and errors
    assert outcomes["W2 binary tensors, (a)"].status == "not measured"
    assert outcomes["Batching on vs off, 64 connections"].status == "not measured"
    assert outcomes["Ready ≤ 3 s after start"].status == "met"


def test_audit_that_dropped_rows_is_shown_and_meets_no_target() -> None:
    """A configuration whose audit log let rows go did not do all its work: the table
    shows the share it kept, and no ratio target counts as met with it."""
    complete = _cell("mlgate", "W1", 4000)
    complete.audit_rows, complete.audit_dropped = 60_000, 0
    dropping = _cell("mlgate", "W2-json", 300)
    dropping.audit_rows, dropping.audit_dropped = 4_500_000, 4_275_000
    cells = [_cell("mlserver", "W1", 1000), _cell("mlserver", "W2-json", 100), complete, dropping]
    rows = {line.split(" | ")[1]: line for line in report.table(cells).splitlines()[2:]}
    assert "| 100% |" in rows["W1"]
    assert "| **5.0%** |" in rows["W2-json"]
    outcomes = {o.target.split(":")[0]: o for o in report.targets(cells)}
    assert outcomes["W1, (a) all production features"].status == "met"  # nothing dropped
    w2 = outcomes["W2 JSON, (a)"]
    assert w2.status == "not met" and "recorded only 5.0% of the rows" in w2.detail
    assert dropping.as_dict()["audit"] == {"rows_answered": 4_500_000, "rows_dropped": 4_275_000}
    assert _cell("mlserver", "W1", 1).as_dict()["audit"] is None


# --------------------------------------------------------------------------- profiles

COLLAPSED = """\
<module> (mlgate:1);Runner.run (asyncio/runners.py:86);predict (mlgate/api/routes/predict.py:60) 30
<module> (mlgate:1);Runner.run (asyncio/runners.py:86);execute (sqlalchemy/engine/base.py:1) 50
Thread._bootstrap (threading.py:988);_connection_worker_thread (aiosqlite/core.py:48) 400
"""


def test_profile_reports_keep_the_event_loop_apart(tmp_path: Path) -> None:
    collapsed = tmp_path / "w1.collapsed"
    collapsed.write_text(COLLAPSED)
    speedscope, top = profiling.write_reports(collapsed, "W1", ["CPU line"])
    data = json.loads(speedscope.read_text())
    assert [p["endValue"] for p in data["profiles"]] == [80, 400]
    text = top.read_text()
    assert "CPU line" in text and "event-loop thread (80 samples)" in text
    assert " 62.5%  sqlalchemy" in text and " 37.5%  mlgate.api" in text


def test_ready_target_is_the_slowest_start_and_says_which_made_the_twin() -> None:
    """The first mlgate start of a run makes the MLP's ONNX twin (scikit-learn loads);
    the later ones start from the kept twin. The target counts the slowest start of
    either kind and the line gives both."""
    cold = _cell("mlgate", "W1", 3000)
    cold.ready_s, cold.served_by = 3.4, "onnxruntime (converted from scikit-learn; max |Δ| 0)"
    warm = _cell("mlgate-redis", "W1", 3000)
    warm.ready_s, warm.served_by = 2.1, "onnxruntime (kept twin of scikit-learn; max |Δ| 0)"
    outcomes = {o.target: o for o in report.targets([cold, warm])}
    ready = outcomes["Ready ≤ 3 s after start"]
    assert ready.status == "not met"
    assert ready.detail == "slowest 3.40 s (mlgate); twin made: 3.40 s, twin kept: 2.10 s"
    assert cold.as_dict()["served_by"].startswith("onnxruntime (converted")
