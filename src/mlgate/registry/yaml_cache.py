"""Parsed model YAML files (manifests, ``model.yaml``) kept as JSON, so that a restart
does not parse them again.

A manifest written by ``mlgate train`` carries reference profiles and cross-validation
figures: thousands of numbers, each of which PyYAML builds with a Python call even with
libyaml's parser. The bundled repository's 25 YAML files (400 KB) take ~0.2 s to parse
at every start; the same documents load from JSON with orjson in ~2 ms.

An entry is keyed by the SHA-256 of the file's bytes (and this module's format and
PyYAML's version), so an edited file misses and is parsed again. Only documents that
JSON holds exactly are kept (mappings with string keys, lists, strings, numbers,
booleans, null: what the manifests are); anything else - a date, a NaN, a set - is
parsed every time. Entries are written atomically; a damaged or unreadable entry is
parsed again, and a directory that cannot be written only costs the parse.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
import yaml

from mlgate.registry.twin_cache import user_cache_directory

log = logging.getLogger("mlgate.registry")

#: Bumped when what an entry holds changes.
ENTRY_FORMAT = 1


def default_directory() -> Path:
    """``$XDG_CACHE_HOME/mlgate/manifests`` (``~/.cache/mlgate/manifests``)."""
    return user_cache_directory("manifests")


class YamlCache:
    """Parsed YAML documents under ``directory``, one JSON file each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key(self, data: bytes) -> Path:
        """Where the document parsed from ``data`` is kept."""
        digest = hashlib.sha256(data)
        digest.update(f"\0{ENTRY_FORMAT}\0{yaml.__version__}".encode())
        return self.directory / f"{digest.hexdigest()}.json"

    def get(self, key: Path) -> tuple[bool, Any]:
        """(True, document) when a document is kept under ``key``."""
        try:
            return True, orjson.loads(key.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return False, None

    def put(self, key: Path, document: Any) -> None:
        """Keep ``document`` under ``key`` if JSON holds it exactly."""
        try:
            encoded = orjson.dumps(document)
        except TypeError:  # a date, a set, a non-string key: not kept
            return
        if orjson.loads(encoded) != document:  # NaN, ...: not kept
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        except OSError as exc:
            log.debug("parsed YAML not kept: %s", exc)
            return
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(encoded)
            os.replace(temporary, key)
        except OSError as exc:
            Path(temporary).unlink(missing_ok=True)
            log.debug("parsed YAML not kept: %s", exc)
