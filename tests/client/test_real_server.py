"""The client against a real `mlgate serve` process, over sockets: the issue's
done-when list (a measured Retry-After, no retry of a 4xx, a token renewed across its
expiry, a 25,000-row frame split under the server's limit and back in order with its
index, the asyncio client doing the same as the blocking one)."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from tests.client.conftest import Recorder
from tests.client.data import distinct_rows, ids_columns, local_classes
from tests.servers import clean_env, mlgate_serve

from mlgate.client import (
    AsyncClient,
    AuthenticationError,
    Client,
    ModelNotFound,
    ValidationError,
)

KEY_PATTERN = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
TOKEN_TTL_S = 60  # the shortest lifetime the settings allow
PASSWORD = "correct-horse-battery-staple"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Server:
    url: str
    admin_key: str
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("client-serve")
    env = clean_env(
        MLGATE_AUTH__ACCESS_TOKEN_TTL_S=str(TOKEN_TTL_S),
        MLGATE_AUTH__JWT_LEEWAY_S="0",
    )
    with mlgate_serve(workdir, env) as running:
        (key,) = KEY_PATTERN.findall(running.log.read_text())
        yield Server(running.url, key, running.log)


def _recorder() -> Recorder:
    return Recorder(httpx.HTTPTransport())


def test_a_429_is_retried_after_its_retry_after(server: Server) -> None:
    with Client(server.url, api_key=server.admin_key) as admin:
        user = admin.admin.create_user("one-a-second", scopes=["predict", "models:read"])
        key = admin.admin.create_key(
            "slow", user_id=user.id, rate_limit_overrides={"requests_per_minute": 60, "burst": 1}
        )
    recorder = _recorder()
    with Client(server.url, api_key=key.key, transport=recorder) as c:
        c.info()
        c.predict("ids", [0.0] * 77)
    assert [e.status for e in recorder.log] == [200, 429, 200]
    refused, admitted = recorder.log[1], recorder.log[2]
    waited = admitted.sent_at - refused.sent_at
    assert 1.0 <= waited < 2.0, f"waited {waited:.3f} s after a Retry-After of 1 s"


def test_a_4xx_is_not_retried(server: Server) -> None:
    recorder = _recorder()
    with Client(server.url, api_key=server.admin_key, transport=recorder) as c:
        with pytest.raises(ModelNotFound):
            c.predict("no-such-model", [1.0])
        row = [0.0] * 77
        row[0] = math.nan
        with pytest.raises(ValidationError) as caught:
            c.predict("ids", row)
        assert caught.value.fields == ["features[0]"]
    bad_key = "mlg_000000000000_" + "x" * 43
    with (
        Client(server.url, api_key=bad_key, transport=recorder) as c,
        pytest.raises(AuthenticationError),
    ):
        c.predict("ids", [0.0] * 77)
    assert [e.status for e in recorder.log] == [404, 422, 401]


def _frame(n: int) -> pd.DataFrame:
    rows = distinct_rows(n, seed=1)
    # A shuffled, non-numeric index: the round trip must keep it.
    labels = np.random.default_rng(2).permutation(n)
    return pd.DataFrame(rows, columns=ids_columns(), index=[f"f{i}" for i in labels])


def test_a_25000_row_frame_is_split_under_the_limit_and_keeps_its_index(server: Server) -> None:
    frame = _frame(25_000)
    recorder = _recorder()
    with Client(server.url, api_key=server.admin_key, transport=recorder) as c:
        limit = c.info().max_batch_rows
        scored = c.predict_frame("ids", frame)
    sizes = [e.rows for e in recorder.to("/infer")]
    assert all(e.status == 200 for e in recorder.log)
    assert max(s or 0 for s in sizes) <= limit
    assert len(sizes) == math.ceil(25_000 / limit) and sum(s or 0 for s in sizes) == 25_000
    assert scored.index.equals(frame.index)
    assert scored["predicted_class_name"].tolist() == local_classes(frame.to_numpy()).tolist()
    assert scored["prediction_id"].is_unique


async def test_the_async_client_does_the_same_as_the_blocking_one(server: Server) -> None:
    frame = _frame(25_000)
    with Client(server.url, api_key=server.admin_key) as c:
        blocking = c.predict_frame("ids", frame)
        one = c.predict("ids", frame.iloc[0].tolist())
    async with AsyncClient(server.url, api_key=server.admin_key) as ac:
        awaited = await ac.predict_frame("ids", frame)
        one_async = await ac.predict("ids", frame.iloc[0].tolist())
        with pytest.raises(ModelNotFound):
            await ac.predict("no-such-model", [1.0])
    pd.testing.assert_frame_equal(
        blocking.drop(columns="prediction_id"), awaited.drop(columns="prediction_id")
    )
    assert one.probabilities == one_async.probabilities


def test_the_token_is_renewed_across_its_expiry(server: Server) -> None:
    with Client(server.url, api_key=server.admin_key) as admin:
        admin.admin.create_user("tokens", password=PASSWORD, scopes=["predict", "models:read"])
    recorder = _recorder()
    with Client(server.url, username="tokens", password=PASSWORD, transport=recorder) as c:
        c.predict("ids", [0.0] * 77)
        first = recorder.log[-1].headers["authorization"]
        time.sleep(TOKEN_TTL_S + 1.5)  # the first token has expired (no leeway)
        c.predict("ids", [0.0] * 77)
        second = recorder.log[-1].headers["authorization"]
    assert first != second
    assert [(e.path, e.status) for e in recorder.log] == [
        ("/v1/token", 200),
        ("/v1/models/ids/predict", 200),
        ("/v1/token", 200),
        ("/v1/models/ids/predict", 200),
    ]
    expired = httpx.get(f"{server.url}/v1/users/me", headers={"Authorization": first}, timeout=10)
    assert expired.status_code == 401 and "expired" in expired.text
