"""kafka-ml: Apache Kafka as a first-class data source and sink for machine learning."""

from ._native import Batch, EmbeddedCluster, __version__, librdkafka_version
from .dataset import KafkaDataset
from .exceptions import (
    ClosedError,
    ConfigError,
    DecodeError,
    DeliveryError,
    EncodeError,
    KafkaError,
    KafkaMLError,
    KafkaTimeoutError,
    ModelIntegrityError,
    UnknownTopicError,
)
from .models import ModelPublisher, ModelSubscriber, ModelVersion
from .producer import Producer, SendReport

__all__ = [
    "Batch",
    "ClosedError",
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "EmbeddedCluster",
    "EncodeError",
    "KafkaDataset",
    "KafkaError",
    "KafkaMLError",
    "KafkaTimeoutError",
    "ModelIntegrityError",
    "ModelPublisher",
    "ModelSubscriber",
    "ModelVersion",
    "Producer",
    "SendReport",
    "UnknownTopicError",
    "__version__",
    "librdkafka_version",
]

# Kafka Connect errors (the client itself is kafka_ml.connect.ConnectClient, with the `connect` extra).
from .exceptions import (
    ConnectConflictError,
    ConnectError,
    ConnectorExistsError,
    ConnectorFailedError,
    ConnectorNotFoundError,
    ConnectTimeoutError,
    ConnectUnreachableError,
    ConnectValidationError,
)

__all__ += [
    "ConnectConflictError",
    "ConnectError",
    "ConnectTimeoutError",
    "ConnectUnreachableError",
    "ConnectValidationError",
    "ConnectorExistsError",
    "ConnectorFailedError",
    "ConnectorNotFoundError",
]
