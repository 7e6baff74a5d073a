"""Manifest signatures: HMAC-SHA256 secrets and Ed25519 keys, the publisher's `_Signer` and the
subscriber's `_Verifier`. A signature covers the canonical JSON of the manifest (algorithm and key
id included)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from ..exceptions import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# What ModelPublisher(signing_key=) takes: an HMAC secret (bytes, or a str that is neither PEM
# nor a file), or an Ed25519 private key (the object, PEM text, or a PEM file).
SigningKey = Union[bytes, str, "os.PathLike[str]", "Ed25519PrivateKey"]
# What ModelSubscriber(verify_keys=) takes for each key: an Ed25519 public key object, PEM text,
# a PEM file, or the raw 32 bytes.
VerifyKey = Union[bytes, str, "os.PathLike[str]", "Ed25519PublicKey"]

HMAC_SHA256 = "hmac-sha256"
ED25519 = "ed25519"


def _canonical(manifest: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _algorithm(manifest: Mapping[str, Any]) -> object:
    # Manifests signed before Ed25519 existed carry no algorithm: they are HMAC-SHA256.
    return manifest.get("signature_algorithm", HMAC_SHA256)


def _need_cryptography() -> None:
    """Ed25519 needs cryptography (HMAC does not): an error naming the extra that installs it."""
    import importlib.util

    if importlib.util.find_spec("cryptography") is None:
        raise ImportError("Ed25519 model signatures need cryptography: pip install 'kafka-ml[models]'")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_fingerprint(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The default key id of an Ed25519 key: the first 16 hex digits of the SHA-256 of its raw
    public key. A name, not a secret: a signature is checked with the key the id names, so a
    matching id proves nothing by itself."""
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"key_fingerprint takes an Ed25519 key, got a {type(key).__name__}")
    return hashlib.sha256(_raw_public(public)).hexdigest()[:16]


def _check_key_id(key_id: object, what: str) -> str:
    # Key ids travel in manifests and appear in logs: short printable names.
    if not isinstance(key_id, str) or not key_id or len(key_id) > 128 or not key_id.isprintable():
        raise ConfigError(f"{what} must be a non-empty printable string of at most 128 characters")
    return key_id


def _pem_source(key: object, what: str) -> tuple[bytes, str] | None:
    """PEM text and where it came from ("PEM text" or the file), or None when ``key`` is neither
    PEM nor a file (then, for a signing key, an HMAC secret).

    Error messages name the file, never the key's bytes."""
    if isinstance(key, os.PathLike):
        path = Path(key)
    elif isinstance(key, (bytes, bytearray, memoryview)):
        data = bytes(key)
        return (data, "PEM text") if data.lstrip().startswith(b"-----BEGIN") else None
    elif isinstance(key, str):
        if key.lstrip().startswith("-----BEGIN"):
            return key.encode(), "PEM text"
        if not os.path.isfile(key):
            if key.endswith((".pem", ".key", ".pub")):
                # Looks like a path: using it as an HMAC secret would sign with the file's name.
                raise ConfigError(f"{what}: no such key file {key!r}")
            return None
        path = Path(key)
    else:
        return None
    try:
        return path.read_bytes(), f"file {str(path)!r}"
    except OSError as e:
        raise ConfigError(f"{what}: cannot read key file {str(path)!r}: {e.strerror}") from None


class _Signer:
    """The publisher's key. Its repr names the algorithm and key id, never the key."""

    def __init__(self, algorithm: str, key_id: str | None, key: bytes | Ed25519PrivateKey) -> None:
        self.algorithm = algorithm
        self.key_id = key_id
        self._key = key

    def sign(self, manifest: dict[str, Any]) -> None:
        """Adds the algorithm, the key id and the signature over both and the rest."""
        manifest["signature_algorithm"] = self.algorithm
        if self.key_id is not None:
            manifest["key_id"] = self.key_id
        body = _canonical(manifest)
        if isinstance(self._key, bytes):
            manifest["signature"] = hmac.new(self._key, body, hashlib.sha256).hexdigest()
        else:
            manifest["signature"] = self._key.sign(body).hex()

    def __repr__(self) -> str:
        return f"<{self.algorithm} signing key {self.key_id!r}>"


def _signer(signing_key: SigningKey | None, key_id: str | None) -> _Signer | None:
    what = "signing_key"
    if signing_key is None:
        if key_id is not None:
            raise ConfigError("key_id is set but signing_key is not")
        return None
    if key_id is not None:
        _check_key_id(key_id, "key_id")
    pem = _pem_source(signing_key, what)
    if pem is None and isinstance(signing_key, (bytes, bytearray, memoryview, str)):
        secret = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
        if not secret:
            # An unset environment variable read as "" would otherwise sign with an empty key.
            raise ConfigError(f"{what} is empty")
        return _Signer(HMAC_SHA256, key_id, secret)
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    if pem is not None:
        private = _load_private_pem(*pem, what)
    elif isinstance(signing_key, Ed25519PrivateKey):
        private = signing_key
    elif isinstance(signing_key, Ed25519PublicKey):
        raise ConfigError(f"{what} is a public key: a publisher signs with the Ed25519 private key")
    else:
        raise ConfigError(
            f"{what} must be bytes or str (an HMAC secret) or an Ed25519 private key (the object, PEM "
            f"text or a PEM file), got a {type(signing_key).__name__}"
        )
    return _Signer(ED25519, key_id if key_id is not None else key_fingerprint(private), private)


