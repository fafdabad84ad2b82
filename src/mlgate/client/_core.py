"""The client's logic, written once for the sync and the async client (sans-IO).

Every API call is a *flow*: a generator that yields effects - :class:`Send` a request,
:class:`Sleep`, :class:`Authenticate`, :class:`Gather` sub-flows concurrently - and gets
their outcome back, then returns the call's result. The flow builds requests,
interprets answers, retries, refreshes tokens, chunks batches and pins versions; the
shells (:mod:`._sync`, :mod:`._async`) only perform the effects, with blocking or
asynchronous I/O.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

import mlgate
from mlgate.client import _tensors
from mlgate.client._admin import AdminCalls
from mlgate.client._auth import Credentials
from mlgate.client._effects import (
    Authenticate,
    Call,
    Flow,
    Gather,
    Send,
    Sleep,
    read_json,
    url_path,
)
from mlgate.client._exceptions import (
    AuthenticationError,
    InputError,
    MlgateClientError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ValidationError,
    error_from_response,
    error_from_transport,
)
from mlgate.client._models import (
    ArrayResult,
    BatchResult,
    Health,
    ModelInfo,
    ModelSummary,
    Prediction,
    Principal,
    ServerInfo,
)
from mlgate.client._retry import RetryPolicy, retry_after, retryable

T = TypeVar("T")
R = TypeVar("R")


#: A row named in a validation error: ``instances[3]...`` (v1) or ``inputs[0][3]...`` (v2).
_ROW_FIELD = re.compile(r"^(?:instances|inputs\[\d+\])\[(\d+)\]")
_MAX_ROWS = re.compile(r"the maximum is (\d+)")


def _row_of(error: ValidationError) -> int | None:
    for name in error.fields:
        match = _ROW_FIELD.match(name)
        if match:
            return int(match[1])
    return None


def _max_rows_of(error: ValidationError) -> int | None:
    """The server's batch limit, when the error says a batch exceeded it."""
    for detail in error.details if isinstance(error.details, list) else []:
        if isinstance(detail, dict) and isinstance(detail.get("max"), int):
            return int(detail["max"])
    match = _MAX_ROWS.search(error.message)
    return int(match[1]) if match else None


