"""The package's public names are exactly its ``__all__``."""

from __future__ import annotations

import mlgate.ratelimit


def test_all_is_sorted_and_importable() -> None:
    assert mlgate.ratelimit.__all__ == sorted(mlgate.ratelimit.__all__)
    for name in mlgate.ratelimit.__all__:
        assert getattr(mlgate.ratelimit, name) is not None


def test_public_names_are_in_all() -> None:
    public = {
        name
        for name, value in vars(mlgate.ratelimit).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("mlgate.")
    }
    assert public <= set(mlgate.ratelimit.__all__)
