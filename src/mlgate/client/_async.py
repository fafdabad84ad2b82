"""The asyncio client: performs the core's effects with ``httpx.AsyncClient`` and tasks."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
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


class AsyncClient:
    """The asyncio twin of :class:`mlgate.client.Client`: the same calls, awaited.

    ``transport`` is any ``httpx.AsyncBaseTransport``, e.g.
    ``httpx.ASGITransport(app=create_app(settings))`` to drive an app in-process.
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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
        self._auth_lock: asyncio.Lock | None = None
        self.admin = AsyncAdmin(self)

    @property
    def base_url(self) -> str:
        return self._core.base_url

    # -- performing effects -------------------------------------------------------------

    async def _run(self, flow: Flow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                effect = flow.throw(error) if error is not None else flow.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = await self._perform(effect)
            except BaseException as exc:  # handed to the flow, which re-raises it
                error = exc

    async def _perform(self, effect: Any) -> Any:
        if isinstance(effect, Send):
            try:
                return await self._http.send(effect.request)
            except httpx.TransportError as exc:
                return exc
        if isinstance(effect, Sleep):
            await asyncio.sleep(effect.seconds)
            return None
        if isinstance(effect, Authenticate):
            return await self._authenticate(effect.refused)
        if isinstance(effect, Gather):
            return await self._gather(effect)
        raise TypeError(f"unknown effect {effect!r}")

    async def _authenticate(self, refused: str | None) -> dict[str, str]:
        credentials = self._core.credentials
        if self._auth_lock is None:  # made in the running loop, on first use
            self._auth_lock = asyncio.Lock()
        async with self._auth_lock:  # one token fetch at a time, however many tasks
            if refused is not None:
                credentials.forget(refused)
            if credentials.needs_token():
                await self._run(self._core.fetch_token())
            return credentials.headers()

    async def _gather(self, effect: Gather) -> list[Any]:
        slots = asyncio.Semaphore(effect.limit)

        async def bounded(flow: Flow[Any]) -> Any:
            async with slots:
                return await self._run(flow)

        tasks = [asyncio.ensure_future(bounded(flow)) for flow in effect.flows]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    # -- the API ------------------------------------------------------------------------

    async def health(self) -> Health:
        """``GET /health`` (needs no credentials)."""
        return await self._run(self._core.health())

    async def info(self) -> ServerInfo:
        """``GET /info``: server version, models and the batch limit."""
        return await self._run(self._core.info())

    async def whoami(self) -> Principal:
        """Whom the credentials belong to, with scopes and tier."""
        return await self._run(self._core.whoami())

    async def models(self) -> list[ModelSummary]:
        """The served models."""
        return await self._run(self._core.models())

    async def model(self, model: str, version: str | None = None) -> ModelInfo:
        """A model's schema, of its default version or of ``version``."""
        return await self._run(self._core.model(model, version))

    async def predict(
        self,
        model: str,
        features: Sequence[float] | Mapping[str, float],
        *,
        version: str | None = None,
        device_id: str | None = None,
    ) -> Prediction:
        """Score one instance: numbers in feature order, or ``{name or alias: number}``."""
        return await self._run(
            self._core.predict(model, features, version=version, device_id=device_id)
        )

    async def predict_batch(
        self,
        model: str,
        instances: Iterable[Sequence[float] | Mapping[str, float]],
        *,
        version: str | None = None,
        device_id: str | None = None,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> BatchResult:
        """Score many instances (JSON), chunked and concurrent; results in input order."""
        return await self._run(
            self._core.predict_batch(
                model,
                instances,
                version=version,
                device_id=device_id,
                chunk_rows=chunk_rows,
                concurrency=concurrency,
            )
        )

    async def predict_array(
        self,
        model: str,
        rows: Any,
        *,
        version: str | None = None,
        device_id: str | None = None,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> ArrayResult:
        """Score a numpy matrix over the binary tensor path; numpy arrays out."""
        return await self._run(
            self._core.predict_array(
                model,
                rows,
                version=version,
                device_id=device_id,
                chunk_rows=chunk_rows,
                concurrency=concurrency,
            )
        )

    async def predict_frame(
        self,
        model: str,
        frame: pd.DataFrame,
        version: str | None = None,
        *,
        positional: bool = False,
        chunk_rows: int | None = None,
        concurrency: int | None = None,
    ) -> pd.DataFrame:
        """Score a DataFrame (needs pandas); results on ``frame``'s index."""
        return await self._run(
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

    async def stream(
        self,
        model: str,
        readings: Iterable[Any] | AsyncIterable[Any],
        *,
        version: str | None = None,
        device_key: str = "device_id",
        batch_size: int = 1,
        max_in_flight: int = 8,
    ) -> AsyncIterator[Prediction]:
        """Score a live feed (an iterable or async iterable), yielding predictions in
        input order with at most ``max_in_flight`` requests outstanding; one device's
        readings are sent in order (see :meth:`mlgate.client.Client.stream`)."""
        pending: deque[asyncio.Task[list[Prediction]]] = deque()
        last: dict[str, asyncio.Task[list[Prediction]]] = {}

        async def run_after(
            before: asyncio.Task[list[Prediction]] | None, batch: _stream.Batch
        ) -> list[Prediction]:
            if before is not None:
                await asyncio.wait([before])  # the device's previous readings first
            return await self._run(_stream.score(self._core, model, batch, version))

        try:
            async for batch in _stream.abatches(
                readings, device_key=device_key, batch_size=batch_size
            ):
                while len(pending) >= max_in_flight:
                    for prediction in await pending.popleft():
                        yield prediction
                device = batch.device_id
                task = asyncio.ensure_future(run_after(last.get(device) if device else None, batch))
                if device is not None:
                    last[device] = task
                    task.add_done_callback(functools.partial(_forget, last, device))
                pending.append(task)
            while pending:
                for prediction in await pending.popleft():
                    yield prediction
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def feedback(
        self,
        prediction_id: str,
        *,
        label: str | int | None = None,
        is_anomaly: bool | None = None,
    ) -> Feedback:
        """Send the ground truth of one prediction (``label`` or ``is_anomaly``)."""
        return await self._run(
            self._core.feedback(prediction_id, label=label, is_anomaly=is_anomaly)
        )

    # -- lifetime -----------------------------------------------------------------------

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _forget(last: dict[str, Any], device: str, task: Any) -> None:
    if last.get(device) is task:
        del last[device]


class AsyncAdmin:
    """Users and API keys (scope ``admin``): ``client.admin``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._core = client._core

    async def create_user(
        self,
        username: str,
        *,
        password: str | None = None,
        scopes: Sequence[str] = (),
        tier: str | None = None,
        disabled: bool = False,
        rate_limit_overrides: Mapping[str, float] | None = None,
    ) -> User:
        return await self._client._run(
            self._core.create_user(
                username,
                password=password,
                scopes=scopes,
                tier=tier,
                disabled=disabled,
                rate_limit_overrides=rate_limit_overrides,
            )
        )

    async def list_users(self, *, limit: int = 100, offset: int = 0) -> list[User]:
        return await self._client._run(self._core.list_users(limit=limit, offset=offset))

    async def get_user(self, user_id: int) -> User:
        return await self._client._run(self._core.get_user(user_id))

    async def update_user(self, user_id: int, **changes: Any) -> User:
        return await self._client._run(self._core.update_user(user_id, **changes))

    async def disable_user(self, user_id: int) -> User:
        return await self.update_user(user_id, disabled=True)

    async def create_key(
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
        return await self._client._run(
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

    async def list_keys(self, *, user_id: int | None = None) -> list[ApiKey]:
        return await self._client._run(self._core.list_keys(user_id=user_id))

    async def get_key(self, key_id: int) -> ApiKey:
        return await self._client._run(self._core.get_key(key_id))

    async def update_key(self, key_id: int, **changes: Any) -> ApiKey:
        return await self._client._run(self._core.update_key(key_id, **changes))

    async def revoke_key(self, key_id: int) -> ApiKey:
        return await self._client._run(self._core.revoke_key(key_id))
