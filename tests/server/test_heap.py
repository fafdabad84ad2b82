"""The loaded models leave the garbage collector's work (mlgate.server.heap)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from mlgate.server.heap import settle, unfreeze
from tests.conftest import make_settings, running_app


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    """Every test starts and ends with nothing frozen (the rest of the suite expects it)."""
    gc.unfreeze()
    yield
    gc.unfreeze()


def collected(obj: object) -> bool:
    """Whether full collections still walk ``obj`` (frozen objects are not listed)."""
    return any(o is obj for o in gc.get_objects())


def test_settle_freezes_what_is_alive_and_unfreeze_hands_it_back() -> None:
    kept = [object() for _ in range(3)]
    assert collected(kept)
    settle()
    assert gc.get_freeze_count() > 0
    assert not collected(kept)
    later = [object()]
    assert collected(later)  # made after settling: collected as usual
    unfreeze()
    assert gc.get_freeze_count() == 0
    assert collected(kept)


async def test_the_server_freezes_its_models_once_they_load() -> None:
    async with running_app(make_settings(server={"gc_freeze": True}), as_admin=True) as (
        app,
        client,
    ):
        version = app.state.mlgate.registry.resolve("ids", None)
        assert gc.get_freeze_count() > 0
        assert not collected(version)
        # A reload through the admin API settles again: still frozen, nothing leaked.
        response = await client.post("/v1/admin/models/reload")
        assert response.status_code == 200
        assert gc.get_freeze_count() > 0
        assert not collected(app.state.mlgate.registry.resolve("ids", None))


async def test_off_nothing_is_frozen() -> None:
    async with running_app(make_settings(), as_admin=True) as (app, _):
        assert gc.get_freeze_count() == 0
        assert collected(app.state.mlgate.registry.resolve("ids", None))
