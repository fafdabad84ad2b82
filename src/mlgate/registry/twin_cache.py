"""A directory of checked ONNX twins, so that a restart serves them at once.

Making a scikit-learn classifier's twin means importing scikit-learn (and scipy) to load
the estimator, converting it in a subprocess and checking the graph against it: seconds,
and scikit-learn's ~50-150 MB stay in the server. Once a twin has passed that check it is
kept here with the probabilities the estimator gave on the check rows. A later start of
the same artifact, under the same libraries, loads the graph, runs it on the same rows
and serves it if it still reproduces those probabilities within the same tolerance,
without loading the estimator at all (it is loaded only if something needs it).

An entry's key covers everything the check depended on: the artifact's SHA-256 (which the
registry verified against the file), the number of features, the check rows, the
tolerance, and the versions of Python, numpy, scipy, scikit-learn and onnxruntime.
Another artifact or another library version misses, and the twin is made and checked
again. Entries are written atomically (several workers may start together); a damaged
entry is ignored and replaced. The directory must be as trusted as the model
repository: a graph found here is served.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import platform
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

log = logging.getLogger("mlgate.registry")

#: Bumped when what an entry holds, or how it is checked, changes.
ENTRY_FORMAT = 1
#: The libraries whose versions decide whether a kept check still holds.
LIBRARIES = ("numpy", "scipy", "scikit-learn", "onnxruntime")


def user_cache_directory(name: str) -> Path:
    """``$XDG_CACHE_HOME/mlgate/<name>`` (``~/.cache/mlgate/<name>``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlgate" / name


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/mlgate/onnx-twins`` (``~/.cache/mlgate/onnx-twins``)."""
    return user_cache_directory("onnx-twins")


@cache
def library_versions() -> tuple[str, ...]:
    """``name=version`` of Python and of each of :data:`LIBRARIES` (``name=absent``)."""
    versions = [f"python={platform.python_version()}"]
    for name in LIBRARIES:
        try:
            versions.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name}=absent")
    return tuple(versions)


@dataclass(frozen=True)
class CachedTwin:
    """A kept graph and the estimator's probabilities on the check rows."""

    graph: bytes
    expected: np.ndarray


class TwinCache:
    """Checked ONNX twins in a directory, one ``<key>.npz`` file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def key(self, artifact_sha256: str, n_features: int, rows: np.ndarray, tolerance: float) -> str:
        digest = hashlib.sha256()
        parts = (ENTRY_FORMAT, artifact_sha256, n_features, repr(tolerance), *library_versions())
        for part in parts:
            digest.update(str(part).encode())
            digest.update(b"\0")
        digest.update(str(rows.shape).encode())
        digest.update(np.ascontiguousarray(rows, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def get(self, key: str) -> CachedTwin | None:
        """The entry under ``key``; None when there is none or it is damaged."""
        path = self.path(key)
        try:
            with path.open("rb") as file, np.load(file, allow_pickle=False) as data:
                graph = data["graph"].tobytes()
                expected = np.asarray(data["expected"], dtype=np.float64)
                recorded = str(data["graph_sha256"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("ignoring a damaged ONNX twin cache entry %s: %s", path.name, exc)
            return None
        if hashlib.sha256(graph).hexdigest() != recorded:
            log.warning("ignoring ONNX twin cache entry %s: its graph does not match", path.name)
            return None
        return CachedTwin(graph, expected)

    def put(self, key: str, graph: bytes, expected: np.ndarray) -> bool:
        """Keep an entry (atomically); False, with a warning, when it cannot be written."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            graph=np.frombuffer(graph, dtype=np.uint8),
            expected=np.asarray(expected, dtype=np.float64),
            graph_sha256=np.asarray(hashlib.sha256(graph).hexdigest()),
        )
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, staged = tempfile.mkstemp(dir=self.directory, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(buffer.getvalue())
                os.replace(staged, self.path(key))
            except BaseException:
                Path(staged).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("cannot keep the ONNX twin in the cache %s: %s", self.directory, exc)
            return False
        return True
