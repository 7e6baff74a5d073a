"""The model topics' parts that need no broker: manifest signing and verification, and the chunk
spool that reassembles an artifact from chunks arriving in any order, repeated or corrupt.
Part of the broker-free tier (`make unit`)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka_ml.models import _signer, _Spool, _Verifier

MANIFEST: dict[str, Any] = {"version": "3", "format": "safetensors", "size": 10, "sha256": "ab" * 32}


@pytest.mark.parametrize("field", ["version", "size", "sha256", "signature_algorithm"])
def test_an_hmac_signed_manifest_verifies_and_any_change_breaks_it(field: str) -> None:
    manifest = dict(MANIFEST)
    signer = _signer(b"shared-secret", "k1")
    assert signer is not None and "shared-secret" not in repr(signer)
    signer.sign(manifest)
    assert _Verifier(b"shared-secret", None).problem(manifest) is None
    assert _Verifier(b"another-secret", None).problem(manifest) == "bad signature (hmac-sha256)"
    tampered = {**manifest, field: "x"}
    assert _Verifier(b"shared-secret", None).problem(tampered) is not None
    unsigned = {k: v for k, v in manifest.items() if k != "signature"}
    assert (
        _Verifier(b"shared-secret", None).problem(unsigned)
        == "unsigned manifest (this subscriber requires a signature)"
    )
    assert _Verifier(None, None).problem(unsigned) is None  # no key: nothing required


def test_an_ed25519_signed_manifest_verifies_by_key_id_and_any_change_breaks_it() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    manifest = dict(MANIFEST)
    signer = _signer(private, "release-2026")
    assert signer is not None
    signer.sign(manifest)
    assert manifest["key_id"] == "release-2026" and manifest["signature_algorithm"] == "ed25519"
    trusted = _Verifier(None, {"release-2026": private.public_key()})
    assert trusted.problem(manifest) is None
    assert trusted.problem({**manifest, "size": 11}) == "bad signature (ed25519, key id 'release-2026')"
    wrong_key = _Verifier(None, {"release-2026": other.public_key()})
    assert wrong_key.problem(manifest) == "bad signature (ed25519, key id 'release-2026')"
    unknown = _Verifier(None, {"old": private.public_key()})
    assert unknown.problem(manifest) == "unknown key id 'release-2026' (verify_keys has 'old')"
    hmac_only = _Verifier(b"secret", None)
    assert hmac_only.problem(manifest) == "signed with ed25519, but this subscriber has no verify_keys"


chunked = st.binary(min_size=1, max_size=3000).flatmap(
    lambda data: st.tuples(st.just(data), st.integers(1, 400), st.randoms(use_true_random=False))
)


@settings(max_examples=150, deadline=None)
@given(chunked, st.data())
def test_the_spool_reassembles_chunks_in_any_order_with_repeats_and_corrupt_first_copies(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[bytes, int, Any], data: st.DataObject
) -> None:
    artifact, size, rng = case
    chunks = [(i, off, artifact[off : off + size]) for i, off in enumerate(range(0, len(artifact), size))]
    deliveries: list[tuple[int, int, bytes, str]] = []
    for i, off, body in chunks:
        checksum = hashlib.sha256(body).hexdigest()
        if data.draw(st.booleans()):  # a corrupt copy arrives first, the good one later
            deliveries.append((i, off, bytes([body[0] ^ 0xFF]) + body[1:], checksum))
        deliveries.append((i, off, body, checksum))
        if data.draw(st.booleans()):  # and a duplicate of the good one
            deliveries.append((i, off, body, checksum))
    rng.shuffle(deliveries)  # a corrupt copy may come before or after the good one
    spool = _Spool(tmp_path_factory.mktemp("spool") / "artifact")
    try:
        for i, off, body, checksum in deliveries:
            spool.write(i, off, memoryview(body), checksum)
        assert spool.problem(len(artifact), len(chunks)) is None
        assert spool.corrupt_chunks() == []
        assert spool.sha256(len(artifact)) == hashlib.sha256(artifact).hexdigest()
        assert Path(spool.path).read_bytes() == artifact
    finally:
        spool.discard()


def test_the_spool_names_missing_and_corrupt_chunks(tmp_path: Path) -> None:
    artifact = bytes(range(256)) * 4
    spool = _Spool(tmp_path / "artifact")
    try:
        for i in (0, 2, 3):
            body = artifact[i * 256 : (i + 1) * 256]
            stored = body if i != 2 else bytes([body[0] ^ 0xFF]) + body[1:]  # only a corrupt copy of chunk 2
            spool.write(i, i * 256, memoryview(stored), hashlib.sha256(body).hexdigest())
        assert spool.problem(len(artifact), 4) == "chunks missing: [1]"
        body = artifact[256:512]
        spool.write(1, 256, memoryview(body), hashlib.sha256(body).hexdigest())
        assert spool.problem(len(artifact), 4) is None
        assert spool.corrupt_chunks() == [2]
        assert spool.sha256(len(artifact)) != hashlib.sha256(artifact).hexdigest()
        assert (
            spool.problem(len(artifact) + 1, 4)
            == f"chunks hold {len(artifact)} bytes, the manifest says 1025"
        )
    finally:
        spool.discard()
