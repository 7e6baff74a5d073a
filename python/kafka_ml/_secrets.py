"""Which configuration properties hold secrets, and `redact`, for every repr, log line or CLI
output that shows a configuration.

``LIBRDKAFKA_SECRETS`` lists the properties librdkafka itself flags as sensitive
(``_RK_SENSITIVE`` in its ``rdkafka_conf.c``, 2.12: it prints them as ``[redacted]`` in its own
config dumps), aliases included; the core's list of them comes from ``_native``.
``JAVA_CLIENT_SECRETS`` adds the Java client's secret settings (its ``PASSWORD``-typed ones),
because ``--config`` reads the same ``client.properties`` a Java tool takes. Beyond these names,
any property whose last dot-separated part says password, secret, passphrase, token or
credentials is treated as a secret too: connector configurations carry ``database.password``,
``connection.password``, ... and a false positive costs a ``***`` in a printout, a false
negative a leaked password.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from . import _native

__all__ = ["JAVA_CLIENT_SECRETS", "LIBRDKAFKA_SECRETS", "REDACTED", "is_secret", "redact"]

REDACTED = "***"

# The core's list (whose values are also scrubbed from every error and log message), plus the
# properties librdkafka flags that name or identify rather than hold a secret: they are hidden
# from printed configs, but their values are not searched for in messages.
LIBRDKAFKA_SECRETS = frozenset(_native.secret_properties) | {
    "ssl.key.location",
    "ssl.ca.pem",
    "sasl.username",
    "sasl.oauthbearer.assertion.private.key.file",
}

JAVA_CLIENT_SECRETS = frozenset(
    {
        "sasl.jaas.config",  # holds the username and password of PLAIN / SCRAM
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.keystore.key",
        "ssl.truststore.password",
        "sasl.oauthbearer.client.credentials.client.secret",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "basic.auth.user.info",  # Schema Registry's "user:password", often in the same file
    }
)

_SECRETS = LIBRDKAFKA_SECRETS | JAVA_CLIENT_SECRETS
# The last part of a property name that marks a secret whatever its prefix.
_SECRET_WORD = re.compile(r"(^|[._-])(password|passwd|secret|passphrase|token|credentials?)$", re.IGNORECASE)


def is_secret(name: str) -> bool:
    """Whether the property ``name`` holds a secret (see the module's doc)."""
    return name in _SECRETS or bool(_SECRET_WORD.search(name))


def redact(config: Mapping[str, object]) -> dict[str, object]:
    """A copy of ``config`` with the values of secret properties replaced by ``"***"``."""
    return {k: (REDACTED if is_secret(str(k)) else v) for k, v in config.items()}
