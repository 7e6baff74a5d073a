"""kafka-ml: Apache Kafka as a first-class data source and sink for machine learning."""

import logging as _logging

from ._native import Batch, EmbeddedCluster, __version__, librdkafka_features, librdkafka_version
from .dataset import KafkaDataset

# Kafka Connect errors are here too; the client is kafka_ml.connect.ConnectClient (`connect` extra).
from .exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClosedError,
    ConfigError,
    ConnectConflictError,
    ConnectError,
    ConnectorExistsError,
    ConnectorFailedError,
    ConnectorNotFoundError,
    ConnectTimeoutError,
    ConnectUnreachableError,
    ConnectValidationError,
    DecodeError,
    DeliveryError,
    EncodeError,
    ForkedProcessError,
    IncompleteReadError,
    InferenceError,
    IngestError,
    KafkaError,
    KafkaMLError,
    KafkaTimeoutError,
    ModelIntegrityError,
    SchemaRegistryError,
    SSLError,
    UnknownTopicError,
)
from .models import ModelPublisher, ModelSubscriber, ModelVersion
from .online import OnlineTrainer
from .producer import Producer, SendReport
from .registry import SchemaRegistry

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
    "Batch",
    "ClosedError",
    "ConfigError",
    "ConnectConflictError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectUnreachableError",
    "ConnectValidationError",
    "ConnectorExistsError",
    "ConnectorFailedError",
    "ConnectorNotFoundError",
    "DecodeError",
    "DeliveryError",
    "EmbeddedCluster",
    "EncodeError",
    "ForkedProcessError",
    "IncompleteReadError",
    "InferenceError",
    "IngestError",
    "KafkaDataset",
    "KafkaError",
    "KafkaMLError",
    "KafkaTimeoutError",
    "ModelIntegrityError",
    "ModelPublisher",
    "ModelSubscriber",
    "ModelVersion",
    "OnlineTrainer",
    "Producer",
    "SSLError",
    "SchemaRegistry",
    "SchemaRegistryError",
    "SendReport",
    "UnknownTopicError",
    "__version__",
    "librdkafka_features",
    "librdkafka_version",
]

# librdkafka's and the core's log records reach the `kafka_ml` loggers; as for any library, the
# application decides whether and where they are shown (no "last resort" printing to stderr).
_logging.getLogger("kafka_ml").addHandler(_logging.NullHandler())
