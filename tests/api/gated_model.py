"""A deliberately slow test model that a test can hold in the middle of a call.

Its runtime (``gated-test``, registered on import) sleeps a little on every call, so the
server measures it as slow, and answers a constant anomaly score read from its artifact.
A call whose first feature is :data:`HOLD` waits until the test opens the model's
:class:`Gate`: the test knows a request is inside the model call and can do things
(probe the server, reload the repository) before letting it finish.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mlgate.registry.manifest import Manifest, sha256_file
from mlgate.registry.runtimes import LoadOptions, register_runtime

RUNTIME = "gated-test"
HOLD = 42.0
#: Every call sleeps this long: far above the inline threshold (150 µs by default).
CALL_S = 0.002
#: A held call gives up after this long (a test that never opens the gate fails, not hangs).
HOLD_LIMIT_S = 5.0


class Gate:
    """Holds the calls of a model that carry :data:`HOLD` until :meth:`open`."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self._entered = threading.Event()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.held = 0
        """Calls waiting at the gate now."""
        self.timed_out = False
        """A held call gave up waiting (the test never opened the gate in time)."""
        _GATES[self.token] = self

    def open(self) -> None:
        self._release.set()

    async def entered(self, timeout_s: float = 10.0) -> None:
        """Wait (without blocking the event loop) until a held call has started."""
        deadline = time.monotonic() + timeout_s
        while not self._entered.is_set():
            assert time.monotonic() < deadline, "no call reached the gate"
            await asyncio.sleep(0.01)

    def hold(self) -> None:
        with self._lock:
            self.held += 1
        self._entered.set()
        released = self._release.wait(HOLD_LIMIT_S)
        with self._lock:
            self.held -= 1
            self.timed_out |= not released


_GATES: dict[str, Gate] = {}


class GatedRuntime:
    """A constant score after a short sleep; held at the gate for :data:`HOLD` rows."""

    input_dtype = np.dtype(np.float64)

    def __init__(self, artifact: Path, manifest: Manifest, options: LoadOptions) -> None:
        spec = json.loads(artifact.read_text())
        self.score = float(spec["score"])
        self.gate = _GATES[spec["gate"]]

    def run(self, x: np.ndarray) -> np.ndarray:
        time.sleep(CALL_S)
        if np.any(x[:, 0] == HOLD):
            self.gate.hold()
        return np.full(len(x), self.score)


register_runtime(RUNTIME, GatedRuntime)


def write_gated_model(
    repo: Path, name: str, version: str, *, score: float, threshold: float, gate: Gate
) -> Path:
    """``repo/name/version`` (created or replaced): two features, a constant score."""
    version_dir = repo / name / version
    version_dir.mkdir(parents=True, exist_ok=True)
    # The version's content decides its size: a replacement is seen as a change.
    artifact: dict[str, Any] = {"score": score, "gate": gate.token, "pad": "x" * int(score * 100)}
    (version_dir / "model.json").write_text(json.dumps(artifact))
    manifest = {
        "name": name,
        "version": version,
        "runtime": RUNTIME,
        "task": "anomaly",
        "artifact": "model.json",
        "artifact_sha256": sha256_file(version_dir / "model.json"),
        "features": [{"name": "a"}, {"name": "b"}],
        "threshold": threshold,
    }
    (version_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return version_dir
