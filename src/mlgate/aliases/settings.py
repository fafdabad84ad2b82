"""Alias moves configuration (``MLGATE_ALIASES__*``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AliasSettings(BaseModel):
    """Aliases moved through the admin API, kept in the database."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    poll_interval_s: float = Field(default=2.0, ge=0, le=3600)
    """How often each worker reads the moved aliases from the database: a move reaches
    every worker within this time (0: only at start and in the worker that moved it)."""
