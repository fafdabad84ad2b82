"""Training the ``ids`` deep Q-learning agent on every flow, chosen by cross-validation.

Same data, cleaning and folds as the gradient-boosted version (:mod:`mlgate.training.ids`:
stratified k-fold with the same seed), so their cross-validated figures compare fold by
fold. Each fold trains the agent for ``config.episodes`` episodes and scores its test
rows after every episode; the number of episodes with the best mean macro-F1 over the
folds is the one the shipped agent trains for, on every flow (early stopping on CV
macro-F1, without a split of the data the shipped agent learns from). The softmax
temperature is fitted on the out-of-fold Q-values at that episode.

The agent is exported to ONNX (preprocessing, Q-networks and the calibrated softmax in
one graph) and served without torch; training checks that the served outputs equal the
trained network's on every row. Beside the graph goes ``explainer.npz``, the networks'
weights as plain arrays, for exact integrated gradients (:mod:`mlgate.explain`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from rich.console import Console

from mlgate.registry.manifest import MODEL_FILE, load_manifest
from mlgate.training.common import environment, make_progress, resolve_version, write_version
from mlgate.training.cv import (
    DEFAULT_FOLDS,
    cv_report,
    nested_selection,
    spread,
    stratified_folds,
)
from mlgate.training.dqn import (
    AgentResult,
    DQNConfig,
    EpisodeStats,
    calibrated_probabilities,
    expected_calibration_error,
    export_onnx,
    fit_temperature,
    macro_f1,
    network_arrays,
    require_torch,
    softmax,
    train_agent,
)
from mlgate.training.ids import (
    MODEL_NAME,
    classifier_manifest,
    clean_features,
    data_provenance,
    explainer_record,
    load_ids_dataset,
    npz_bytes,
)
from mlgate.training.onnx_export import require_onnx, run_onnx

#: Served (onnxruntime) and trained (torch) probabilities must agree this closely.
EXPORT_ATOL = 1e-5
#: The issue's target for the agent, and how far below the baseline it may be.
TARGET_MACRO_F1 = 0.97
MAX_GAP_TO_BASELINE = 0.01


def _baseline_cv(baseline_dir: Path | None) -> dict[str, Any] | None:
    if baseline_dir is None:
        return None
    manifest = load_manifest(baseline_dir)
    cv = manifest.metrics.get("cv")
    if cv is None:
        return None
    return {
        "version": manifest.version,
        "algorithm": manifest.provenance.get("algorithm"),
        "macro_f1": cv["macro_f1"],
        "nested_macro_f1": cv.get("nested", {}).get("macro_f1"),
    }


def cross_validate_agent(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    folds: list[tuple[np.ndarray, np.ndarray]],
    config: DQNConfig,
    console: Console | None,
) -> tuple[int, list[dict[str, Any]], np.ndarray, dict[str, Any]]:
    """Per-episode CV macro-F1; the best episode (ties: fewer), the curve, the
    out-of-fold Q-values at that episode, and the nested figure
    (:func:`~mlgate.training.cv.nested_selection`)."""
    runs: list[AgentResult] = []
    with make_progress(console) as progress:
        task = progress.add_task("ids (DQN, CV)", total=len(folds) * config.episodes, status="")
        for k, (train, test) in enumerate(folds, 1):

            def show(stats: EpisodeStats, k: int = k) -> None:
                progress.update(
                    task,
                    advance=1,
                    status=f"fold {k}/{len(folds)}, episode {stats.episode}: "
                    f"macro-F1 {stats.eval_macro_f1:.4f}",
                )

            runs.append(
                train_agent(x[train], y[train], n_classes, config, x_eval=x[test], y_eval=y[test])
            )
            for stats in runs[-1].history:
                show(stats)
    curve, by_episode = [], []
    for e in range(config.episodes):
        scores = [
            macro_f1(y[te], run.eval_q[e].argmax(axis=1), n_classes)
            for run, (_, te) in zip(runs, folds, strict=True)
        ]
        by_episode.append(scores)
        curve.append({"episode": e + 1, **spread(scores)})
    best = max(curve, key=lambda c: (c["mean"], -c["episode"]))
    episode = int(best["episode"])
    oof = np.zeros((len(y), n_classes))
    for run, (_, te) in zip(runs, folds, strict=True):
        oof[te] = run.eval_q[episode - 1]
    episodes = list(range(1, config.episodes + 1))
    nested = nested_selection(np.transpose(by_episode), episodes, what="episodes")
    return episode, curve, oof, nested


def train_ids_dqn(
    data: Sequence[Path],
    repository: Path,
    *,
    version: str | None = None,
    seed: int = 0,
    console: Console | None = None,
    max_rows: int | None = None,
    force: bool = False,
    config: DQNConfig | None = None,
    folds: int = DEFAULT_FOLDS,
    baseline_dir: Path | None = None,
) -> Path:
    """Train the DQN agent on every flow and write it as a version of ``ids``.

    ``config.episodes`` caps the episodes; cross-validation picks how many the shipped
    agent trains for. ``baseline_dir``: the gradient-boosted version trained on the
    same data; its CV figures are recorded beside the agent's for comparison.
    """
    started = time.perf_counter()
    require_onnx()
    torch = require_torch()
    config = config or DQNConfig(seed=seed)
    repository = Path(repository)
    version = resolve_version(repository, [MODEL_NAME], version, force=force)
    dataset = load_ids_dataset([Path(p) for p in data], max_rows=max_rows)
    x = clean_features(dataset.x)
    classes = sorted(set(dataset.y.tolist()))
    y = np.array([classes.index(c) for c in dataset.y])
    cv_folds = stratified_folds(dataset.y, folds, seed)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks: one thread is faster and reproducible
    try:
        episodes, curve, oof_q, nested = cross_validate_agent(
            x, y, len(classes), cv_folds, config, console
        )
        temperature = fit_temperature(oof_q, y)
        final_config = replace(config, episodes=episodes)
        with make_progress(console) as progress:
            task = progress.add_task("ids (DQN, all flows)", total=episodes, status="")
            result = train_agent(
                x,
                y,
                len(classes),
                final_config,
                on_episode=lambda s: progress.update(
                    task, advance=1, status=f"reward {s.mean_reward:+.3f}, ε {s.epsilon:.2f}"
                ),
            )
        trained = calibrated_probabilities(result.network, temperature, x)
        graph_bytes = export_onnx(result.network, temperature, x.shape[1])
        arrays = network_arrays(result.network, temperature)
    finally:
        torch.set_num_threads(threads)

    import onnx

    graph = onnx.load_from_string(graph_bytes)
    served = run_onnx(graph, x)
    difference = float(np.max(np.abs(served - trained)))
    if difference > EXPORT_ATOL or np.any(served.argmax(1) != trained.argmax(1)):
        raise RuntimeError(
            f"the exported DQN does not reproduce the trained network (max difference "
            f"{difference:.2e}); not writing it"
        )
    label = np.asarray(classes, dtype=object)
    oof_pred = label[oof_q.argmax(axis=1)]
    fitted_pred = label[served.argmax(axis=1)]
    cv = cv_report(dataset.y, cv_folds, oof_pred, classes, seed=seed)
    cv["nested"] = nested
    metrics: dict[str, Any] = {
        "split": "cross-validation",
        # Headline figures (what model listings show): the means over the CV folds.
        "macro_f1": cv["macro_f1"]["mean"],
        "accuracy": cv["accuracy"]["mean"],
        "cv": cv,
        "selection": {
            "rule": "episodes with the best mean CV macro-F1 (early stopping on CV)",
            "chosen": {"episodes": episodes},
            "curve": curve,
        },
        "calibration": {
            "method": "temperature scaling of softmax(mean Q) fitted on out-of-fold NLL",
            "temperature": round(temperature, 6),
            "out_of_fold_ece_before": round(expected_calibration_error(softmax(oof_q), y), 6),
            "out_of_fold_ece_after": round(
                expected_calibration_error(softmax(oof_q, temperature), y), 6
            ),
        },
        "training_rows": {
            "note": "the final agent on the rows it was trained on (optimistic)",
            "accuracy": round(float(np.mean(fitted_pred == dataset.y)), 6),
            "macro_f1": round(macro_f1(y, served.argmax(axis=1), len(classes)), 6),
        },
    }
    baseline = _baseline_cv(baseline_dir)
    if baseline is not None:
        # Nested figures on both sides when the baseline has one (older versions do not).
        nested_baseline = baseline["nested_macro_f1"]
        mine = nested["macro_f1"]["mean"] if nested_baseline else cv["macro_f1"]["mean"]
        theirs = (nested_baseline or baseline["macro_f1"])["mean"]
        gap = float(theirs) - float(mine)
        metrics["comparison"] = {
            "measure": (
                "nested CV macro-F1 (count chosen inside each fold) on the same folds"
                if nested_baseline
                else "mean CV macro-F1 on the same folds"
            ),
            "dqn_macro_f1": mine,
            "baseline_macro_f1": theirs,
            "baseline": baseline,
            "gap": round(gap, 6),
            "target": {"macro_f1": TARGET_MACRO_F1, "max_gap": MAX_GAP_TO_BASELINE},
            "target_met_in_cv": bool(mine >= TARGET_MACRO_F1 and gap <= MAX_GAP_TO_BASELINE),
        }
    seconds = round(time.perf_counter() - started, 2)
    payload = npz_bytes(arrays)
    manifest = classifier_manifest(
        version,
        (
            "Network intrusion classifier trained by deep Q-learning (RL-IDS) as a contextual "
            "bandit: for each flow the agent picks a class and is rewarded for a correct one. "
            f"An ensemble of {config.ensemble} Q-network(s); probabilities are a "
            "temperature-calibrated softmax of the mean Q-values."
        ),
        classes,
        x,
        metrics,
        {
            **data_provenance(dataset, max_rows),
            "training_rows": "all rows (no held-out split; figures are cross-validated)",
            "cv_folds": {"folds": folds, "seed": seed, "same_as": "ids gradient-boosted trees"},
            "seed": seed,
            "algorithm": "deep Q-learning, one-step contextual bandit (mlgate.training.dqn)",
            "dqn": {
                **final_config.as_dict(),
                "episodes_cap_in_cv": config.episodes,
                "reward": "+w if the chosen class is right, -w if wrong; "
                "w = (n / (k * n_class)) ** reward_rarity_power, mean 1 over flows",
                "replay": "class c drawn with probability proportional to "
                "n_c ** (1 - replay_balance)",
                "state": "the flow's 77 features: signed log1p, robust scaling (median, IQR "
                "of the training flows), clipped to +-clip",
                "episode": "one pass over the training flows; each flow is a one-step episode",
            },
            "episodes": [
                {
                    "episode": s.episode,
                    "epsilon": s.epsilon,
                    "mean_reward": round(s.mean_reward, 6),
                    "loss": round(s.loss, 6),
                }
                for s in result.history
            ],
            "served_as": {
                "graph": "torch.onnx export: preprocessing, Q-networks, softmax(mean Q / T)",
                "max_abs_difference_to_torch": difference,
            },
            "training_seconds": seconds,
            "torch": torch.__version__,
            **environment(),
        },
        explainer=explainer_record(
            "integrated_gradients",
            payload,
            "softmax logit mean(Q) / T of the class",
            "the logit at the reference profile's medians (reference.quantiles.p50)",
        ),
    )
    version_dir, _, runtime = write_version(
        repository,
        manifest,
        onnx_model=graph,
        force=force,
        extra_files={manifest["explainer"]["file"]: payload},
    )
    if not np.allclose(runtime.run(x), served, rtol=0, atol=1e-12):
        raise RuntimeError(f"{version_dir}: the saved model does not reproduce its outputs")
    return version_dir


def cv_macro_f1(metrics: dict[str, Any], *, nested: bool = True) -> float:
    """The CV macro-F1 a version's metrics record: the nested figure (``cv.nested``) if
    asked for and recorded, else the mean over the folds (validation macro-F1 for old
    versions)."""
    if "cv" in metrics:
        cv = metrics["cv"]
        return float((cv["nested"] if nested and "nested" in cv else cv)["macro_f1"]["mean"])
    return float(metrics["validation"]["macro_f1"])


def promote_better(repository: Path, candidates: Sequence[Path]) -> str:
    """Point ``stable`` at the candidate with the best CV macro-F1 (ties: the first
    candidate); return it. Versions are compared by their nested figures when every
    candidate recorded one, else by their mean CV macro-F1."""
    manifests = [load_manifest(d) for d in candidates]
    nested = all("nested" in m.metrics.get("cv", {}) for m in manifests)
    scored = [
        (cv_macro_f1(m.metrics, nested=nested), -i, m.version) for i, m in enumerate(manifests)
    ]
    best = max(scored)[2]
    model_file = Path(repository) / MODEL_NAME / MODEL_FILE
    data: dict[str, Any] = {}
    if model_file.exists():
        data = yaml.safe_load(model_file.read_text(encoding="utf-8")) or {}
    data.setdefault("aliases", {})["stable"] = best
    model_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return best