def _load_private_pem(data: bytes, source: str, what: str) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if b"PUBLIC KEY" in data.lstrip().split(b"\n", 1)[0]:
        raise ConfigError(f"{what} ({source}) is a public key: a publisher signs with the private key")
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{what} ({source}) is an encrypted private key: load it with cryptography's "
            "load_pem_private_key(data, password) and pass the key object"
        ) from None
    except ValueError:
        # cryptography's own message is not repeated: it adds nothing a user can act on.
        raise ConfigError(f"{what} ({source}) is not a readable PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{what} ({source}) is a {type(key).__name__}: only Ed25519 keys are supported")
    return key


def _verify_key(key: VerifyKey, what: str) -> Ed25519PublicKey:
    _need_cryptography()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if isinstance(key, Ed25519PrivateKey):
        raise ConfigError(
            f"{what} is a private key: give the subscriber its public_key(), so that a serving "
            "process holds no key that can sign"
        )
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return Ed25519PublicKey.from_public_bytes(bytes(key))
    pem = _pem_source(key, what)
    if pem is None:
        raise ConfigError(
            f"{what} must be an Ed25519 public key: the object, PEM text, a PEM file or the raw 32 bytes "
            f"(got a {type(key).__name__})"
        )
    data, source = pem
    if b"PRIVATE KEY" in data:
        raise ConfigError(
            f"{what} ({source}) is a private key: give the subscriber the public key, so that a "
            "serving process holds no key that can sign"
        )
    try:
        public = load_pem_public_key(data)
    except ValueError:
        raise ConfigError(f"{what} ({source}) is not a readable PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"{what} ({source}) is a {type(public).__name__}: only Ed25519 keys are supported")
    return public


class _Verifier:
    """The subscriber's keys: an HMAC secret and/or Ed25519 public keys by key id."""

    def __init__(
        self,
        signing_key: bytes | str | None,
        verify_keys: Mapping[str, VerifyKey] | Sequence[VerifyKey] | None,
    ) -> None:
        self._hmac: bytes | None = None
        if signing_key is not None:
            if not isinstance(signing_key, (bytes, bytearray, str)):
                raise ConfigError(
                    f"signing_key is the HMAC secret (bytes or str), got a {type(signing_key).__name__}; "
                    "Ed25519 public keys go in verify_keys"
                )
            self._hmac = signing_key.encode() if isinstance(signing_key, str) else bytes(signing_key)
            if not self._hmac:
                raise ConfigError("signing_key is empty")
        self._ed25519: dict[str, Ed25519PublicKey] = {}
        if verify_keys is None:
            return
        if isinstance(verify_keys, (str, bytes, bytearray, os.PathLike)) or not isinstance(
            verify_keys, (Mapping, Sequence)
        ):
            raise ConfigError(
                "verify_keys must be a dict {key_id: public key} or a list of public keys "
                f"(got a {type(verify_keys).__name__})"
            )
        if isinstance(verify_keys, Mapping):
            for key_id, key in verify_keys.items():
                _check_key_id(key_id, "a key id of verify_keys")
                self._ed25519[key_id] = _verify_key(key, f"verify_keys[{key_id!r}]")
        else:
            for i, key in enumerate(verify_keys):
                public = _verify_key(key, f"verify_keys[{i}]")
                self._ed25519[key_fingerprint(public)] = public
        if not self._ed25519:
            raise ConfigError("verify_keys is empty: give at least one Ed25519 public key, or None")

    @property
    def required(self) -> bool:
        return self._hmac is not None or bool(self._ed25519)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._ed25519)

    def problem(self, m: Mapping[str, Any]) -> str | None:
        """Why the manifest's signature is not acceptable, or None (also when no key is set)."""
        if not self.required:
            return None
        signature = m.get("signature")
        if not isinstance(signature, str):
            return "unsigned manifest (this subscriber requires a signature)"
        algorithm = _algorithm(m)
        if algorithm == HMAC_SHA256:
            if self._hmac is None:
                return "signed with hmac-sha256, but this subscriber has no HMAC signing_key"
            expected = hmac.new(self._hmac, _canonical(m), hashlib.sha256).hexdigest()
            # Bytes: compare_digest refuses str with non-ASCII characters, which a forged manifest may hold.
            ok = hmac.compare_digest(signature.encode(), expected.encode())
            return None if ok else "bad signature (hmac-sha256)"
        if algorithm == ED25519:
            if not self._ed25519:
                return "signed with ed25519, but this subscriber has no verify_keys"
            key_id = m.get("key_id")
            public = self._ed25519.get(key_id) if isinstance(key_id, str) else None
            if public is None:
                trusted = ", ".join(repr(k) for k in self.key_ids)
                return f"unknown key id {_shorten(key_id)} (verify_keys has {trusted})"
            from cryptography.exceptions import InvalidSignature

            try:
                public.verify(bytes.fromhex(signature), _canonical(m))
            except (ValueError, InvalidSignature):
                return f"bad signature (ed25519, key id {key_id!r})"
            return None
        return f"unknown signature algorithm {_shorten(algorithm)}"

    def __repr__(self) -> str:
        parts = ([HMAC_SHA256] if self._hmac is not None else []) + [f"{ED25519} {k!r}" for k in self.key_ids]
        return f"<verify keys: {', '.join(parts) or 'none'}>"


def _shorten(value: object) -> str:
    # Values read from the topic go into log lines: bounded, and repr()-escaped.
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
