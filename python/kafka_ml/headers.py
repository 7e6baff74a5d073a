"""The names of the headers kafka-ml writes (defined once, in the Rust core's ``headers``).

A dead-lettered message (a ``KafkaDataset`` with ``on_error="dead_letter"``, or an
``InferenceLoop`` with ``on_predict_error="dead_letter"``) carries ``ERROR`` and the lineage
headers; every result of an ``InferenceLoop`` carries the lineage headers and, with a model,
``MODEL_VERSION``.
"""

from __future__ import annotations

from . import _native

__all__ = ["ERROR", "MODEL_VERSION", "SOURCE_OFFSET", "SOURCE_PARTITION", "SOURCE_TOPIC"]

#: Lineage headers of every result (and of a dead-lettered input).
SOURCE_TOPIC: str = _native.HEADER_SOURCE_TOPIC
SOURCE_PARTITION: str = _native.HEADER_SOURCE_PARTITION
SOURCE_OFFSET: str = _native.HEADER_SOURCE_OFFSET
#: The model version that predicted a result.
MODEL_VERSION: str = _native.HEADER_MODEL_VERSION
#: Why a message was dead-lettered.
ERROR: str = _native.HEADER_ERROR
