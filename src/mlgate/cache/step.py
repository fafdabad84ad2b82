"""The data plane's cache step: exact-match reuse of a model version's raw output.

**Key.** ``namespace = <model>/<version>/<load identity>`` and ``digest = BLAKE2b-128``
of the request's canonical input: the bytes of the finalized matrix (rows x features,
manifest order, the runtime's dtype, ``-0.0`` folded into ``0.0``).
Whatever the wire shape - positional or named features, v1, the seed shapes or /v2 -
inputs that mean the same rows give the same bytes. The version is the *resolved* one,
so an alias move can never reuse another version's answer; the load identity is a hash
of the version's load fingerprint (size and modification time of each of its files,
and its batching), so a version changed on disk and reloaded gets new keys in every
worker, and a version that stops serving has its memory namespace dropped.

**Unit.** One entry per request (the whole matrix), not per row: one lookup per
request (one Redis round trip), and a hit returns exactly the bytes the model
returned for that same call, whereas a row scored inside a batch can differ in the
last bit from the same row scored alone (batched kernels), which per-row reuse would
expose. Repeated single-row requests - the common case - are served all the same.

**Bypass.** The device path (stateful baselines) never reaches this step; a request
with ``Cache-Control: no-cache`` is scored and its answer stored, ``no-store`` is
scored and not stored; requests over ``max_rows`` rows are not cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlgate.cache.backends import CacheBackend
from mlgate.cache.settings import CacheSettings
from mlgate.dataplane.types import InferenceContext
from mlgate.registry.manifest import ModelFile
from mlgate.registry.registry import ModelRegistry, ModelVersion

log = logging.getLogger("mlgate.cache")

HEADER = "X-Cache"


def load_identity(mv: ModelVersion) -> str:
    """What changes whenever ``mv``'s files change (the same in every worker)."""
    text = repr((mv.name, mv.version, mv.fingerprint))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def input_digest(x: np.ndarray) -> str:
    """The canonical bytes of a finalized input matrix, hashed.

    The dtype and the number of columns are the version's (the namespace fixes them),
    so the byte length alone fixes the number of rows: hashing the bytes is enough.
    """
    canonical = x + 0.0  # a C-contiguous copy in the same dtype, -0.0 folded into +0.0
    return hashlib.blake2b(canonical.tobytes(), digest_size=16).hexdigest()


@dataclass(slots=True)
class CacheLookup:
    """One request's place in the cache: read it, then write what the model said."""

    cache: PredictionCache
    namespace: str
    digest: str
    ttl_s: float
    read: bool
    write: bool
    context: InferenceContext
    model: str

    async def get(self) -> np.ndarray | None:
        """The stored answer (``X-Cache: HIT``), or None (``MISS``)."""
        value = await self.cache.backend.get(self.namespace, self.digest) if self.read else None
        self.cache.counted(self.model, value is not None)
        self.context.headers[HEADER] = "MISS" if value is None else "HIT"
        return value

    async def put(self, raw: np.ndarray) -> None:
        if self.write:
            await self.cache.backend.put(self.namespace, self.digest, raw, self.ttl_s)


class PredictionCache:
    """Decides per request whether and where the cache applies; a registry listener."""

    def __init__(
        self, backend: CacheBackend, settings: CacheSettings, registry: ModelRegistry
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.registry = registry
        self._models = frozenset(settings.models)
        # Per served version: its namespace, and the model.yaml it was decided with.
        self._namespaces: dict[ModelVersion, str] = {}
        self._policies: dict[str, tuple[ModelFile | None, float | None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.hits = 0
        self.misses = 0
        self.on_lookup: Callable[[str, bool], None] | None = None
        """Told of every lookup: (model, hit) - the metrics' hook."""

    def counted(self, model: str, hit: bool) -> None:
        """Count one lookup of ``model``'s answers."""
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self.on_lookup is not None:
            self.on_lookup(model, hit)

    def _ttl(self, model: str) -> float | None:
        """The model's TTL when its cache is on, else None (a change of model.yaml is
        seen at once: the decision is remade when its options object changes)."""
        options = self.registry.options(model)
        known = self._policies.get(model)
        if known is not None and known[0] is options:
            return known[1]
        spec = options.cache if options is not None else None
        ttl: float | None = None
        if spec is not None:
            ttl = (spec.ttl_s or self.settings.ttl_s) if spec.enabled else None
        elif model in self._models:
            ttl = self.settings.ttl_s
        self._policies[model] = (options, ttl)
        return ttl

    def lookup(
        self, mv: ModelVersion, x: np.ndarray, context: InferenceContext
    ) -> CacheLookup | None:
        """Where this request's answer is cached, or None when the model does not cache."""
        ttl = self._ttl(mv.name)
        if ttl is None:
            return None
        if len(x) > self.settings.max_rows:
            self.counted(mv.name, False)
            context.headers[HEADER] = "MISS"
            return None
        namespace = self._namespaces.get(mv)
        if namespace is None:
            namespace = self._namespaces[mv] = f"{mv.name}/{mv.version}/{load_identity(mv)}"
        return CacheLookup(
            self,
            namespace,
            input_digest(x),
            ttl,
            read=not (context.no_cache or context.no_store),
            write=not context.no_store,
            context=context,
            model=mv.name,
        )

    # -- registry listener ----------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the cache (registry events come from a reload thread)."""
        self._loop = loop

    def on_load(self, mv: ModelVersion) -> None:
        """Nothing: a version's namespace is made on its first cached request."""

    def on_unload(self, mv: ModelVersion) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._forget(mv)
        else:
            loop.call_soon_threadsafe(self._forget, mv)

    def _forget(self, mv: ModelVersion) -> None:
        namespace = self._namespaces.pop(mv, None)
        self.backend.drop_namespace(namespace or f"{mv.name}/{mv.version}/{load_identity(mv)}")

    def stats(self) -> dict[str, Any]:
        return {
            **self.backend.stats(),
            "hits": self.hits,
            "misses": self.misses,
            "models": sorted(self._models),
        }

    async def close(self) -> None:
        await self.backend.close()
