"""The exception tree of kafka-ml. Every error the library raises is a :class:`KafkaMLError`.

Errors that come from librdkafka carry its ``code`` (number), ``name`` (e.g. ``"_TRANSPORT"``,
``"UNKNOWN_TOPIC_OR_PART"``), and whether retrying may help (``retriable``) or the client is
unusable (``fatal``), as confluent-kafka users know them.
"""

from __future__ import annotations

__all__ = [
    "ClosedError",
    "ConfigError",
    "DecodeError",
    "DeliveryError",
    "EncodeError",
    "KafkaError",
    "KafkaMLError",
    "KafkaTimeoutError",
    "ModelIntegrityError",
    "UnknownTopicError",
]


class KafkaMLError(Exception):
    """Base class of every kafka-ml error."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        name: str | None = None,
        retriable: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.name = name
        self.retriable = retriable
        self.fatal = fatal


class ConfigError(KafkaMLError, ValueError):
    """A setting is wrong: unknown librdkafka property, bad schema, bad range, ..."""


class DecodeError(KafkaMLError):
    """A message could not be decoded with the declared format; says where and why."""

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        partition: int,
        offset: int,
        reason: str,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason


class EncodeError(KafkaMLError, ValueError):
    """Data to send does not fit the declared format or schema; names the column and row.

    Raised before anything of the failing ``send`` is sent."""


class UnknownTopicError(KafkaMLError):
    """A topic or partition that does not exist on the cluster."""


class KafkaTimeoutError(KafkaMLError, TimeoutError):
    """An operation did not finish in time (e.g. the broker is unreachable)."""


class DeliveryError(KafkaMLError):
    """One or more messages could not be delivered."""


class KafkaError(KafkaMLError):
    """Any other error reported by librdkafka or the broker."""


class ClosedError(KafkaMLError):
    """The object was used after ``close()``."""


class ModelIntegrityError(KafkaMLError):
    """A published model version failed verification (incomplete, corrupt, unsigned or badly
    signed) or could not be loaded; ``version`` names it and ``reason`` says what failed."""

    def __init__(self, message: str, *, version: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.reason = reason
