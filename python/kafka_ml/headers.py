"""The names of the headers kafka-ml writes, defined once on the Python side.

A dead-lettered message (a ``KafkaDataset`` with ``on_error="dead_letter"``, or an
``InferenceLoop`` with ``on_predict_error="dead_letter"``) carries ``ERROR`` and the lineage
headers; every result of an ``InferenceLoop`` carries the lineage headers and, with a model,
``MODEL_VERSION``. The native reader writes the same names for its dead letters
(tests/test_errors.py checks them).
"""

from __future__ import annotations

__all__ = ["ERROR", "MODEL_VERSION", "SOURCE_OFFSET", "SOURCE_PARTITION", "SOURCE_TOPIC"]

#: Lineage headers of every result (and of a dead-lettered input).
SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET = (
    "kafka_ml.source.topic",
    "kafka_ml.source.partition",
    "kafka_ml.source.offset",
)
#: The model version that predicted a result.
MODEL_VERSION = "kafka_ml.model.version"
#: Why a message was dead-lettered.
ERROR = "kafka_ml.error"
