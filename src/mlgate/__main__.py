"""``python -m mlgate`` runs the CLI."""

from mlgate.cli.main import cli

cli()
