"""A model repository only serves files inside it, verified, and its load errors name no
server path (they are shown to any caller with `models:read`, and by readiness)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mlgate.registry.manifest import sha256_file
from tests.conftest import make_settings, running_app

FEATURES = {"features": [0.5] * 77}


def new_version(repo: Path, version: str, **manifest_changes: Any) -> Path:
    """A copy of ``ids/1`` as ``ids/<version>``, with manifest changes."""
    target = repo / "ids" / version
    shutil.copytree(repo / "ids" / "1", target)
    write_manifest(target, version=version, **manifest_changes)
    return target


def write_manifest(version_dir: Path, **changes: Any) -> None:
    path = version_dir / "manifest.yaml"
    manifest = yaml.safe_load(path.read_text())
    manifest.update(changes)
    for key in [k for k, v in manifest.items() if v is None]:
        del manifest[key]
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))


def outside_copy(tmp_path: Path, repo: Path) -> Path:
    """The ``ids/1`` artifact copied outside the repository (same bytes, same hash)."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    return Path(shutil.copy(repo / "ids" / "1" / "model.onnx", outside / "model.onnx"))


async def served(client: httpx.AsyncClient, version: str) -> bool:
    response = await client.post(
        "/v1/models/ids/predict", json=FEATURES, params={"version": version}
    )
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


async def load_error(client: httpx.AsyncClient, version: str) -> str:
    errors = (await client.get("/v1/models/ids")).json()["load_errors"]
    assert version in errors, errors
    return str(errors[version])


def app(repo: Path, **models: Any) -> Any:
    return running_app(make_settings(models={"repository": repo, **models}))


@pytest.mark.parametrize("where", ["parent", "absolute"])
async def test_an_artifact_path_out_of_the_version_directory_is_refused(
    model_repo: Path, tmp_path: Path, where: str
) -> None:
    artifact = "../1/model.onnx" if where == "parent" else str(outside_copy(tmp_path, model_repo))
    version_dir = new_version(model_repo, "12", artifact=artifact)
    (version_dir / "model.onnx").unlink()
    async with app(model_repo, follow_symlinks=True) as (_, client):  # even with links allowed
        assert not await served(client, "12")
        assert "must be a relative path inside its version directory" in await load_error(
            client, "12"
        )


async def test_a_symlinked_artifact_is_refused_unless_links_are_allowed(
    model_repo: Path, tmp_path: Path
) -> None:
    version_dir = new_version(model_repo, "12")
    (version_dir / "model.onnx").unlink()
    (version_dir / "model.onnx").symlink_to(outside_copy(tmp_path, model_repo))
    async with app(model_repo) as (_, client):
        assert not await served(client, "12")
        error = await load_error(client, "12")
        assert "ids/12/model.onnx is a symbolic link" in error
        assert "MLGATE_MODELS__FOLLOW_SYMLINKS" in error
    async with app(model_repo, follow_symlinks=True) as (_, client):
        assert await served(client, "12")


async def test_a_symlinked_version_directory_is_refused_unless_links_are_allowed(
    model_repo: Path, tmp_path: Path
) -> None:
    store = new_version(model_repo, "12").rename(tmp_path / "store-12")
    (model_repo / "ids" / "12").symlink_to(store, target_is_directory=True)
    async with app(model_repo) as (_, client):
        assert not await served(client, "12")
        assert "ids/12 is a symbolic link" in await load_error(client, "12")
        assert await served(client, "1")
    async with app(model_repo, follow_symlinks=True) as (_, client):
        assert await served(client, "12")


async def test_a_symlinked_model_file_is_refused(model_repo: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "aliases.yaml"
    elsewhere.write_text(yaml.safe_dump({"aliases": {"stable": "1"}}))
    (model_repo / "ids" / "model.yaml").unlink()
    (model_repo / "ids" / "model.yaml").symlink_to(elsewhere)
    async with app(model_repo) as (_, client):
        errors = (await client.get("/v1/models/ids")).json()["load_errors"]
        assert "ids/model.yaml is a symbolic link" in errors["model.yaml"]


async def test_a_manifest_without_artifact_sha256_is_refused(model_repo: Path) -> None:
    new_version(model_repo, "12", artifact_sha256=None)
    async with app(model_repo) as (_, client):
        assert not await served(client, "12")
        assert "no artifact_sha256" in await load_error(client, "12")
        assert await served(client, "1")


async def test_the_bundled_repository_loads_with_every_check_on() -> None:
    async with running_app(make_settings()) as (_, client):
        models = (await client.get("/v1/models")).json()["models"]
    assert models and all(model["load_errors"] == {} for model in models)


async def test_load_errors_name_no_server_path(model_repo: Path, tmp_path: Path) -> None:
    corrupt = new_version(model_repo, "12")
    (corrupt / "model.onnx").write_bytes(b"not a model")  # the runtime quotes its path
    write_manifest(corrupt, artifact_sha256=sha256_file(corrupt / "model.onnx"))
    (new_version(model_repo, "13") / "manifest.yaml").write_text("name: [ids\n")  # bad YAML
    new_version(model_repo, "14", artifact="missing.onnx")
    async with app(model_repo) as (_, client):
        listing = (await client.get("/v1/models")).text
        info = (await client.get("/v1/models/ids")).json()
        missing = await client.post(
            "/v1/models/ids/predict", json=FEATURES, params={"version": "12"}
        )
    errors = info["load_errors"]
    assert set(errors) >= {"12", "13", "14"}
    assert "cannot load model.onnx" in errors["12"] and "<path>" not in errors["12"]
    assert errors["13"].startswith("ids/13/manifest.yaml cannot be read")
    assert "missing.onnx" in errors["14"]
    assert missing.status_code == 404
    for text in (listing, str(errors), missing.text):
        assert str(tmp_path) not in text


async def test_readiness_names_no_server_path(tmp_path: Path) -> None:
    repository = tmp_path / "no-such-repository"
    async with app(repository) as (_, client):
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert "does not exist" in response.text
    assert str(tmp_path) not in response.text
