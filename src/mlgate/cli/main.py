"""The ``mlgate`` command line: serve, models, train, db, users, keys, eval, predict."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

import mlgate
from mlgate.cli.db import db_group
from mlgate.cli.eval import eval_group
from mlgate.cli.keys import keys_group
from mlgate.cli.predict import predict
from mlgate.cli.train import train
from mlgate.cli.users import users_group
from mlgate.settings import Settings

if TYPE_CHECKING:
    from mlgate.registry.registry import ModelRegistry

FACTORY = "mlgate.api.app:create_app"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(mlgate.__version__, prog_name="mlgate")
def cli() -> None:
    """mlgate: a production gateway for ML inference."""


@cli.command()
@click.option("--host", help="Interface to bind (default 127.0.0.1; 0.0.0.0 in containers).")
@click.option("--port", type=int, help="TCP port (default 8000).")
@click.option("--workers", type=click.IntRange(1, 64), help="Worker processes (default 1).")
@click.option("--reload", "auto_reload", is_flag=True, help="Restart on code changes (dev).")
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository directory (default: the bundled models).",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Log level."
)
def serve(
    host: str | None,
    port: int | None,
    workers: int | None,
    auto_reload: bool,
    repository: Path | None,
    log_level: str | None,
) -> None:
    """Run the HTTP server (uvicorn) on the app factory.

    Options override the matching MLGATE_* environment variables; workers read the
    same environment, so every worker gets the same settings.
    """
    import uvicorn

    from mlgate.logs import logging_config
    from mlgate.server.limits import ConnectionLimits
    from mlgate.server.protocol import guarded_protocol

    overrides = {
        "MLGATE_SERVER__HOST": host,
        "MLGATE_SERVER__PORT": port,
        "MLGATE_SERVER__WORKERS": workers,
        "MLGATE_MODELS__REPOSITORY": str(repository.resolve()) if repository else None,
        "MLGATE_OBSERVABILITY__LOG_LEVEL": log_level,
    }
    # Workers are new processes that build their settings from the environment.
    saved = dict(os.environ)
    os.environ.update({k: str(v) for k, v in overrides.items() if v is not None})
    try:
        settings = _checked_serve_settings(auto_reload)
    except click.UsageError:
        os.environ.clear()
        os.environ.update(saved)
        raise
    obs = settings.observability
    server = settings.server
    workers = server.workers if not auto_reload else 1
    with contextlib.ExitStack() as stack:
        metrics = settings.metrics
        if metrics.enabled and (workers > 1 or metrics.port is not None):
            # Every worker counts into this run's own directory; a scrape adds them up.
            from mlgate.observability.multiprocess import metrics_directory, metrics_port

            directory = stack.enter_context(metrics_directory())
            if metrics.port is not None:
                stack.enter_context(metrics_port(directory, metrics.port_host, metrics.port))
        uvicorn.run(
            FACTORY,
            factory=True,
            host=server.host,
            port=server.port,
            workers=workers if not auto_reload else None,
            reload=auto_reload,
            http=guarded_protocol(ConnectionLimits.from_settings(server)),
            timeout_keep_alive=server.keep_alive_timeout_s,  # type: ignore[arg-type]
            timeout_graceful_shutdown=server.shutdown_timeout_s,  # type: ignore[arg-type]
            log_config=logging_config(obs.log_level, obs.json_logs),
            log_level=obs.log_level,
            # mlgate writes its own access line (mlgate.access), one per request.
            access_log=False,
            proxy_headers=False,
            server_header=False,
        )


def _checked_serve_settings(auto_reload: bool) -> Settings:
    try:
        settings = Settings()
    except Exception as exc:
        raise click.UsageError(f"invalid configuration: {exc}") from None
    if auto_reload and settings.server.workers > 1:
        raise click.UsageError("--reload runs a single process: drop --workers or --reload")
    repo = settings.models.resolved_repository
    if not repo.is_dir():
        raise click.UsageError(
            f"model repository {repo} does not exist: pass --repository or set "
            "MLGATE_MODELS__REPOSITORY"
        )
    return settings


@cli.command("secret")
@click.option(
    "--bytes",
    "n_bytes",
    type=click.IntRange(32, 1024),
    default=48,
    show_default=True,
    help="Random bytes (printed URL-safe base64, 4 characters per 3 bytes).",
)
def secret(n_bytes: int) -> None:
    """Print a new random secret for MLGATE_AUTH__JWT_SECRET (and nothing else)."""
    import secrets

    click.echo(secrets.token_urlsafe(n_bytes))


@cli.command("config")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (as in the README).")
def config_table(markdown: bool) -> None:
    """List every setting: environment variable, default and meaning."""
    from mlgate.settings import settings_rows

    rows = settings_rows()
    if markdown:
        click.echo("| Variable | Default | Meaning |")
        click.echo("|---|---|---|")
        for env, default, meaning in rows:
            click.echo(f"| `{env}` | `{default}` | {meaning} |")
        return
    table = Table()
    for column in ("variable", "default", "meaning"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@cli.group()
def models() -> None:
    """Inspect the model repository and reload a running server."""


@models.command("list")
@click.option(
    "--repository",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Model repository directory (default: the configured one).",
)
@click.option(
    "--twin-timeout",
    type=click.FloatRange(min=0),
    default=180.0,
    show_default=True,
    help="Seconds to wait for the ONNX twins of scikit-learn classifiers (0: do not wait).",
)
def models_list(repository: Path | None, twin_timeout: float) -> None:
    """Load every version (as the server would) and show what loads and what fails.

    It waits for the ONNX twins of scikit-learn classifiers, which are kept in the twin
    cache: run it where the servers will start (or at image build) and their first start
    serves the twins at once, without loading scikit-learn.
    """
    from mlgate.registry.registry import ModelRegistry

    settings = Settings()
    repo = repository or settings.models.resolved_repository
    registry = ModelRegistry(
        repo,
        default_model=settings.models.default_model,
        follow_symlinks=settings.models.follow_symlinks,
        load_options=settings.models.load_options(),
    )
    report = registry.reload()
    _wait_for_twins(registry, twin_timeout)
    table = Table(title=f"models in {repo}")
    columns = ("model", "version", "task", "runtime", "execution", "aliases", "latency µs")
    for column in (*columns, "status"):
        table.add_column(column)
    for entry in registry.models():
        by_version: dict[str, list[str]] = {}
        for alias, target in entry.aliases.items():
            by_version.setdefault(target, []).append(alias)
        for version, mv in sorted(entry.versions.items()):
            table.add_row(
                entry.name,
                version,
                mv.manifest.task,
                mv.manifest.runtime,
                str(getattr(mv.runtime, "execution", mv.manifest.runtime)),
                ", ".join(sorted(by_version.get(version, []))),
                f"{mv.single_row_us:.0f}",
                "ok",
            )
        for version in entry.errors:
            table.add_row(entry.name, version, "", "", "", "", "", "[red]failed[/red]")
    Console().print(table)
    for entry in registry.models():
        for version, error in entry.errors.items():
            click.echo(f"{entry.name}/{version}: {error}", err=True)
    if report.failed:
        sys.exit(1)


def _wait_for_twins(registry: ModelRegistry, timeout: float) -> None:
    """Wait (up to ``timeout`` s in all) for the versions whose ONNX twin is being made."""
    pending: list[tuple[str, str, threading.Event]] = []
    for entry in registry.models():
        for version, mv in sorted(entry.versions.items()):
            converted = getattr(mv.runtime, "converted", None)
            if isinstance(converted, threading.Event) and not converted.is_set():
                pending.append((entry.name, version, converted))
    if not pending or timeout <= 0:
        return
    deadline = time.monotonic() + timeout
    with Console(stderr=True).status(f"making {len(pending)} ONNX twin(s)") as status:
        for name, version, converted in pending:
            status.update(f"making the ONNX twin of {name}/{version}")
            if not converted.wait(max(0.0, deadline - time.monotonic())):
                click.echo(
                    f"{name}/{version}: its ONNX twin is not ready after {timeout:g} s", err=True
                )
                return


@models.command("reload")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True, help="Server URL.")
@click.option("--api-key", envvar="MLGATE_API_KEY", help="Admin API key (or MLGATE_API_KEY).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
def models_reload(url: str, api_key: str | None, timeout: float) -> None:
    """Ask a running server to rescan its repository and print what changed."""
    import httpx

    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v1/admin/models/reload", headers=headers, timeout=timeout
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise click.ClickException(f"reload failed ({response.status_code}): {response.text}")
    click.echo(response.text)
    if response.json().get("failed"):
        sys.exit(1)


for _group in (db_group, users_group, keys_group, train):
    cli.add_command(_group)
cli.add_command(eval_group)
cli.add_command(predict)


def main() -> None:  # pragma: no cover - console entry point
    cli()


if __name__ == "__main__":  # pragma: no cover
    main()
