"""One bench run: each configuration in turn, started, checked, loaded, stopped."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchkit import profiling
from benchkit.checks import CheckResult, check_server
from benchkit.configs import ServerConfig, resolve_settings
from benchkit.model import BenchModel
from benchkit.report import Cell, Status
from benchkit.servers import (
    RunningServer,
    base_env,
    cpu_percent,
    free_port,
    log_problems,
    server_argv,
    start_server,
)
from benchkit.tools import BenchError
from benchkit.workloads import MODEL_NAME, WORKLOADS, Request, build_request, run_wrk, wrk_argv


@dataclass(frozen=True)
class Options:
    rounds: int
    duration_s: float
    warmup_s: float
    server_core: int
    load_core: int
    redis_url: str
    redis_prefix: str


@dataclass
class Context:
    """What every configuration needs: options, the model, where things go, credentials."""

    options: Options
    run_dir: Path
    model: BenchModel
    mlgate_repo: Path
    mlserver_repo: Path
    known_settings: set[str]
    mlgate_settings: dict[str, str]
    """Database, secret and repository: the same for every mlgate configuration."""
    api_key: str
    admin_key: str
    mlgate_command: Path
    """The ``mlgate`` command servers run (bench/.venv-mlgate's unless --project-venv)."""
    """Reads mlgate's ``/health/detailed`` (audit rows written and dropped) between rounds."""
    redis_up: bool


def _label(config: ServerConfig, features_on: list[str]) -> str:
    return config.label + (f" + {', '.join(features_on)}" if features_on else "")


def _cells(config: ServerConfig, label: str, status: Status, message: str) -> list[Cell]:
    return [
        Cell(config.key, label, config.kind, w, WORKLOADS[w].rows, status, message)
        for w in config.workloads
    ]


def failed_cells(config: ServerConfig, message: str) -> list[Cell]:
    """The cells of a configuration whose server could not be started or loaded."""
    return _cells(config, config.label, "failed", message)


def prepare(config: ServerConfig, ctx: Context) -> tuple[dict[str, str] | None, str, list[Cell]]:
    """The environment to start ``config`` with, its label, or the cells saying why not."""
    env = base_env()
    if config.kind != "mlgate":
        return env, config.label, []
    settings, on, missing, absent = resolve_settings(config, ctx.known_settings)
    label = _label(config, on)
    if absent:
        why = f"this mlgate has no {', '.join(absent)} setting yet"
        return None, label, _cells(config, label, "skipped", why)
    if config.redis:
        if not ctx.redis_up:
            why = f"Redis does not answer at {ctx.options.redis_url}"
            return None, label, _cells(config, label, "skipped", why)
        settings["MLGATE_REDIS_URL"] = ctx.options.redis_url
        settings["MLGATE_RATE_LIMIT__REDIS_KEY_PREFIX"] = ctx.options.redis_prefix
    if missing:
        print(f"  ({config.key}: not in this mlgate yet, so off: {', '.join(missing)})")
    env.update(ctx.mlgate_settings)
    env.update(settings)
    return env, label, []


def start(config: ServerConfig, env: dict[str, str], ctx: Context) -> RunningServer:
    port = free_port()
    repo = ctx.mlserver_repo if config.kind == "mlserver" else ctx.mlgate_repo
    workdir = ctx.run_dir / "servers" / config.key
    workdir.mkdir(parents=True, exist_ok=True)
    return start_server(
        config,
        server_argv(config, port, repo, ctx.mlgate_command),
        env=env,
        port=port,
        log=ctx.run_dir / "logs" / f"{config.key}.log",
        core=ctx.options.server_core,
        cwd=workdir,
    )


def auth_headers(config: ServerConfig, ctx: Context) -> dict[str, str]:
    return {"X-API-Key": ctx.api_key} if config.kind == "mlgate" else {}


def _body_file(ctx: Context, config: ServerConfig, workload: str, request: Request) -> Path:
    suffix = ".bin" if request.content_type == "application/octet-stream" else ".json"
    return request.write(ctx.run_dir / "bodies" / f"{config.kind}-{workload}{suffix}")


def checked_request(
    server: RunningServer, config: ServerConfig, workload: str, ctx: Context
) -> tuple[Request | None, CheckResult]:
    """The workload's request for this server, once sent and checked."""
    request = build_request(config.kind, WORKLOADS[workload], ctx.model)
    if request is None:
        return None, CheckResult(False, "not run on this server", skip=True)
    result = check_server(
        server.url,
        config.kind,
        WORKLOADS[workload],
        request,
        ctx.model,
        auth_headers(config, ctx),
    )
    return request, result


def load(
    server: RunningServer, config: ServerConfig, cell: Cell, request: Request, ctx: Context
) -> None:
    """Warm up, then the rounds; wrk's output of each is kept."""
    opts, workload = ctx.options, WORKLOADS[cell.workload]
    body = _body_file(ctx, config, cell.workload, request)
    raw_dir = ctx.run_dir / "wrk"
    raw_dir.mkdir(exist_ok=True)

    def argv(seconds: float) -> list[str]:
        return wrk_argv(
            server.url,
            body,
            request,
            connections=workload.connections,
            duration_s=seconds,
            load_core=opts.load_core,
            extra_headers=auth_headers(config, ctx),
        )

    if opts.warmup_s > 0:
        _, text = run_wrk(argv(opts.warmup_s), timeout_s=opts.warmup_s + 60)
        (raw_dir / f"{config.key}-{cell.workload}-warmup.txt").write_text(text)
    for n in range(1, opts.rounds + 1):
        before = audit_dropped(server, config, ctx)
        ticks = server.cpu_ticks()
        result, text = run_wrk(argv(opts.duration_s), timeout_s=opts.duration_s + 60)
        cpu = cpu_percent(server.cpu_ticks() - ticks, result.duration_s)
        after = audit_dropped(server, config, ctx)
        (raw_dir / f"{config.key}-{cell.workload}-round{n}.txt").write_text(text)
        cell.rounds.append(result)
        cell.cpu_pct.append(cpu)
        flag = f", {result.errors} ERRORS" if result.errors else ""
        if before is not None and after is not None:
            # Rows answered in the round, and how many of them the audit log let go.
            answered = result.requests * cell.rows
            cell.audit_rows += answered
            cell.audit_dropped = (cell.audit_dropped or 0) + after - before
            if after > before:
                flag += f", audit dropped {after - before:,} of {answered:,} rows"
        print(
            f"    round {n}: {result.req_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
            f"p99 {result.p99_ms:.2f} ms, server CPU {cpu:.0f}%{flag}"
        )


def audit_dropped(server: RunningServer, config: ServerConfig, ctx: Context) -> int | None:
    """Audit rows mlgate has not recorded because its queue was full, so far (from
    ``/health/detailed``); None for other servers, with the audit log off, or when the
    answer cannot be read."""
    if config.kind != "mlgate":
        return None
    try:
        response = httpx.get(
            f"{server.url}/health/detailed", headers={"X-API-Key": ctx.admin_key}, timeout=10
        )
        audit = response.json()["checks"]["audit_queue"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        print(f"  (audit counters unreadable: {exc})")
        return None
    dropped = audit.get("dropped") if isinstance(audit, dict) else None
    return int(dropped) if isinstance(dropped, int) else None


def wait_steady(server: RunningServer, config: ServerConfig, ctx: Context) -> str:
    """mlgate serves a scikit-learn classifier through an ONNX twin it makes in the
    background after it is ready (or one kept from an earlier start): wait (up to a
    minute) until the model's execution is settled, so that the rounds measure the steady
    state; say and return which serves ("" for other servers)."""
    if config.kind != "mlgate":
        return ""
    deadline = time.monotonic() + 60
    execution = "?"
    while time.monotonic() < deadline:
        try:
            info = httpx.get(
                f"{server.url}/v1/models/{MODEL_NAME}", headers=auth_headers(config, ctx), timeout=5
            ).json()
            execution = str(info["versions"][0].get("execution", ""))
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            execution = "?"
        if "being made" not in execution and execution != "?":
            break
        time.sleep(0.5)
    print(f"  {MODEL_NAME} served by: {execution}")
    return execution


def run_config(config: ServerConfig, workloads: list[str], ctx: Context) -> list[Cell]:
    """Start the server, check and load it with each workload, stop it."""
    env, label, skipped = prepare(config, ctx)
    wanted = [w for w in config.workloads if w in workloads]
    if env is None:
        print(f"{config.key}: skipped ({skipped[0].message})")
        return [c for c in skipped if c.workload in wanted]
    print(f"{config.key}: starting ({label})")
    server = start(config, env, ctx)
    print(f"  ready in {server.ready_s:.2f} s, RSS {server.rss_mb():.0f} MB")
    served_by = wait_steady(server, config, ctx)
    cells: list[Cell] = []
    try:
        for workload in wanted:
            cell = Cell(config.key, label, config.kind, workload, WORKLOADS[workload].rows)
            cell.ready_s = server.ready_s
            cell.served_by = served_by
            cells.append(cell)
            request, check = checked_request(server, config, workload, ctx)
            if request is None or not check.ok:
                cell.status = "skipped" if check.skip else "failed"
                cell.message = check.message
                print(f"  {workload}: {cell.status}: {check.message}")
                continue
            print(f"  {workload}: answers checked; {WORKLOADS[workload].about}")
            try:
                load(server, config, cell, request, ctx)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                cell.status, cell.message = "failed", str(exc).splitlines()[0]
                print(f"  {workload}: FAILED: {exc}")
                continue
            cell.rss_mb = server.rss_mb()
    finally:
        server.stop()
    problems = log_problems(server.log)
    for cell in cells:
        cell.log_errors = problems
    if problems:
        print(f"  {problems} error or traceback lines in {server.log}")
    return cells


def profile_config(
    config: ServerConfig, workloads: list[str], seconds: float, ctx: Context
) -> list[Path]:
    """py-spy on the server while wrk loads it with each workload; the files written."""
    env, label, skipped = prepare(config, ctx)
    if env is None:
        raise BenchError(f"cannot profile {config.key}: {skipped[0].message}")
    out_dir = ctx.run_dir / "profile"
    out_dir.mkdir(parents=True, exist_ok=True)
    server = start(config, env, ctx)
    wait_steady(server, config, ctx)
    written: list[Path] = []
    try:
        for workload in workloads:
            request, check = checked_request(server, config, workload, ctx)
            if request is None or not check.ok:
                print(f"  {workload}: not profiled: {check.message}")
                continue
            body = _body_file(ctx, config, workload, request)
            load_argv = wrk_argv(
                server.url,
                body,
                request,
                connections=WORKLOADS[workload].connections,
                duration_s=seconds + 4,
                load_core=ctx.options.load_core,
                extra_headers=auth_headers(config, ctx),
            )
            collapsed = out_dir / f"{config.key}-{workload}.collapsed"
            print(f"  {workload}: py-spy for {seconds:g} s under load")
            with subprocess.Popen(load_argv, stdout=subprocess.PIPE, text=True) as wrk:
                time.sleep(1.5)  # let the connections open and the server warm up
                pid = server.process.pid
                spy = profiling.py_spy_argv(pid, collapsed, seconds, ctx.options.load_core)
                before, started = profiling.thread_cpu(pid), time.perf_counter()
                profiling.record(spy, out_dir / f"{config.key}-{workload}.py-spy.log", seconds + 60)
                elapsed = time.perf_counter() - started
                cpu = profiling.cpu_lines(pid, before, profiling.thread_cpu(pid), elapsed)
                out, _ = wrk.communicate(timeout=seconds + 60)
            (out_dir / f"{config.key}-{workload}.wrk.txt").write_text(out)
            title = f"{label}, {workload} ({MODEL_NAME})"
            written += [collapsed, *profiling.write_reports(collapsed, title, cpu)]
    finally:
        server.stop()
    return written
