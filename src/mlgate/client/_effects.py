"""The effects a flow yields, and the description of one HTTP call.

A *flow* is a generator that yields effects and gets their outcome back (see
:mod:`mlgate.client._core`); the shells perform them with blocking or asynchronous I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Send:
    """Send a request; the outcome is the response, or the ``httpx.TransportError``."""

    request: httpx.Request


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Authenticate:
    """The headers that authenticate the next request (fetching a token first when
    needed, one fetch at a time); ``refused``: the token the server just refused."""

    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Gather:
    """Run flows concurrently, at most ``limit`` at once; the outcome is their results
    in order (the first failure is raised and the rest are abandoned)."""

    flows: list[Generator[Any, Any, Any]]
    limit: int


Effect = Send | Sleep | Authenticate | Gather
Flow = Generator[Effect, Any, T]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP call: what to send and how to read a successful answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    idempotent: bool
    """Safe to repeat: retried on 429, 503 and transport errors."""
    params: dict[str, str] | None = None
    json: Any = None
    form: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


def read_json(response: httpx.Response) -> Any:
    return response.json()


def url_path(*parts: str) -> str:
    return "/" + "/".join(quote(p, safe="") for p in parts)
