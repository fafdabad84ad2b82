"""The detections observer: picks the rows that leave and queues them for every sink.

``observe`` looks up the model version's compiled rule (cached; remade when the
model's model.yaml or the version changes), runs it on the output arrays (a vectorised
mask) and hands the matching rows to each sink's bounded queue. Shadow answers never
leave (they are not decisions anyone acted on); cache hits do (they are answers).
"""

from __future__ import annotations

from typing import Any

from mlgate.dataplane.types import InferenceEvent
from mlgate.errors import MlgateError
from mlgate.registry.manifest import DetectionSpec, ModelFile
from mlgate.registry.registry import ModelRegistry, ModelVersion
from mlgate.sinks.delivery import DeliveryQueue
from mlgate.sinks.rules import DetectionRule, compile_rule


class DetectionDispatcher:
    """An inference observer feeding the sinks' delivery queues."""

    def __init__(
        self,
        registry: ModelRegistry,
        rules: dict[str, DetectionSpec],
        queues: list[DeliveryQueue],
    ) -> None:
        self.registry = registry
        self.rules = rules
        self.queues = queues
        self._compiled: dict[
            tuple[str, str], tuple[ModelFile, ModelVersion, DetectionRule | None]
        ] = {}
        self.detections = 0

    def observe(self, event: InferenceEvent) -> None:
        if event.shadow:
            return
        found = self._rule(event.model, event.version)
        if found is None:
            return
        mv, rule = found
        rows = rule.matches(event.output)
        if not len(rows):
            return
        self.detections += len(rows)
        for queue in self.queues:
            queue.offer(event, rows, mv.manifest)

    def _rule(self, model: str, version: str) -> tuple[ModelVersion, DetectionRule] | None:
        try:
            entry = self.registry.entry(model)
        except MlgateError:
            return None
        mv = entry.versions.get(version)
        if mv is None:
            return None
        key = (model, version)
        known = self._compiled.get(key)
        if known is not None and known[0] is entry.options and known[1] is mv:
            rule = known[2]
        else:
            spec = self.rules.get(model) or entry.options.detections
            rule = compile_rule(spec, mv.manifest) if spec is not None else None
            if len(self._compiled) > 256:  # versions come and go: keep the map small
                self._compiled.clear()
            self._compiled[key] = (entry.options, mv, rule)
        return (mv, rule) if rule is not None else None

    def stats(self) -> dict[str, Any]:
        return {
            "detections": self.detections,
            "rules": sorted(self.rules),
            "sinks": [queue.stats() for queue in self.queues],
        }
