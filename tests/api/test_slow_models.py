"""A slow model runs in a worker thread: while one of its calls is in progress the
server keeps answering other requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.api.gated_model import HOLD, Gate, write_gated_model
from tests.conftest import make_settings, running_app


async def test_the_event_loop_answers_while_a_slow_model_runs(tmp_path: Path) -> None:
    gate = Gate()
    repo = tmp_path / "models"
    write_gated_model(repo, "slow", "1", score=0.25, threshold=0.5, gate=gate)
    async with running_app(make_settings(models={"repository": repo})) as (_, client):
        held = asyncio.create_task(
            client.post("/v1/models/slow/predict", json={"features": [HOLD, 0.0]})
        )
        await gate.entered()
        live = await asyncio.wait_for(client.get("/health/live"), timeout=10)
        models = await asyncio.wait_for(client.get("/v1/models"), timeout=10)
        # Answered while the model call was still held, not after it gave up.
        assert gate.held == 1 and not held.done()
        assert live.status_code == 200 and models.status_code == 200
        gate.open()
        response = await held
    assert not gate.timed_out
    assert response.status_code == 200, response.text
    assert response.json()["anomaly_score"] == 0.25
