"""What a model version may read, and how paths appear in its load errors.

A version reads its ``manifest.yaml`` and its artifact, and nothing outside the
repository: the artifact must be a plain relative path inside the version directory (no
absolute path, no ``..``), and no file or directory from the repository down to them may
be a symbolic link, unless links are allowed (``MLGATE_MODELS__FOLLOW_SYMLINKS``) for a
deliberate layout. The artifact must carry its SHA-256 (the training code writes it),
checked before the artifact is loaded.

Load errors are shown by the API (model listings, readiness): they name files relative
to the repository and never carry a server path.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from mlgate.registry.manifest import Manifest, ManifestError, sha256_file

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/(?:[\w.@+~-]+/)*[\w.@+~-]+/?")

LINKS_HINT = "MLGATE_MODELS__FOLLOW_SYMLINKS=true allows links in the model repository"


def hide_paths(text: str) -> str:
    """``text`` with every absolute filesystem path replaced by ``<path>``."""
    return _ABSOLUTE_PATH.sub("<path>", text)


def refuse_links(repository: Path, path: Path) -> None:
    """Refuse ``path`` when it, or a directory between ``repository`` and it, is a
    symbolic link (the repository directory itself is the operator's choice)."""
    current = repository
    for part in path.relative_to(repository).parts:
        current = current / part
        if current.is_symlink():
            raise ManifestError(
                f"{current.relative_to(repository).as_posix()} is a symbolic link ({LINKS_HINT})"
            )


def artifact_path(version_dir: Path, artifact: str) -> Path:
    """Where a manifest's ``artifact`` lives; refused unless inside the version directory."""
    pure = PurePosixPath(artifact)
    if not pure.parts or pure.is_absolute() or ".." in pure.parts or "\\" in artifact:
        raise ManifestError(
            f"artifact {artifact!r} must be a relative path inside its version directory "
            "(no absolute path, no '..')"
        )
    return version_dir.joinpath(*pure.parts)


def verified_artifact(
    repository: Path, version_dir: Path, manifest: Manifest, *, follow_symlinks: bool
) -> Path:
    """The artifact's path, once it is inside the repository and matches its SHA-256."""
    path = artifact_path(version_dir, manifest.artifact)
    if not follow_symlinks:
        refuse_links(repository, path)
    if manifest.artifact_sha256 is None:
        raise ManifestError(
            "the manifest has no artifact_sha256: add the artifact's SHA-256 (e.g. from "
            "`sha256sum`) so that it is verified before it is loaded"
        )
    if not path.is_file():
        raise ManifestError(f"artifact {manifest.artifact} does not exist")
    if sha256_file(path) != manifest.artifact_sha256:
        raise ManifestError(
            f"artifact {manifest.artifact} does not match its sha256 in the manifest"
        )
    return path
