"""The data plane: one inference path for every protocol (see :mod:`.service`)."""

from mlgate.dataplane.service import DataPlane
from mlgate.dataplane.types import (
    AnomalyOutput,
    ClassificationOutput,
    Codec,
    Encoded,
    InferenceContext,
    InferenceEvent,
    InferenceInput,
    InferenceObserver,
    InferenceResult,
    Output,
    Substitution,
)

__all__ = [
    "AnomalyOutput",
    "ClassificationOutput",
    "Codec",
    "DataPlane",
    "Encoded",
    "InferenceContext",
    "InferenceEvent",
    "InferenceInput",
    "InferenceObserver",
    "InferenceResult",
    "Output",
    "Substitution",
]
