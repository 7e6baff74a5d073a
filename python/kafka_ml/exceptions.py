"""The exception tree of kafka-ml. Every error the library raises is a :class:`KafkaMLError`.

Errors that come from librdkafka carry its ``code`` (number), ``name`` (e.g. ``"_TRANSPORT"``,
``"UNKNOWN_TOPIC_OR_PART"``), and whether retrying may help (``retriable``) or the client is
unusable (``fatal``), as confluent-kafka users know them.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "AuthorizationError",
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
    "EncodeError",
    "ForkedProcessError",
    "IncompleteReadError",
    "InferenceError",
    "IngestError",
    "KafkaError",
    "KafkaMLError",
    "KafkaTimeoutError",
    "ModelIntegrityError",
    "SSLError",
    "SchemaRegistryError",
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


class IngestError(KafkaMLError, ValueError):
    """An ingest (files to a topic) stopped on input it cannot read or encode, on another error
    (the original is the ``__cause__``), or finished with rows that failed delivery.

    ``file``, ``row`` (0-based, data rows) and ``column`` locate the bad input where known;
    ``delivered`` and ``failed`` count the rows the delivery reports had settled when it was
    raised (every row sent before the error is waited for first); ``result`` is the
    :class:`kafka_ml.files.IngestResult` when the ingest ran to the end."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
        delivered: int = 0,
        failed: int = 0,
        result: object = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.row = row
        self.column = column
        self.delivered = delivered
        self.failed = failed
        self.result = result


class UnknownTopicError(KafkaMLError):
    """A topic or partition that does not exist on the cluster."""


class KafkaTimeoutError(KafkaMLError, TimeoutError):
    """An operation did not finish in time (e.g. the broker is unreachable)."""


class IncompleteReadError(KafkaMLError):
    """A read of an exact offset range could not reach its end: the records were deleted or
    lost, or they were out of reach for longer than the read's timeout. Raised instead of
    handing out part of the range (``kafka_ml.ray``'s read tasks)."""


class DeliveryError(KafkaMLError):
    """One or more messages could not be delivered."""


class KafkaError(KafkaMLError):
    """Any other error reported by librdkafka or the broker."""


class ClosedError(KafkaMLError):
    """The object was used after ``close()``."""


class ForkedProcessError(KafkaMLError, RuntimeError):
    """A reader, producer or the async API was used in a process forked after it started (a
    DataLoader worker, ``multiprocessing`` with the ``fork`` start method). Its threads and
    connections exist only in the parent: create the object in the child instead. A
    :class:`KafkaDataset` made in the parent is fine; iterating it in the child starts a pass of
    the child's own."""


class AuthenticationError(KafkaMLError):
    """The cluster refused the client's login: wrong password, unknown user, an invalid or
    expired OAUTHBEARER token, or a SASL mechanism the listener does not offer. Raised as soon as
    the broker says so (about a second), not after the operation's timeout."""


class SSLError(AuthenticationError):
    """The TLS handshake failed: the broker's certificate is signed by an unknown CA, has
    expired, or does not match the host name; or the broker refused the client's certificate.
    The message carries OpenSSL's verification error."""


class AuthorizationError(KafkaMLError, PermissionError):
    """An ACL denies the operation. ``resource`` names what was denied (``"topic 'x'"``,
    ``"group 'g'"``, ``"transactional id 't'"``, ``"cluster"``) and ``operation`` the action
    (``"read"``, ``"write"``, ``"describe"``, ``"create"``)."""

    def __init__(
        self,
        message: str,
        *,
        resource: str = "",
        operation: str = "",
        code: int | None = None,
        name: str | None = None,
        retriable: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(message, code=code, name=name, retriable=retriable, fatal=fatal)
        self.resource = resource
        self.operation = operation


class SchemaRegistryError(KafkaMLError):
    """The Schema Registry refused a request (an incompatible schema, an unknown subject, wrong
    credentials) or could not be reached. ``status`` is the HTTP status (``None`` when the
    registry did not answer) and ``error_code`` the registry's own code (HTTP 409 for an
    incompatible schema; HTTP 404 with code 40403 for an unknown schema id). Credentials never
    appear in the message."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: int | None = None,
        code: int | None = None,
        name: str | None = None,
        retriable: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(message, code=code, name=name, retriable=retriable, fatal=fatal)
        self.status = status
        self.error_code = error_code


class ModelIntegrityError(KafkaMLError):
    """A published model version failed verification (incomplete, corrupt, unsigned or badly
    signed) or could not be loaded; ``version`` names it and ``reason`` says what failed."""

    def __init__(self, message: str, *, version: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.version = version
        self.reason = reason


class InferenceError(KafkaMLError):
    """The inference loop stopped: ``predict`` raised (with ``on_predict_error="stop"``), or the
    results could not be written. Nothing of the failed batch was committed."""


# -- Kafka Connect (kafka_ml.connect) ------------------------------------------------------------


class ConnectError(KafkaMLError):
    """The Kafka Connect REST API refused a request or could not be reached.

    ``status`` is the HTTP status (``None`` when no answer came), ``error_code`` and
    ``message`` are Connect's own (its error body ``{"error_code": ..., "message": ...}``)."""

    def __init__(self, message: str, *, status: int | None = None, error_code: int | None = None) -> None:
        super().__init__(message, code=error_code)
        self.status = status
        self.error_code = error_code
        self.message = message


class ConnectUnreachableError(ConnectError):
    """No answer from the Connect worker: connection refused, DNS failure, timeout, TLS error."""


class ConnectorNotFoundError(ConnectError, LookupError):
    """The connector (or its task) does not exist on the Connect cluster."""


class ConnectConflictError(ConnectError):
    """The Connect cluster is rebalancing or the connector's configuration changed meanwhile
    (HTTP 409, or 500 "rebalance expected"); retrying later may succeed. The client repeats such
    requests for ``ConnectClient(rebalance_timeout=...)`` seconds before raising this."""


class ConnectorExistsError(ConnectConflictError):
    """A connector of that name already exists."""


class ConnectValidationError(ConnectError, ValueError):
    """A connector configuration is invalid; ``errors`` maps each setting to its errors."""

    def __init__(
        self,
        message: str,
        *,
        errors: dict[str, list[str]],
        status: int | None = None,
        error_code: int | None = None,
    ) -> None:
        listed = "".join(f"\n  {name}: {'; '.join(errs)}" for name, errs in errors.items())
        super().__init__(message + listed, status=status, error_code=error_code)
        self.errors = errors


class ConnectorFailedError(ConnectError):
    """The connector or one of its tasks is ``FAILED``; ``trace`` is the worker's stack trace
    and ``connector_status`` the whole status (a :class:`kafka_ml.connect.ConnectorStatus`)."""

    def __init__(self, message: str, *, trace: str | None, connector_status: object) -> None:
        super().__init__(message)
        self.trace = trace
        self.connector_status = connector_status


class ConnectTimeoutError(ConnectError, TimeoutError):
    """A connector did not reach the awaited state in time."""
