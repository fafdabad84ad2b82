"""Live feeds: readings grouped into requests, one device's readings kept in order.

The shells run the requests concurrently (bounded) and hand results back in input
order; this module decides what goes into each request and how it is scored.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlgate.client._core import ClientCore
from mlgate.client._effects import Flow
from mlgate.client._exceptions import InputError
from mlgate.client._models import Prediction

Reading = Sequence[float] | Mapping[str, Any]


@dataclass(slots=True)
class Batch:
    """Consecutive readings of one device (or of none) sent in one request."""

    device_id: str | None
    rows: list[Any] = field(default_factory=list)


class Batcher:
    """Groups readings: a batch ends at ``batch_size`` readings or when the device
    changes."""

    def __init__(self, device_key: str, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.device_key = device_key
        self.batch_size = batch_size
        self.current: Batch | None = None

    def split(self, reading: Reading) -> tuple[str | None, Any]:
        """(device id, features) of one reading."""
        if isinstance(reading, Mapping):
            device = reading.get(self.device_key)
            if device is not None and not isinstance(device, str):
                raise InputError(f"{self.device_key} must be a string, got {device!r}")
            features = {k: v for k, v in reading.items() if k != self.device_key}
            return device, features
        if isinstance(reading, str | bytes):
            raise InputError("a reading is a mapping of feature names or a sequence of numbers")
        return None, list(reading)

    def add(self, reading: Reading) -> list[Batch]:
        """Take one reading; return the batches it completed (oldest first)."""
        device, features = self.split(reading)
        done = []
        if self.current is not None and self.current.device_id != device:
            done.append(self.current)
            self.current = None
        if self.current is None:
            self.current = Batch(device)
        self.current.rows.append(features)
        if len(self.current.rows) >= self.batch_size:
            done.append(self.current)
            self.current = None
        return done

    def flush(self) -> list[Batch]:
        done, self.current = self.current, None
        return [done] if done is not None else []


def batches(readings: Iterable[Reading], *, device_key: str, batch_size: int) -> Iterator[Batch]:
    """The requests a feed makes, in order (a reading is pulled only when needed)."""
    batcher = Batcher(device_key, batch_size)
    for reading in readings:
        yield from batcher.add(reading)
    yield from batcher.flush()


async def abatches(
    readings: Iterable[Reading] | AsyncIterable[Reading], *, device_key: str, batch_size: int
) -> AsyncIterator[Batch]:
    """:func:`batches` of a feed that may be asynchronous."""
    if not isinstance(readings, AsyncIterable):
        for batch in batches(readings, device_key=device_key, batch_size=batch_size):
            yield batch
        return
    batcher = Batcher(device_key, batch_size)
    async for reading in readings:
        for batch in batcher.add(reading):
            yield batch
    for batch in batcher.flush():
        yield batch


def score(
    core: ClientCore, model: str, batch: Batch, version: str | None
) -> Flow[list[Prediction]]:
    """One request for one batch: its predictions, in order."""
    result = yield from core.predict_batch(
        model, batch.rows, version=version, device_id=batch.device_id
    )
    return result.predictions
