"""Detection rules: which rows of an answer leave for the sinks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlgate.dataplane.types import AnomalyOutput, ClassificationOutput, Output
from mlgate.registry.manifest import DetectionSpec, Manifest


@dataclass(frozen=True)
class DetectionRule:
    """A model version's compiled rule."""

    min_confidence: float
    classes: np.ndarray | None
    """Classification: per class index, whether it leaves; None for anomaly models."""

    def matches(self, output: Output) -> np.ndarray:
        """Indices of the rows that leave."""
        if isinstance(output, ClassificationOutput):
            assert self.classes is not None
            mask = self.classes[output.predicted]
        else:
            assert isinstance(output, AnomalyOutput)
            mask = output.is_anomaly.astype(bool)
            if output.scored is not None:
                mask &= output.scored
        if self.min_confidence > 0:
            mask &= output.confidence >= self.min_confidence
        return np.flatnonzero(mask)


def compile_rule(spec: DetectionSpec, manifest: Manifest) -> DetectionRule | None:
    """The rule of ``spec`` for a version (None when disabled or no class can match).

    Classes the version does not have are ignored (a rule may outlive a class).
    """
    if not spec.enabled:
        return None
    if manifest.task != "classification":
        return DetectionRule(spec.min_confidence, None)
    wanted = set(spec.classes if spec.classes is not None else manifest.attack_classes)
    leaves = np.array([name in wanted for name in manifest.classes], dtype=bool)
    if not leaves.any():
        return None
    return DetectionRule(spec.min_confidence, leaves)
