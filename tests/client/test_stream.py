"""Live feeds: one prediction per reading in input order, a bounded number of requests
in flight, the feed read only as fast as results are taken, devices kept in order."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tests.client.conftest import Recorder

from mlgate.client import AsyncClient, Client, InputError

DEVICES = ("pump-a", "pump-b", "pump-c")


def _reading(i: int, device: str | None = None) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "temperature": 60.0 + (i % 5),
        "vibration": 0.2,
        "pressure": 0.5 + (i % 3) / 10,
        "flow_rate": 125.0,
        "current": 2.5,
    }
    if device is not None:
        reading["device_id"] = device
    return reading


class Feed:
    """Readings of three devices, interleaved; remembers how far it has been read."""

    def __init__(self, n: int, devices: tuple[str, ...] = DEVICES) -> None:
        self.n = n
        self.devices = devices
        self.pulled = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(self.n):
            self.pulled += 1
            yield _reading(i, self.devices[i % len(self.devices)] if self.devices else None)


def test_results_come_in_input_order_with_devices_in_order(
    client: Client, recorder: Recorder
) -> None:
    feed = Feed(60, ("stream-a", "stream-b", "stream-c"))
    results = list(client.stream("iot", feed, max_in_flight=4))
    assert len(results) == 60
    assert [r.device_id for r in results] == [feed.devices[i % 3] for i in range(60)]
    # Each device calibrated on its own readings, in the order they came.
    for device in feed.devices:
        seen = [r.calibration["seen"] for r in results if r.device_id == device and r.calibration]
        assert seen == list(range(1, 21))
    assert all(e.rows == 1 for e in recorder.to("/predict/batch"))


def test_backpressure_bounds_what_is_read_ahead(client: Client) -> None:
    feed = Feed(40, ())
    stream = client.stream("iot", feed, max_in_flight=3, version="1")
    for taken, prediction in enumerate(stream, 1):
        # At most 3 requests outstanding, plus the reading being handed out.
        assert feed.pulled - taken <= 3
        assert prediction.is_anomaly is not None
        if taken == 10:
            break
    stream.close()
    assert feed.pulled <= 13


def test_consecutive_readings_of_a_device_share_a_request(
    client: Client, recorder: Recorder
) -> None:
    readings = [_reading(i, "batched") for i in range(10)] + [_reading(99, "other")]
    results = list(client.stream("iot", readings, batch_size=4))
    # (The other device's request may overtake the first device's last ones.)
    assert sorted(e.rows or 0 for e in recorder.to("/predict/batch")) == [1, 2, 4, 4]
    assert [r.calibration["seen"] for r in results if r.calibration][:10] == list(range(1, 11))


def test_bad_readings(client: Client) -> None:
    with pytest.raises(InputError):
        list(client.stream("iot", ["not a reading"]))
    with pytest.raises(InputError):
        list(client.stream("iot", [{"device_id": 7, "temperature": 1.0}]))


async def _async_feed(n: int, device: str) -> AsyncIterator[dict[str, Any]]:
    for i in range(n):
        yield _reading(i, device)


async def test_the_async_stream_takes_async_feeds(aclient: AsyncClient) -> None:
    results = [p async for p in aclient.stream("iot", _async_feed(25, "async-pump"))]
    assert [r.calibration["seen"] for r in results if r.calibration] == list(range(1, 26))
    feed = Feed(30, ())
    taken = 0
    async for prediction in aclient.stream("iot", feed, max_in_flight=2, version="1"):
        taken += 1
        assert feed.pulled - taken <= 2 and prediction.is_anomaly is not None
    assert taken == 30
