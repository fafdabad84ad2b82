"""scikit-learn classifiers served through an exact ONNX twin (made in the background,
in a subprocess), and the fallbacks."""

from __future__ import annotations

import asyncio
import gc
import io
import subprocess
import sys
import warnings
import weakref
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler

from mlgate.registry import sklearn_onnx, twin_cache
from mlgate.registry.manifest import load_manifest
from mlgate.registry.runtimes import LoadOptions, load_runtime
from mlgate.registry.twin_cache import TwinCache
from mlgate.settings import Settings
from tests.conftest import make_settings, running_app
from tests.registry.test_runtimes import ids_slice, write_version


def _reference(x: np.ndarray) -> dict[str, Any]:
    return {
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "quantiles": {
            q: np.quantile(x, float(q), axis=0).tolist() for q in ("0.01", "0.5", "0.99")
        },
    }


@pytest.fixture(scope="module")
def mlp() -> tuple[list[str], np.ndarray, list[str], Any]:
    names, x, y = ids_slice(400)
    # MinMaxScaler: a pipeline numpy does not serve (test_sklearn_numpy), so the twin is made.
    model = make_pipeline(MinMaxScaler(), MLPClassifier((32, 16), max_iter=60, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: irrelevant here
        model.fit(x, y)
    return names, x, y, model


def write_mlp(repo: Path, mlp: tuple, **manifest: Any) -> Path:
    names, x, _, model = mlp
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    classes = [str(c) for c in model.classes_]
    return write_version(
        repo,
        "mlp",
        "model.joblib",
        {
            "runtime": "sklearn",
            "task": "classification",
            "features": [{"name": n} for n in names],
            "classes": classes,
            "attack_classes": [c for c in classes if c != "BENIGN"],
            "reference": _reference(x),
            **manifest,
        },
        buffer.getvalue(),
    )


def loaded(version_dir: Path) -> Any:
    """The runtime, once its conversion has finished."""
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    assert runtime.converted.wait(120)
    return runtime


def test_a_classifier_is_served_by_its_exact_twin(tmp_path: Path, mlp: tuple) -> None:
    _, x, _, model = mlp
    version_dir = write_mlp(tmp_path, mlp)
    runtime = load_runtime(version_dir, load_manifest(version_dir))
    # scikit-learn serves until the twin is ready...
    assert runtime.execution == "scikit-learn (an ONNX twin is being made)"
    np.testing.assert_array_equal(runtime.run(x[:3]), model.predict_proba(x[:3]))
    estimator = weakref.ref(runtime.estimator)
    assert runtime.converted.wait(120)
    gc.collect()
    assert estimator() is None  # let go once the twin serves
    # ...and then the twin, which is faster and exact.
    assert runtime.execution.startswith("onnxruntime (converted from scikit-learn")
    assert runtime.current_single_row_us is not None
    assert runtime.twin is not None
    rng = np.random.default_rng(1)
    rows = np.vstack([x[:50], x[:50] * rng.uniform(0.5, 2.0, size=(50, x.shape[1]))])
    np.testing.assert_allclose(runtime.run(rows), model.predict_proba(rows), rtol=0, atol=1e-9)


async def test_http_answers_are_the_estimators(tmp_path: Path, mlp: tuple) -> None:
    _, x, _, model = mlp
    write_mlp(tmp_path, mlp)
    async with running_app(make_settings(models={"repository": tmp_path})) as (app, client):
        runtime = app.state.mlgate.registry.resolve("mlp").runtime
        assert await asyncio.to_thread(runtime.converted.wait, 120)
        execution, got = await served_over_http(client, x[:20])
    assert execution.startswith("onnxruntime")
    np.testing.assert_allclose(got, model.predict_proba(x[:20]), rtol=0, atol=1e-9)


async def served_over_http(client: Any, rows: np.ndarray) -> tuple[str, list[list[float]]]:
    """The mlp's execution, and its probabilities for ``rows`` through /v1."""
    info = (await client.get("/v1/models/mlp")).json()
    response = await client.post("/v1/models/mlp/predict/batch", json={"instances": rows.tolist()})
    assert response.status_code == 200, response.text
    got = [list(p["probabilities"].values()) for p in response.json()["predictions"]]
    return info["versions"][0]["execution"], got


def test_convert_onnx_false_keeps_scikit_learn(tmp_path: Path, mlp: tuple) -> None:
    version_dir = write_mlp(tmp_path, mlp, runtime_options={"convert_onnx": False})
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert runtime.execution == "scikit-learn (convert_onnx: false)"


def test_without_a_reference_there_is_nothing_to_check_against(tmp_path: Path, mlp: tuple) -> None:
    version_dir = write_mlp(tmp_path, mlp, reference=None)
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert "no reference profile" in runtime.execution


def test_an_inexact_twin_is_refused(
    tmp_path: Path, mlp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sklearn_onnx, "TOLERANCE", -1.0)  # nothing is exact enough
    version_dir = write_mlp(tmp_path, mlp)
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert "not exact" in runtime.execution
    _, x, _, model = mlp
    np.testing.assert_array_equal(runtime.run(x[:5]), model.predict_proba(x[:5]))


def test_an_unconvertible_estimator_falls_back(tmp_path: Path, mlp: tuple) -> None:
    names, x, y, _ = mlp
    # A transformer skl2onnx has no converter for (np.abs is importable everywhere,
    # so the subprocess can load the pickle).
    model = make_pipeline(
        FunctionTransformer(np.abs), MLPClassifier((8,), max_iter=20, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(x, y)
    version_dir = write_mlp(tmp_path, (names, x, y, model))
    runtime = loaded(version_dir)
    assert runtime.twin is None
    assert "cannot convert" in runtime.execution


def test_the_conversion_runs_at_the_lowest_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The conversion's subprocess lowers its own priority before it imports anything,
    and gets its module's arguments unchanged."""
    import os

    (tmp_path / "niceness_probe.py").write_text(
        "import os, sys\nprint(os.getpriority(os.PRIO_PROCESS, 0), *sys.argv[1:])\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    command = sklearn_onnx.low_priority_command("niceness_probe", "a b", "7")
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert done.stdout.split(maxsplit=1) == [str(min(19, ours + 19)), "a b 7\n"]
    assert sklearn_onnx.CONVERSION_NICENESS == 19


# -- the twin cache: a restart serves the checked twin without loading scikit-learn --------


def cached(directory: Path) -> LoadOptions:
    return LoadOptions(twin_cache=TwinCache(directory))


def loaded_with(version_dir: Path, options: LoadOptions) -> Any:
    runtime = load_runtime(version_dir, load_manifest(version_dir), options)
    assert runtime.converted.wait(120)
    return runtime


def twin_kept(tmp_path: Path, mlp: tuple) -> tuple[Path, LoadOptions, Any]:
    """The mlp written under ``tmp_path/repo``, loaded once with a twin cache in
    ``tmp_path/twins`` (so its twin is kept): the version, the options, the runtime."""
    version_dir = write_mlp(tmp_path / "repo", mlp)
    options = cached(tmp_path / "twins")
    return version_dir, options, loaded_with(version_dir, options)


def _refuse_joblib(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the estimator was loaded")

    monkeypatch.setattr(joblib, "load", refuse)


def test_a_kept_twin_serves_at_once_without_the_estimator(
    tmp_path: Path, mlp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, x, _, model = mlp
    version_dir, options, first = twin_kept(tmp_path, mlp)
    assert first.execution.startswith("onnxruntime (converted from scikit-learn")
    assert len(list((tmp_path / "twins").glob("*.npz"))) == 1

    _refuse_joblib(monkeypatch)
    again = load_runtime(version_dir, load_manifest(version_dir), options)
    # Served by the twin from the start: no conversion, no scikit-learn.
    assert again.converted.is_set()
    assert again.execution.startswith("onnxruntime (kept twin of scikit-learn; max |Δ|")
    assert again.current_single_row_us is not None
    np.testing.assert_allclose(again.run(x[:40]), model.predict_proba(x[:40]), rtol=0, atol=1e-9)


def test_a_restart_with_a_kept_twin_never_imports_scikit_learn(tmp_path: Path, mlp: tuple) -> None:
    _, x, _, model = mlp
    version_dir, _, _ = twin_kept(tmp_path, mlp)
    np.save(tmp_path / "rows.npy", x[:10])
    script = f"""
import sys, numpy as np
from pathlib import Path
from mlgate.registry.manifest import load_manifest
from mlgate.registry.runtimes import LoadOptions, load_runtime
from mlgate.registry.twin_cache import TwinCache
d = Path({str(version_dir)!r})
options = LoadOptions(TwinCache(Path({str(tmp_path / "twins")!r})))
runtime = load_runtime(d, load_manifest(d), options)
np.save({str(tmp_path / "out.npy")!r}, runtime.run(np.load({str(tmp_path / "rows.npy")!r})))
print(runtime.execution)
print(sorted(m for m in ("sklearn", "scipy", "joblib") if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    execution, modules = done.stdout.strip().splitlines()[-2:]
    assert execution.startswith("onnxruntime (kept twin")
    assert modules == "[]"
    got = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(got, model.predict_proba(x[:10]), rtol=0, atol=1e-9)


def test_other_library_versions_miss_and_check_the_twin_again(
    tmp_path: Path, mlp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    version_dir, options, _ = twin_kept(tmp_path, mlp)
    versions = twin_cache.library_versions()
    monkeypatch.setattr(
        twin_cache, "library_versions", lambda: (*versions[:-1], "onnxruntime=0.0.1")
    )
    runtime = load_runtime(version_dir, load_manifest(version_dir), options)
    assert runtime.execution == "scikit-learn (an ONNX twin is being made)"
    assert runtime.converted.wait(120)
    assert runtime.execution.startswith("onnxruntime (converted from scikit-learn")
    assert len(list((tmp_path / "twins").glob("*.npz"))) == 2  # one per set of versions


def test_another_artifact_misses(tmp_path: Path, mlp: tuple) -> None:
    options = cached(tmp_path / "twins")
    loaded_with(write_mlp(tmp_path / "one", mlp), options)
    names, x, y, _ = mlp
    other = make_pipeline(MinMaxScaler(), MLPClassifier((8,), max_iter=30, random_state=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other.fit(x, y)
    version_dir = write_mlp(tmp_path / "two", (names, x, y, other))
    runtime = load_runtime(version_dir, load_manifest(version_dir), options)
    assert runtime.execution == "scikit-learn (an ONNX twin is being made)"
    assert runtime.converted.wait(120)
    np.testing.assert_allclose(runtime.run(x[:20]), other.predict_proba(x[:20]), atol=1e-9)


def test_models_list_makes_the_twins_a_first_start_serves(
    tmp_path: Path, mlp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlgate models list`` waits for the twins and keeps them: run before the
    servers (or at image build), their first start serves the twin at once."""
    from click.testing import CliRunner

    from mlgate.cli.main import cli

    version_dir = write_mlp(tmp_path / "repo", mlp)
    monkeypatch.setenv("MLGATE_MODELS__TWIN_CACHE_DIR", str(tmp_path / "twins"))
    monkeypatch.setenv("COLUMNS", "250")
    result = CliRunner().invoke(cli, ["models", "list", "--repository", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    assert "onnxruntime (converted from scikit-learn" in result.output
    assert _only_entry(tmp_path / "twins").is_file()

    _refuse_joblib(monkeypatch)
    first = load_runtime(version_dir, load_manifest(version_dir), cached(tmp_path / "twins"))
    assert first.execution.startswith("onnxruntime (kept twin of scikit-learn")


def test_models_list_without_waiting_shows_the_twin_being_made(
    tmp_path: Path, mlp: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mlp(tmp_path / "repo", mlp)
    monkeypatch.setenv("MLGATE_MODELS__TWIN_CACHE", "false")
    monkeypatch.setenv("COLUMNS", "250")
    from click.testing import CliRunner

    from mlgate.cli.main import cli

    args = ["models", "list", "--repository", str(tmp_path / "repo"), "--twin-timeout", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "scikit-learn (an ONNX twin is being made)" in result.output


def _only_entry(directory: Path) -> Path:
    (entry,) = directory.glob("*.npz")
    return entry


def test_a_damaged_entry_is_ignored_and_replaced(
    tmp_path: Path, mlp: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    version_dir, options, _ = twin_kept(tmp_path, mlp)
    entry = _only_entry(tmp_path / "twins")
    good = entry.read_bytes()
    entry.write_bytes(good[: len(good) // 2])
    runtime = load_runtime(version_dir, load_manifest(version_dir), options)
    assert runtime.execution == "scikit-learn (an ONNX twin is being made)"
    assert "damaged ONNX twin cache entry" in caplog.text
    assert runtime.converted.wait(120)
    assert runtime.twin is not None
    # Written again by the new check (not byte for byte: the conversion and the zip's
    # timestamps may differ), and the next start serves it.
    assert entry.read_bytes() != good[: len(good) // 2]
    again = load_runtime(version_dir, load_manifest(version_dir), options)
    assert again.execution.startswith("onnxruntime (kept twin of scikit-learn")


def test_a_kept_twin_that_no_longer_reproduces_is_not_served(
    tmp_path: Path, mlp: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    _, x, _, model = mlp
    version_dir, options, _ = twin_kept(tmp_path, mlp)
    entry = _only_entry(tmp_path / "twins")
    with np.load(entry) as data:
        kept = {k: data[k] for k in data.files}
    # The probabilities recorded with the graph are not the graph's any more (a well-formed
    # entry: what a changed numerical library would look like).
    kept["expected"] = kept["expected"][:, ::-1].copy()
    np.savez(entry, **kept)
    runtime = load_runtime(version_dir, load_manifest(version_dir), options)
    assert runtime.execution == "scikit-learn (an ONNX twin is being made)"
    assert "kept ONNX twin of mlp is not used: not exact" in caplog.text
    np.testing.assert_array_equal(runtime.run(x[:5]), model.predict_proba(x[:5]))
    assert runtime.converted.wait(120)


def test_an_unwritable_cache_only_warns(
    tmp_path: Path, mlp: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    version_dir = write_mlp(tmp_path / "repo", mlp)
    (tmp_path / "not-a-dir").write_text("")
    runtime = loaded_with(version_dir, cached(tmp_path / "not-a-dir"))
    assert runtime.twin is not None
    assert "cannot keep the ONNX twin" in caplog.text


async def test_a_restarted_app_serves_the_kept_twin_over_http(tmp_path: Path, mlp: tuple) -> None:
    _, x, _, model = mlp
    write_mlp(tmp_path / "repo", mlp)
    settings = make_settings(
        models={
            "repository": tmp_path / "repo",
            "twin_cache": True,
            "twin_cache_dir": tmp_path / "twins",
        }
    )
    async with running_app(settings) as (app, _):
        runtime = app.state.mlgate.registry.resolve("mlp").runtime
        assert await asyncio.to_thread(runtime.converted.wait, 120)
    async with running_app(settings) as (_, client):
        execution, got = await served_over_http(client, x[:20])
    assert execution.startswith("onnxruntime (kept twin")
    np.testing.assert_allclose(got, model.predict_proba(x[:20]), rtol=0, atol=1e-9)


def test_the_twin_cache_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    options = Settings().models.load_options()
    assert options.twin_cache is not None
    assert options.twin_cache.directory == tmp_path / "mlgate" / "onnx-twins"
    monkeypatch.setenv("MLGATE_MODELS__TWIN_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert Settings().models.load_options().twin_cache.directory == tmp_path / "elsewhere"  # type: ignore[union-attr]
    monkeypatch.setenv("MLGATE_MODELS__TWIN_CACHE", "false")
    assert Settings().models.load_options().twin_cache is None
