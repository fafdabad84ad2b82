#!/usr/bin/env python
"""mlgate's benchmark: mlgate against MLServer and a bare-ASGI ceiling, in one run.

Each server in turn is started pinned to one core, checked (right status, right class
for known rows), then loaded by wrk pinned to the other core. Prints one table (medians
of the rounds) and issue 9's targets; keeps wrk's output and a JSON summary under
bench/results/<timestamp>/. See bench/README.md.

Run with the project's virtualenv: ``make bench`` (or ``.venv/bin/python bench/run.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from benchkit.configs import CONFIGS, config_by_key
from benchkit.tools import BENCH_DIR, BenchError, missing_tools
from benchkit.workloads import WORKLOADS

PROFILE_WORKLOADS = ("W1", "W2-json", "W2-bin")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=(
            "Benchmark mlgate against MLServer 1.7.1 and a bare Starlette/uvicorn ceiling "
            "(server pinned to one core, wrk to the other). Needs Debian's wrk."
        ),
        epilog="Examples: make bench; make bench ARGS='--quick'; bench/profile.sh",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds per cell; the table shows medians (%(default)s)",
    )
    parser.add_argument(
        "--duration", type=float, default=15, help="seconds per round (%(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=3, help="unmeasured warm-up seconds per cell (%(default)s)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="one 3-second round, 1 s warm-up (harness check)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="CONFIG",
        choices=list(config_by_key()),
        help=f"configurations to run (default all: {', '.join(config_by_key())})",
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        metavar="W",
        choices=list(WORKLOADS),
        help=f"workloads to run (default all: {', '.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--server-core", type=int, default=1, help="core the servers run on (%(default)s)"
    )
    parser.add_argument(
        "--load-core", type=int, default=0, help="core wrk (and this script) run on (%(default)s)"
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="Redis for configuration (b) (%(default)s)",
    )
    parser.add_argument(
        "--no-bundled",
        action="store_true",
        help="serve only the benchmark model in mlgate (default: the bundled models too)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of the table: py-spy on one mlgate configuration under W1 and W2",
    )
    parser.add_argument(
        "--profile-config",
        default="mlgate",
        metavar="CONFIG",
        choices=list(config_by_key()),
        help="configuration --profile runs (%(default)s)",
    )
    parser.add_argument(
        "--profile-seconds", type=float, default=10, help="seconds py-spy records (%(default)s)"
    )
    parser.add_argument(
        "--project-venv",
        action="store_true",
        help=(
            "serve mlgate from the project's virtualenv (with its dev extras) instead of "
            "bench/.venv-mlgate, the core install a deployment has"
        ),
    )
    parser.add_argument("--results", type=Path, help="results directory (default: a new one)")
    parser.add_argument("--list", action="store_true", help="list configurations and exit")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3, 1
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--rounds must be >= 1, --duration > 0, --warmup >= 0")
    return args


def list_configs() -> None:
    for config in CONFIGS:
        print(f"{config.key:18} {config.label}  [{', '.join(config.workloads)}]")
    print()
    for w in WORKLOADS.values():
        print(f"{w.name:18} {w.about}")


def _redacted(settings: dict[str, str]) -> dict[str, str]:
    return {k: ("(secret)" if "SECRET" in k else v) for k, v in settings.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_configs()
        return 0
    problems = missing_tools()
    if problems:
        print("The bench cannot run yet:\n" + "\n".join(f"  - {p}" for p in problems))
        return 2
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    # Imported here so that --help and --list work without mlgate's dependencies loaded.
    from benchkit import model as bench_model
    from benchkit import principal, report, runner, tools

    from mlgate.settings import settings_rows

    tools.check_cores(args.server_core, args.load_core)
    # The harness stays off the server's core (servers are pinned explicitly).
    os.sched_setaffinity(0, {args.load_core})
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (args.results or BENCH_DIR / "results" / stamp).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"results: {run_dir}")

    selected = [config_by_key()[k] for k in args.only] if args.only else list(CONFIGS)
    if args.profile:
        selected = [config_by_key()[args.profile_config]]
    if args.profile or any(c.kind == "mlserver" for c in selected):
        tools.ensure_venv(run_dir / "venv-install.log")
    mlgate_command = Path(sys.executable).with_name("mlgate")
    if not args.project_venv and any(c.kind == "mlgate" for c in selected):
        mlgate_command = tools.ensure_mlgate_venv(run_dir / "venv-install.log")
    info = tools.machine_info()
    info["mlgate_environment"] = (
        "the project's virtualenv (dev extras)"
        if args.project_venv
        else f"{tools.MLGATE_VENV.name}: core install, no extras"
    )

    print("training the model (MLPClassifier(128, 64) on the CICIDS2017 sample)")
    model = bench_model.train(run_dir / "model")
    mlgate_repo = bench_model.write_mlgate_repository(
        model, run_dir / "model" / "mlgate-repository", bundled=not args.no_bundled
    )
    mlserver_repo = bench_model.write_mlserver_repository(
        model, run_dir / "model" / "mlserver-repository"
    )
    mlgate_settings = {
        "MLGATE_DATABASE_URL": principal.database_url(run_dir / "servers"),
        "MLGATE_AUTH__JWT_SECRET": principal.jwt_secret(),
        "MLGATE_ENV": "production",
        "MLGATE_MODELS__REPOSITORY": str(mlgate_repo),
        # Kept twins live with this run: its first mlgate start makes the MLP's twin (and
        # loads scikit-learn), the later ones start from the kept twin; both are reported.
        # (An MLPClassifier is served by numpy since 2026-12-03: no twin is made.)
        "MLGATE_MODELS__TWIN_CACHE_DIR": str(run_dir / "servers" / "onnx-twins"),
        # Parsed manifests too: the run's first start parses the YAML, the later ones not.
        "MLGATE_MODELS__MANIFEST_CACHE_DIR": str(run_dir / "servers" / "manifests"),
    }
    if args.no_bundled:
        mlgate_settings["MLGATE_MODELS__DEFAULT_MODEL"] = bench_model.MODEL_NAME
    (run_dir / "servers").mkdir(exist_ok=True)
    keys = principal.create_api_keys(mlgate_settings)
    options = runner.Options(
        rounds=args.rounds,
        duration_s=args.duration,
        warmup_s=args.warmup,
        server_core=args.server_core,
        load_core=args.load_core,
        redis_url=args.redis_url,
        redis_prefix=f"mlgate-bench:{stamp}:{os.getpid()}:rl:",
    )
    ctx = runner.Context(
        options=options,
        run_dir=run_dir,
        model=model,
        mlgate_repo=mlgate_repo,
        mlserver_repo=mlserver_repo,
        known_settings={row[0] for row in settings_rows()},
        mlgate_settings=mlgate_settings,
        api_key=keys.load,
        admin_key=keys.admin,
        mlgate_command=mlgate_command,
        redis_up=tools.redis_available(args.redis_url),
    )
    try:
        if args.profile:
            wanted = [w for w in PROFILE_WORKLOADS if w in (args.workloads or WORKLOADS)]
            written = runner.profile_config(selected[0], wanted, args.profile_seconds, ctx)
            print("\nwritten:\n" + "\n".join(f"  {p}" for p in written))
            for path in written:
                if path.name.endswith(".top.txt"):
                    print("\n" + "\n".join(path.read_text().splitlines()[:16]))
            return 0
        cells: list[report.Cell] = []
        wanted = args.workloads or list(WORKLOADS)
        for config in selected:
            try:
                cells += runner.run_config(config, wanted, ctx)
            except (BenchError, RuntimeError, subprocess.TimeoutExpired) as exc:
                # One server that fails does not cost the others' measurements.
                print(f"{config.key}: FAILED: {exc}")
                failed = runner.failed_cells(config, str(exc).splitlines()[0])
                cells += [c for c in failed if c.workload in wanted]
    finally:
        if ctx.redis_up:
            tools.delete_redis_keys(args.redis_url, options.redis_prefix)

    info["load_average_at_end"] = tools.load_average()
    outcomes = report.targets(cells)
    text = _report_text(info, args, model, cells, outcomes)
    print("\n" + text)
    (run_dir / "table.md").write_text(text + "\n")
    summary: dict[str, Any] = {
        **info,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "server_core": args.server_core,
        "load_core": args.load_core,
        "model": {
            "estimator": "MLPClassifier(hidden_layer_sizes=(128, 64))",
            "data": str(bench_model.DATA.relative_to(tools.ROOT)),
            "classes": model.classes,
            "n_features": model.n_features,
            "training_accuracy": round(model.training_accuracy, 4),
        },
        "mlgate_settings": _redacted(mlgate_settings),
        "configs": {c.key: {"label": c.label, "env": dict(c.env)} for c in selected},
        "cells": [c.as_dict() for c in cells],
        "targets": [o.__dict__ for o in outcomes],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nraw results: {run_dir}")
    trouble = any(c.status == "failed" or c.errors for c in cells)
    return 1 if trouble else 0


def _report_text(
    info: dict[str, Any],
    args: argparse.Namespace,
    model: Any,
    cells: list[Any],
    outcomes: list[Any],
) -> str:
    from benchkit import report

    head = (
        f"{info['date']} · {info['machine']} · {info['cpu_model']} · {info['cores']} cores · "
        f"mlgate {info['versions']['mlgate']} ({info['git']}) served from "
        f"{info.get('mlgate_environment', '?')} · "
        f"{args.rounds} round(s) of {args.duration:g} s, medians · server on core "
        f"{args.server_core}, wrk on core {args.load_core} · load average "
        f"{' '.join(map(str, info['load_average_at_start']))} at start"
    )
    notes = [
        f"Model: MLPClassifier(128, 64), {model.n_features} features, {len(model.classes)} "
        "classes, trained on the CICIDS2017 sample in data/.",
        "× MLServer: rows/s against MLServer's same workload (W2-bin against its W2 JSON); "
        "× ceiling: against the bare Starlette app under the same workload.",
        "CPU %: what the server's processes used of their core during the rounds; under 100 "
        "means the machine gave the server (or wrk) less than a core, or the server waited.",
    ]
    return "\n".join(
        [
            head,
            "",
            report.table(cells),
            "",
            *notes,
            "",
            "Targets of issue 9:",
            *(o.line() for o in outcomes),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