def chunk_ranges(total: int, size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` ranges of at most ``size`` rows covering ``total`` rows."""
    size = max(1, size)
    return [(start, min(start + size, total)) for start in range(0, total, size)]


@dataclass(frozen=True, slots=True)
class _Chunk(Generic[R]):
    """The answer for rows ``[start, stop)`` of a chunked call."""

    start: int
    result: R


class ClientCore(AdminCalls):
    """Builds requests, reads answers and decides what happens next; no I/O."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        retry: RetryPolicy,
        timeout: httpx.Timeout,
        concurrency: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url
        self.credentials = credentials
        self.retry = retry
        self.timeout = timeout
        self.concurrency = concurrency
        self.clock = clock
        self.max_batch_rows: int | None = None
        """The server's batch limit once learned (``GET /info`` or a 422 naming it)."""
        self.headers = {
            "User-Agent": f"mlgate-client/{mlgate.__version__}",
            "Accept": "application/json",
        }

    # -- one call, with retries and token refresh ---------------------------------------

    def build(self, call: Call[Any], auth: Mapping[str, str]) -> httpx.Request:
        headers = {**self.headers, **auth, **call.headers}
        content = call.content
        if call.json is not None:
            # NaN and Infinity go out as JSON tokens: the server applies the features'
            # substitution rules to them (httpx's own encoder refuses them).
            content = json.dumps(call.json, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        return httpx.Request(
            call.method,
            self.base_url + call.path,
            params=call.params,
            data=call.form,
            content=content,
            headers=headers,
            extensions={"timeout": self.timeout.as_dict()},
        )

    def call(self, call: Call[T]) -> Flow[T]:
        """Send ``call`` until it succeeds or may not be repeated; return its result."""
        started = self.clock()
        tries = 0
        renewed = False
        while True:
            auth: dict[str, str] = (yield Authenticate()) if call.auth else {}
            outcome = yield Send(self.build(call, auth))
            tries += 1
            if isinstance(outcome, httpx.Response):
                if outcome.is_success:
                    return call.parse(outcome)
                error: MlgateClientError | httpx.TransportError = error_from_response(outcome)
                if (
                    isinstance(error, AuthenticationError)
                    and self.credentials.uses_tokens
                    and call.auth
                    and not renewed
                ):
                    # The token expired early (clock skew, a server restart with a new
                    # secret): log in again once, then repeat the call.
                    renewed = True
                    yield Authenticate(refused=_bearer(auth))
                    continue
            else:
                error = outcome
            if not retryable(error, idempotent=call.idempotent) or tries >= self.retry.max_attempts:
                raise _client_error(error)
            wait = self.retry.wait(tries, retry_after(error))
            if wait is None or self.clock() - started + wait > self.retry.max_elapsed_s:
                raise _client_error(error)
            yield Sleep(wait)

    def fetch_token(self) -> Flow[None]:
        """Exchange the username and password for an access token (``POST /v1/token``)."""
        sent_at = self.clock()
        body = yield from self.call(
            Call(
                "POST", "/v1/token", read_json, True, form=self.credentials.token_form(), auth=False
            )
        )
        self.credentials.accept(body, sent_at)

    # -- service ------------------------------------------------------------------------

    def health(self) -> Flow[Health]:
        return self.call(
            Call("GET", "/health", lambda r: Health.from_json(r.json()), True, auth=False)
        )

    def info(self) -> Flow[ServerInfo]:
        info = yield from self.call(
            Call("GET", "/info", lambda r: ServerInfo.from_json(r.json()), True)
        )
        self.max_batch_rows = info.max_batch_rows
        return info

    def whoami(self) -> Flow[Principal]:
        return self.call(Call("GET", "/v1/users/me", lambda r: Principal.from_json(r.json()), True))

    def models(self) -> Flow[list[ModelSummary]]:
        return self.call(
            Call(
                "GET",
                "/v1/models",
                lambda r: [ModelSummary.from_json(m) for m in r.json()["models"]],
                True,
            )
        )

    def model(self, model: str, version: str | None = None) -> Flow[ModelInfo]:
        """A model's schema: its default version's, or ``version``'s (a version or alias)."""
        if version is None:
            return self.call(Call("GET", url_path("v1", "models", model), _model_info, True))
        return self.call(
            Call(
                "GET",
                url_path("v1", "models", model, "versions", version),
                lambda r: ModelInfo.from_version_json(r.json()),
                True,
            )
        )

    # -- predictions --------------------------------------------------------------------

    def predict(
        self,
        model: str,
        features: Sequence[float] | Mapping[str, float],
        *,
        version: str | None = None,
        device_id: str | None = None,
    ) -> Flow[Prediction]:
        body: dict[str, Any] = {"features": _features(features)}
        if device_id is not None:
            body["device_id"] = device_id

        def parse(response: httpx.Response) -> Prediction:
            row = response.json()
            return Prediction.from_row(
                row, row["model"], row["model_version"], row.get("device_id")
            )

        return self.call(
            Call(
                "POST",
                url_path("v1", "models", model, "predict"),
                parse,
                True,
                params=_version(version),
                json=body,
            )
        )

    def server_batch_limit(self) -> Flow[int | None]:
        """The server's batch limit: learned once from ``GET /info``; None when the
        credentials may not read it (a 422 will name it)."""
        if self.max_batch_rows is None:
            try:
                yield from self.info()
            except (PermissionDenied, NotFound):
                return None
        return self.max_batch_rows

    def _chunk_size(self, requested: int | None, limit: int | None) -> int | None:
        sizes = [s for s in (requested, limit) if s is not None]
        return min(sizes) if sizes else None

    def _chunked(
        self,
        total: int,
        send: Callable[[int, int, str | None], Flow[R]],
        version_of: Callable[[R], str],
        *,
        version: str | None,
        chunk_rows: int | None,
        concurrency: int | None,
        ordered: bool,
    ) -> Flow[list[_Chunk[R]]]:
        """Rows ``[0, total)`` in chunks under the server's limit, concurrently; every
        chunk after the first is pinned to the version the first was answered by, so
        that an alias moving mid-call cannot mix versions. ``ordered``: one chunk at a
        time (a device's readings)."""
        if total == 0:
            raise InputError("nothing to score: no rows given")
        if chunk_rows is not None and chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        limit = yield from self.server_batch_limit()
        size = self._chunk_size(chunk_rows, limit) or total
        head = (0, min(size, total))
        chunks = yield from self._send_range(head, send, version)
        pinned = version_of(chunks[0].result)
        # The first chunk may have taught a lower limit (a 422 naming it).
        size = self._chunk_size(chunk_rows, self.max_batch_rows) or size
        rest = [(head[1] + a, head[1] + b) for a, b in chunk_ranges(total - head[1], size)]
        if rest:
            flows = [self._send_range(span, send, pinned) for span in rest]
            width = 1 if ordered else (concurrency or self.concurrency)
            for part in (yield Gather(flows, width)):
                chunks.extend(part)
        return chunks

    def _send_range(
        self,
        span: tuple[int, int],
        send: Callable[[int, int, str | None], Flow[R]],
        version: str | None,
    ) -> Flow[list[_Chunk[R]]]:
        """One chunk; split (and sent in parts, in order) when the server finds it too
        large: a 413 (body or row budget), or a 422 naming a lower batch limit."""
        start, stop = span
        try:
            result = yield from send(start, stop, version)
        except PayloadTooLarge:
            if stop - start < 2:
                raise
            parts = chunk_ranges(stop - start, (stop - start + 1) // 2)
        except ValidationError as error:
            limit = _max_rows_of(error)
            if limit is not None and limit < stop - start:
                self.max_batch_rows = limit
                parts = chunk_ranges(stop - start, limit)
            else:
                row = _row_of(error)
                if row is not None:
                    error.row = start + row
                raise
        else:
            return [_Chunk(start, result)]
        chunks: list[_Chunk[R]] = []
        for a, b in parts:
            chunks.extend((yield from self._send_range((start + a, start + b), send, version)))
        return chunks

    def predict_batch(
        self,
        model: str,
        instances: Iterable[Sequence[float] | Mapping[str, float]],
        *,
        version: str | None = None,
        device_id: str | None = None,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> Flow[BatchResult]:
        """Many instances (JSON, v1), in chunks under the server's batch limit."""
        rows = [_features(r) for r in instances]

        def send(start: int, stop: int, pinned: str | None) -> Flow[dict[str, Any]]:
            body: dict[str, Any] = {"instances": rows[start:stop]}
            if device_id is not None:
                body["device_id"] = device_id
            return self.call(
                Call(
                    "POST",
                    url_path("v1", "models", model, "predict", "batch"),
                    read_json,
                    True,
                    params=_version(pinned),
                    json=body,
                )
            )

        chunks = yield from self._chunked(
            len(rows),
            send,
            lambda body: str(body["model_version"]),
            version=version,
            chunk_rows=chunk_rows,
            concurrency=concurrency,
            ordered=device_id is not None,
        )
        first = chunks[0].result
        predictions = [
            Prediction.from_row(row, c.result["model"], c.result["model_version"], device_id)
            for c in chunks
            for row in c.result["predictions"]
        ]
        ignored = sorted({name for c in chunks for name in c.result.get("ignored_features", [])})
        return BatchResult(
            model=first["model"],
            model_version=str(first["model_version"]),
            predictions=predictions,
            ignored_features=ignored,
            request_ids=[c.result.get("request_id", "") for c in chunks],
        )

    def predict_array(
        self,
        model: str,
        rows: Any,
        *,
        version: str | None = None,
        device_id: str | None = None,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> Flow[ArrayResult]:
        """A float matrix ``[N, n_features]`` (features in the model's order; NaN for a
        missing value) over the Open Inference Protocol with binary tensors both ways."""
        import numpy as np

        matrix = _tensors.as_matrix(rows)

        def send(
            start: int, stop: int, pinned: str | None
        ) -> Flow[tuple[dict[str, Any], dict[str, Any], str]]:
            content, headers = _tensors.infer_request(matrix[start:stop], device_id=device_id)
            path = (
                url_path("v2", "models", model, "versions", pinned, "infer")
                if pinned is not None
                else url_path("v2", "models", model, "infer")
            )

            def parse(response: httpx.Response) -> tuple[dict[str, Any], dict[str, Any], str]:
                header, outputs = _tensors.parse_infer_response(response)
                return header, outputs, response.headers.get("x-request-id", "")

            return self.call(Call("POST", path, parse, True, content=content, headers=headers))

        chunks = yield from self._chunked(
            len(matrix),
            send,
            lambda answer: str(answer[0]["model_version"]),
            version=version,
            chunk_rows=chunk_rows,
            concurrency=concurrency,
            ordered=device_id is not None,
        )
        header = chunks[0].result[0]
        names = list(chunks[0].result[1])
        outputs = {name: np.concatenate([c.result[1][name] for c in chunks]) for name in names}
        ids: list[str] = []
        for c in chunks:
            text = (c.result[0].get("parameters") or {}).get("prediction_ids", "")
            ids.extend(text.split(",") if text else [])
        return ArrayResult(
            model=header["model_name"],
            model_version=str(header["model_version"]),
            outputs=outputs,
            prediction_ids=ids,
            request_ids=[c.result[2] for c in chunks],
        )


def _model_info(response: httpx.Response) -> ModelInfo:
    return ModelInfo.from_model_json(response.json())


def _version(version: str | None) -> dict[str, str] | None:
    return {"version": version} if version is not None else None


def _features(row: Sequence[float] | Mapping[str, float]) -> list[float] | dict[str, float]:
    """A row as JSON: a list of numbers, or an object of feature names to numbers."""
    if isinstance(row, Mapping):
        return {str(k): _number(v) for k, v in row.items()}
    if isinstance(row, str | bytes):
        raise InputError(f"a row is a sequence of numbers or a mapping, got {type(row).__name__}")
    return [_number(v) for v in row]


def _number(value: Any) -> Any:
    # numpy scalars and the like: plain floats (NaN/inf reach the server as null/tokens).
    if isinstance(value, bool) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value  # the server names the field


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("Authorization", "")
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


def _client_error(error: MlgateClientError | httpx.TransportError) -> MlgateClientError:
    if isinstance(error, httpx.TransportError):
        return error_from_transport(error)
    return error
