"""The blocking client: performs the core's effects with ``httpx.Client`` and threads."""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from mlgate.client import _frames, _stream
from mlgate.client._auth import Credentials, resolve_url
from mlgate.client._core import ClientCore
from mlgate.client._effects import Authenticate, Flow, Gather, Send, Sleep
from mlgate.client._models import (
    ApiKey,
    ArrayResult,
    BatchResult,
    Feedback,
    Health,
    ModelInfo,
    ModelSummary,
    Prediction,
    Principal,
    ServerInfo,
    User,
)
from mlgate.client._retry import RetryPolicy

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


class Client:
    """A blocking client for an mlgate server.

    ``base_url`` defaults to ``MLGATE_URL`` (else http://127.0.0.1:8000); credentials
    are an ``api_key`` (default ``MLGATE_API_KEY``), or a ``username`` and ``password``
    exchanged for access tokens that are renewed before they expire. ``transport`` is
    any ``httpx.BaseTransport`` (tests pass one that drives an app in-process).
    Thread-safe; use it as a context manager or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float | httpx.Timeout = 30.0,
        retry: RetryPolicy | None = None,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
        refresh_margin_s: float = 30.0,
    ) -> None:
        credentials = Credentials.resolve(
            api_key, username, password, refresh_margin_s=refresh_margin_s
        )
        self._core = ClientCore(
            resolve_url(base_url),
            credentials,
            retry=retry or RetryPolicy(),
            timeout=httpx.Timeout(timeout),
            concurrency=concurrency,
        )
        self._http = httpx.Client(transport=transport, timeout=timeout)
        self._auth_lock = threading.RLock()
        self.admin = Admin(self)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    # -- performing effects -------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = self._perform(effect)
            except BaseException as exc:  # handed to the flow, which re-raises it
                error = exc

    def _perform(self, effect: Any) -> Any:
        if isinstance(effect, Send):
            try:
                return self._http.send(effect.request)
            except httpx.TransportError as exc:
                return exc
        if isinstance(effect, Sleep):
            time.sleep(effect.seconds)
            return None
        if isinstance(effect, Authenticate):
            return self._authenticate(effect.refused)
        if isinstance(effect, Gather):
            return self._gather(effect)
        raise TypeError(f"unknown effect {effect!r}")

    def _authenticate(self, refused: str | None) -> dict[str, str]:
        credentials = self._core.credentials
        with self._auth_lock:  # one token fetch at a time, however many threads need it
            if refused is not None:
                credentials.forget(refused)
            if credentials.needs_token():
                self._run(self._core.fetch_token())
            return credentials.headers()

    def _gather(self, effect: Gather) -> list[Any]:
        pool = ThreadPoolExecutor(max_workers=min(effect.limit, len(effect.flows)) or 1)
        try:
            futures = [pool.submit(self._run, flow) for flow in effect.flows]
            return [future.result() for future in futures]
        finally:
            # On a failure, chunks not yet started are dropped; running ones finish.
            pool.shutdown(wait=False, cancel_futures=True)

    # -- the API ------------------------------------------------------------------------

    def health(self) -> Health:
        """``GET /health`` (needs no credentials)."""
        return self._run(self._core.health())

    def info(self) -> ServerInfo:
        """``GET /info``: server version, models and the batch limit."""
        return self._run(self._core.info())

    def whoami(self) -> Principal:
        """Whom the credentials belong to, with scopes and tier."""
        return self._run(self._core.whoami())

    def models(self) -> list[ModelSummary]:
        """The served models."""
        return self._run(self._core.models())

    def model(self, model: str, version: str | None = None) -> ModelInfo:
        """A model's schema (features and aliases, classes, metrics), of its default
        version or of ``version`` (a version or alias)."""
        return self._run(self._core.model(model, version))

    def predict(
        self,
        model: str,
        features: Sequence[float] | Mapping[str, float],
        *,
        version: str | None = None,
        device_id: str | None = None,
    ) -> Prediction:
        """Score one instance: numbers in feature order, or ``{name or alias: number}``."""
        return self._run(self._core.predict(model, features, version=version, device_id=device_id))

    def predict_batch(
        self,
        model: str,
        instances: Iterable[Sequence[float] | Mapping[str, float]],
        *,
        version: str | None = None,
        device_id: str | None = None,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> BatchResult:
        """Score many instances (JSON): chunks under the server's batch limit, sent
        ``concurrency`` at a time (one at a time for a device), results in input order."""
        return self._run(
            self._core.predict_batch(
                model,
                instances,
                version=version,
                device_id=device_id,
                chunk_rows=chunk_rows,
                concurrency=concurrency,
            )
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
    ) -> ArrayResult:
        """Score a numpy matrix ``[N, n_features]`` over the Open Inference Protocol with
        binary tensors both ways; outputs are numpy arrays, in input order."""
        return self._run(
            self._core.predict_array(
                model,
                rows,
                version=version,
                device_id=device_id,
                chunk_rows=chunk_rows,
                concurrency=concurrency,
            )
        )

    def predict_frame(
        self,
        model: str,
        frame: pd.DataFrame,
        version: str | None = None,
        *,
        positional: bool = False,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> pd.DataFrame:
        """Score a DataFrame (needs pandas): columns matched by feature name or alias
        (``positional=True``: the columns in the model's feature order); returns a
        DataFrame with ``frame``'s index and the result columns."""
        return self._run(
            _frames.predict_frame(
                self._core,
                model,
                frame,
                version=version,
                positional=positional,
                chunk_rows=chunk_rows,
                concurrency=concurrency,
            )
        )

    def stream(
        self,
        model: str,
        readings: Iterable[Sequence[float] | Mapping[str, Any]],
        *,
        version: str | None = None,
        device_key: str = "device_id",
        batch_size: int = 1,
        max_in_flight: int = 8,
    ) -> Iterator[Prediction]:
        """Score a live feed, yielding one prediction per reading in input order.

        At most ``max_in_flight`` requests are outstanding, and ``readings`` is read
        only as fast as results are consumed (backpressure). A reading that is a
        mapping with ``device_key`` is scored against that device's baseline; one
        device's readings are sent in order, one request at a time; ``batch_size``
        consecutive readings of one device may share a request.
        """
        batches = _stream.batches(readings, device_key=device_key, batch_size=batch_size)
        pending: deque[Future[list[Prediction]]] = deque()
        last: dict[str, Future[list[Prediction]]] = {}

        def run_after(before: Future[list[Prediction]] | None, batch: _stream.Batch) -> Any:
            if before is not None:
                wait([before])  # the device's previous readings first
            return self._run(_stream.score(self._core, model, batch, version))

        with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
            try:
                for batch in batches:
                    while len(pending) >= max_in_flight:
                        yield from pending.popleft().result()
                    device = batch.device_id
                    future = pool.submit(run_after, last.get(device) if device else None, batch)
                    if device is not None:
                        last[device] = future
                        future.add_done_callback(functools.partial(_forget, last, device))
                    pending.append(future)
                while pending:
                    yield from pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def feedback(
        self,
        prediction_id: str,
        *,
        label: str | int | None = None,
        is_anomaly: bool | None = None,
    ) -> Feedback:
        """Send the ground truth of one prediction: ``label`` (class name or index) for
        a classifier, ``is_anomaly`` for an anomaly model."""
        return self._run(self._core.feedback(prediction_id, label=label, is_anomaly=is_anomaly))

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _forget(last: dict[str, Future[Any]], device: str, future: Future[Any]) -> None:
    # Keep only devices with a request in flight (a feed may name millions of devices).
    if last.get(device) is future:
        del last[device]


class Admin:
    """Users and API keys (scope ``admin``): ``client.admin``."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._core = client._core

    def create_user(
        self,
        username: str,
        *,
        password: str | None = None,
        scopes: Sequence[str] = (),
        tier: str | None = None,
        disabled: bool = False,
        rate_limit_overrides: Mapping[str, float] | None = None,
    ) -> User:
        return self._client._run(
            self._core.create_user(
                username,
                password=password,
                scopes=scopes,
                tier=tier,
                disabled=disabled,
                rate_limit_overrides=rate_limit_overrides,
            )
        )

    def list_users(self, *, limit: int = 100, offset: int = 0) -> list[User]:
        return self._client._run(self._core.list_users(limit=limit, offset=offset))

    def get_user(self, user_id: int) -> User:
        return self._client._run(self._core.get_user(user_id))

    def update_user(self, user_id: int, **changes: Any) -> User:
        """Change ``tier``, ``scopes``, ``disabled``, ``password`` or
        ``rate_limit_overrides``."""
        return self._client._run(self._core.update_user(user_id, **changes))

    def disable_user(self, user_id: int) -> User:
        """Refuse the user's tokens and keys from now on."""
        return self.update_user(user_id, disabled=True)

    def create_key(
        self,
        name: str,
        *,
        user_id: int | None = None,
        username: str | None = None,
        scopes: Sequence[str] | None = None,
        tier: str | None = None,
        expires_at: str | None = None,
        rate_limit_overrides: Mapping[str, float] | None = None,
    ) -> ApiKey:
        return self._client._run(
            self._core.create_key(
                name,
                user_id=user_id,
                username=username,
                scopes=scopes,
                tier=tier,
                expires_at=expires_at,
                rate_limit_overrides=rate_limit_overrides,
            )
        )

    def list_keys(self, *, user_id: int | None = None) -> list[ApiKey]:
        return self._client._run(self._core.list_keys(user_id=user_id))

    def get_key(self, key_id: int) -> ApiKey:
        return self._client._run(self._core.get_key(key_id))

    def update_key(self, key_id: int, **changes: Any) -> ApiKey:
        """Change ``name``, ``scopes``, ``tier``, ``expires_at`` or
        ``rate_limit_overrides``."""
        return self._client._run(self._core.update_key(key_id, **changes))

    def revoke_key(self, key_id: int) -> ApiKey:
        return self._client._run(self._core.revoke_key(key_id))
