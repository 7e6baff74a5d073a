"""`ModelPublisher` / `ModelSubscriber`: versioned, chunked, verified model artifacts on a
compacted topic, hot-swapped in serving processes.

One module per job: ``wire`` (the topic's keys, headers and manifest; it documents the wire
format), ``signing`` (HMAC and Ed25519 signatures), ``topic`` (creating and reading the topic),
``artifacts`` (what can be published), ``publisher``, ``spool`` (chunks assembled on disk) and
``subscriber``.
"""

from __future__ import annotations

from .publisher import ModelPublisher
from .signing import key_fingerprint
from .subscriber import ModelSubscriber
from .wire import ModelVersion

# What `kafka_ml.models` offered as one module, importable from it as before (the unit tests use
# the private ones).
from .signing import ED25519 as ED25519, HMAC_SHA256 as HMAC_SHA256  # isort: skip
from .signing import SigningKey as SigningKey, VerifyKey as VerifyKey  # isort: skip
from .signing import _signer as _signer, _Verifier as _Verifier  # isort: skip
from .spool import _Spool as _Spool  # isort: skip
from .subscriber import Loader as Loader  # isort: skip

__all__ = ["ModelPublisher", "ModelSubscriber", "ModelVersion", "key_fingerprint"]
