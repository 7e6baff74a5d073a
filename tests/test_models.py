"""ModelPublisher / ModelSubscriber on a real broker: versions propagate, and nothing half-written,
corrupt or tampered is ever served."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import kafka_ml as km
import numpy as np
import psutil
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka_ml.models import key_fingerprint


@pytest.fixture
def model_topic() -> str:
    """A fresh name: the publisher or subscriber creates the topic (compacted)."""
    return f"models-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def subscribers() -> Iterator[Callable[..., km.ModelSubscriber]]:
    """Creates subscribers and closes them after the test."""
    made: list[km.ModelSubscriber] = []

    def make(topic: str, config: dict[str, str], **kwargs: Any) -> km.ModelSubscriber:
        sub = km.ModelSubscriber(topic, config, **kwargs)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def write_publication(
    producer: km.Producer,
    topic: str,
    data: bytes,
    version: str,
    *,
    chunk_size: int,
    order: Sequence[int] | None = None,
    corrupt: int | None = None,
    rehash_corrupt: bool = False,
    manifest: bool = True,
    manifest_changes: dict[str, Any] | None = None,
    signing_key: bytes | None = None,
    ed25519: tuple[Ed25519PrivateKey, str] | None = None,
) -> None:
    """Writes a publication by hand in the documented wire format, with the faults a test asks for:
    chunks in another order or repeated, a corrupted chunk (with its chunk checksum recomputed or
    not), a doctored manifest, or no manifest at all (a publisher that died). ``manifest_changes``
    apply after signing (HMAC with ``signing_key``, or Ed25519 with ``ed25519=(key, key_id)``)."""
    publication = uuid.uuid4().hex
    pieces = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    corrupted = False
    for i in order if order is not None else range(len(pieces)):
        piece = pieces[i]
        digest = hashlib.sha256(piece).hexdigest()
        if i == corrupt and not corrupted:  # the first copy only
            corrupted = True
            piece = bytes([piece[0] ^ 0xFF]) + piece[1:]
            if rehash_corrupt:
                digest = hashlib.sha256(piece).hexdigest()
        producer.produce(
            topic,
            piece,
            f"kafka-ml/chunk/{publication}/{i}".encode(),
            partition=0,
            headers=[("kafka-ml.offset", str(i * chunk_size).encode()), ("kafka-ml.sha256", digest.encode())],
        )
    if manifest:
        body: dict[str, Any] = {
            "kafka_ml_model": 1,
            "version": version,
            "publication": publication,
            "created": time.time(),
            "format": "bytes",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "chunks": len(pieces),
            "chunk_size": chunk_size,
            "metadata": {},
            "lineage": None,
        }
        if signing_key is not None:
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            body["signature"] = hmac.new(signing_key, canonical, hashlib.sha256).hexdigest()
        if ed25519 is not None:
            # The documented wire format: algorithm and key id are part of the signed body.
            key, key_id = ed25519
            body["signature_algorithm"] = "ed25519"
            body["key_id"] = key_id
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            body["signature"] = key.sign(canonical).hex()
        body.update(manifest_changes or {})
        producer.produce(
            topic, json.dumps(body).encode(), f"kafka-ml/manifest/{version}".encode(), partition=0
        )
    producer.flush()


def history(sub_updates: list[km.ModelVersion]) -> list[str]:
    return [v.version for v in sub_updates]


def test_numpy_weights_round_trip_with_metadata_and_lineage(
    config: dict[str, str], model_topic: str, new_topic: Callable[..., str], subscribers: Any
) -> None:
    data_topic = new_topic()
    with km.Producer(config) as p:
        p.send(data_topic, np.arange(40, dtype=np.float32).reshape(10, 4))
    with km.KafkaDataset(data_topic, config, format="tensor", dtype="float32", shape=4, end="latest") as ds:
        assert sum(len(b) for b in ds) == 10
        weights = {"w": np.random.default_rng(0).random((64, 32), dtype=np.float32), "b": np.arange(32)}
        with km.ModelPublisher(model_topic, config) as pub:
            published = pub.publish(weights, "v1", metadata={"accuracy": 0.93}, lineage=ds)

    # The topic was created compacted, with one partition.
    admin = AdminClient(config)
    resource = ConfigResource("topic", model_topic)
    described = admin.describe_configs([resource])[resource].result(timeout=30)
    assert described["cleanup.policy"].value == "compact"
    assert len(admin.list_topics(model_topic, timeout=30).topics[model_topic].partitions) == 1

    sub = subscribers(model_topic, config)
    got = sub.wait_for("v1", timeout=30)
    assert sub.latest is not None and sub.latest.version == "v1"
    assert got.format == "safetensors" and got.framework == "numpy"
    assert got.sha256 == published.sha256 and got.size == published.size
    assert got.metadata == {"accuracy": 0.93}
    assert got.lineage == {"version": 1, "offsets": {data_topic: {"0": 10}}}
    assert set(sub.latest.model) == {"w", "b"}
    np.testing.assert_array_equal(sub.latest.model["w"], weights["w"])
    np.testing.assert_array_equal(sub.latest.model["b"], weights["b"])


def test_follows_new_versions_in_publication_order(
    config: dict[str, str], model_topic: str, subscribers: Any
) -> None:
    updates: list[km.ModelVersion] = []
    sub = subscribers(model_topic, config, on_update=updates.append)  # created before any publisher
    with km.ModelPublisher(model_topic, config, chunk_size=1000) as pub:
        for i in range(1, 4):
            pub.publish(f"model {i}".encode() * 1000, f"v{i}", metadata={"i": i})
    assert sub.wait_for("v3", timeout=30).version == "v3"
    # Never backwards: every swap is to a later publication.
    assert history(updates) in (["v1", "v2", "v3"], ["v1", "v3"], ["v2", "v3"], ["v3"])
    offsets = [v.offset or 0 for v in updates]
    assert offsets == sorted(offsets)
    assert sub.latest is not None and sub.latest.model == b"model 3" * 1000
    assert sub.stats["rejected"] == 0


def test_killed_publisher_is_never_exposed(
    config: dict[str, str], model_topic: str, subscribers: Any
) -> None:
    with km.ModelPublisher(model_topic, config) as pub:
        pub.publish(b"good one", "v1")
    updates: list[km.ModelVersion] = []
    sub = subscribers(model_topic, config, on_update=updates.append)
    sub.wait_for("v1", timeout=30)

    # A publisher process killed with SIGKILL in the middle of its chunks (slowed down so it is).
    script = textwrap.dedent(
        f"""
        import time, kafka_ml as km
        from kafka_ml import producer
        original = producer.Producer.produce
        def slow(self, *a, **kw):
            time.sleep(0.02)
            return original(self, *a, **kw)
        producer.Producer.produce = slow
        pub = km.ModelPublisher({model_topic!r}, {config!r}, chunk_size=1000)
        print("publishing", flush=True)
        pub.publish(b"x" * 1_000_000, "v2")
        print("finished", flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "publishing"
        wait_until(lambda: _spooled_chunks(sub) >= 20)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert _spooled_chunks(sub) >= 20, "the subscriber saw the interrupted publication's chunks"
    time.sleep(0.5)
    assert sub.latest is not None and sub.latest.version == "v1"

    # The next publication replaces it, and tombstones the orphaned chunks.
    with km.ModelPublisher(model_topic, config) as pub:
        pub.publish(b"next one", "v3")
    assert sub.wait_for("v3", timeout=30).version == "v3"
    assert history(updates) == ["v1", "v3"]
    assert [v.version for v in sub.versions()] == ["v1", "v3"]
    wait_until(lambda: _spooled_chunks(sub) == 0)  # the orphaned chunks were tombstoned


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _spooled_chunks(sub: km.ModelSubscriber) -> int:
    """Chunks the subscriber holds for publications without a manifest."""
    with sub._lock:
        return sum(len(s.extents) for s in sub._spools.values())


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"corrupt": 2}, "chunks [2] do not match their checksums"),
        ({"corrupt": 1, "rehash_corrupt": True}, "SHA-256 mismatch"),
        ({"manifest_changes": {"sha256": "0" * 64}}, "SHA-256 mismatch"),
        ({"manifest_changes": {"size": 10}}, "chunks hold"),
    ],
    ids=["corrupted-chunk", "corrupted-chunk-with-matching-chunk-checksum", "wrong-checksum", "wrong-size"],
)
def test_corrupt_publication_is_rejected_and_previous_stays(
    config: dict[str, str],
    model_topic: str,
    subscribers: Any,
    fault: dict[str, Any],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with km.ModelPublisher(model_topic, config) as pub:
        pub.publish(b"good one", "v1")
    sub = subscribers(model_topic, config)
    sub.wait_for("v1", timeout=30)
    with km.Producer(config) as p:
        write_publication(p, model_topic, os.urandom(5000), "v2", chunk_size=1000, **fault)
    with pytest.raises(km.ModelIntegrityError) as info:
        sub.wait_for("v2", timeout=30)
    assert info.value.version == "v2" and reason in (info.value.reason or "")
    assert sub.latest is not None and sub.latest.version == "v1" and sub.latest.model == b"good one"
    assert sub.stats["rejected"] == 1
    assert sub.stats["corrupt_chunks"] == (1 if "corrupt" in fault and "rehash_corrupt" not in fault else 0)
    assert any("rejected" in r.message and "v2" in r.message for r in caplog.records)
    assert [v.version for v in sub.versions()] == ["v1"]


def test_signatures_are_required_when_a_key_is_set(
    config: dict[str, str], model_topic: str, subscribers: Any
) -> None:
    key = b"shared secret"
    with km.ModelPublisher(model_topic, config, signing_key=key) as pub:
        pub.publish(b"signed", "v1", metadata={"owner": "ml-team"})
    with km.ModelPublisher(model_topic, config) as pub:
        pub.publish(b"unsigned", "v2")
    with km.ModelPublisher(model_topic, config, signing_key=b"another key") as pub:
        pub.publish(b"wrong key", "v3")
    with km.Producer(config) as p:  # signed, then the metadata changed afterwards
        write_publication(
            p,
            model_topic,
            b"doctored",
            "v4",
            chunk_size=100,
            signing_key=key,
            manifest_changes={"metadata": {"x": 1}},
        )

    sub = subscribers(model_topic, config, signing_key=key)
    assert sub.wait_for(timeout=30).version == "v1"
    for version, reason in [("v2", "unsigned"), ("v3", "bad signature"), ("v4", "bad signature")]:
        with pytest.raises(km.ModelIntegrityError, match=reason):
            sub.wait_for(version, timeout=30)
    assert sub.latest is not None and sub.latest.model == b"signed" and sub.latest.signed

    # Following, too: an unsigned publication arriving later is rejected.
    with km.ModelPublisher(model_topic, config) as pub:
        pub.publish(b"unsigned again", "v5")
    with pytest.raises(km.ModelIntegrityError, match="unsigned"):
        sub.wait_for("v5", timeout=30)
    with km.ModelPublisher(model_topic, config, signing_key=key) as pub:
        pub.publish(b"signed again", "v6")
    assert sub.wait_for("v6", timeout=30).version == "v6"
    assert sub.latest is not None and sub.latest.model == b"signed again"
    assert sub.stats["rejected"] == 4

    # Without a key, a subscriber takes the newest publication, signed or not.
    assert subscribers(model_topic, config).wait_for(timeout=30).version == "v6"


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_ed25519_signatures_with_key_ids_and_rotation(
    config: dict[str, str], model_topic: str, subscribers: Any, tmp_path: Path
) -> None:
    current, previous = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(private_pem(current))
    updates: list[km.ModelVersion] = []
    # Public keys only on the serving side: a PEM text and a key object, by key id.
    sub = subscribers(
        model_topic,
        config,
        verify_keys={"2026-12": public_pem(current), "2026-06": previous.public_key()},
        on_update=updates.append,
    )
    with km.ModelPublisher(model_topic, config, signing_key=key_file, key_id="2026-12") as pub:
        assert (pub.signature_algorithm, pub.key_id) == ("ed25519", "2026-12")
        pub.publish(b"signed by the current key", "v1", metadata={"owner": "ml-team"})
    got = sub.wait_for("v1", timeout=30)
    assert got.signed and (got.signature_algorithm, got.key_id) == ("ed25519", "2026-12")
    assert sub.latest is not None and sub.latest.model == b"signed by the current key"

    # Rotation: a version signed with the other trusted key is served too.
    with km.ModelPublisher(model_topic, config, signing_key=previous, key_id="2026-06") as pub:
        pub.publish(b"signed by the previous key", "v2")
    assert sub.wait_for("v2", timeout=30).key_id == "2026-06"
    assert sub.latest is not None and sub.latest.model == b"signed by the previous key"
    assert history(updates) == ["v1", "v2"] and sub.stats["rejected"] == 0

    # Without key_id, the key's fingerprint names it; a list of public keys is trusted under theirs.
    with km.ModelPublisher(model_topic, config, signing_key=str(key_file)) as pub:
        assert pub.key_id == key_fingerprint(current.public_key()) == key_fingerprint(current)
        pub.publish(b"fingerprint id", "v3")
    by_fingerprint = subscribers(model_topic, config, verify_keys=[current.public_key()])
    v3 = by_fingerprint.wait_for(timeout=30)
    assert (v3.version, v3.key_id) == ("v3", key_fingerprint(current))
    # v1 and v2 name key ids this subscriber does not have.
    for version in ("v1", "v2"):
        with pytest.raises(km.ModelIntegrityError, match="unknown key id"):
            by_fingerprint.wait_for(version, timeout=30)
    # ... while the first subscriber knows no key by the fingerprint id.
    with pytest.raises(km.ModelIntegrityError, match="unknown key id"):
        sub.wait_for("v3", timeout=30)
    assert sub.latest is not None and sub.latest.version == "v2"


GOOD_KEY = Ed25519PrivateKey.generate()
GOOD_ID = "2026-12"


def _publish_unsigned(topic: str, config: dict[str, str]) -> None:
    with km.ModelPublisher(topic, config) as pub:
        pub.publish(b"unsigned", "v2")


def _publish_tampered(topic: str, config: dict[str, str]) -> None:
    with km.Producer(config) as p:  # signed with the trusted key, then the metadata changed
        write_publication(
            p,
            topic,
            b"tampered",
            "v2",
            chunk_size=100,
            ed25519=(GOOD_KEY, GOOD_ID),
            manifest_changes={"metadata": {"accuracy": 0.99}},
        )


def _publish_other_key_under_known_id(topic: str, config: dict[str, str]) -> None:
    with km.ModelPublisher(topic, config, signing_key=Ed25519PrivateKey.generate(), key_id=GOOD_ID) as pub:
        pub.publish(b"another key", "v2")


def _publish_unknown_key_id(topic: str, config: dict[str, str]) -> None:
    with km.ModelPublisher(topic, config, signing_key=GOOD_KEY, key_id="2027-01") as pub:
        pub.publish(b"unknown id", "v2")


def _publish_hmac(topic: str, config: dict[str, str]) -> None:
    with km.ModelPublisher(topic, config, signing_key=b"shared secret") as pub:
        pub.publish(b"hmac", "v2")


def _publish_algorithm_swapped(topic: str, config: dict[str, str]) -> None:
    with km.Producer(config) as p:  # an Ed25519 manifest relabelled to get another check
        write_publication(
            p,
            topic,
            b"relabelled",
            "v2",
            chunk_size=100,
            ed25519=(GOOD_KEY, GOOD_ID),
            manifest_changes={"signature_algorithm": "none"},
        )


@pytest.mark.parametrize(
    ("publish_bad", "reason"),
    [
        (_publish_unsigned, "unsigned manifest"),
        (_publish_tampered, "bad signature (ed25519, key id '2026-12')"),
        (_publish_other_key_under_known_id, "bad signature (ed25519, key id '2026-12')"),
        (_publish_unknown_key_id, "unknown key id '2027-01'"),
        (_publish_hmac, "signed with hmac-sha256, but this subscriber has no HMAC signing_key"),
        (_publish_algorithm_swapped, "unknown signature algorithm 'none'"),
    ],
    ids=["unsigned", "tampered", "other-key-known-id", "unknown-key-id", "hmac", "algorithm-swapped"],
)
def test_ed25519_rejections_keep_the_previous_version(
    config: dict[str, str],
    model_topic: str,
    subscribers: Any,
    publish_bad: Callable[[str, dict[str, str]], None],
    reason: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    trusted = {GOOD_ID: GOOD_KEY.public_key()}
    with km.ModelPublisher(model_topic, config, signing_key=GOOD_KEY, key_id=GOOD_ID) as pub:
        pub.publish(b"good one", "v1")
    sub = subscribers(model_topic, config, verify_keys=trusted)
    sub.wait_for("v1", timeout=30)

    publish_bad(model_topic, config)  # while the subscriber follows the topic
    with pytest.raises(km.ModelIntegrityError) as info:
        sub.wait_for("v2", timeout=30)
    assert info.value.version == "v2" and reason in (info.value.reason or "")
    assert sub.latest is not None and sub.latest.version == "v1" and sub.latest.model == b"good one"
    assert sub.stats["rejected"] == 1
    assert any("rejected" in r.message and reason in r.message for r in caplog.records)
    with pytest.raises(km.ModelIntegrityError, match="rejected"):
        sub.pin("v2")
    assert sub.latest.version == "v1"

    # A subscriber started afterwards replays the topic to the same verdict.
    replayed = subscribers(model_topic, config, verify_keys=trusted)
    assert replayed.wait_for(timeout=30).version == "v1"
    with pytest.raises(km.ModelIntegrityError, match=re.escape(reason)):
        replayed.wait_for("v2", timeout=30)


def test_both_kinds_of_key_during_a_migration(
    config: dict[str, str], model_topic: str, subscribers: Any
) -> None:
    key = Ed25519PrivateKey.generate()
    with km.ModelPublisher(model_topic, config, signing_key="old shared secret") as pub:
        assert (pub.signature_algorithm, pub.key_id) == ("hmac-sha256", None)
        pub.publish(b"hmac", "v1")
    sub = subscribers(model_topic, config, signing_key="old shared secret", verify_keys=[key.public_key()])
    assert sub.wait_for("v1", timeout=30).signature_algorithm == "hmac-sha256"
    with km.ModelPublisher(model_topic, config, signing_key=key) as pub:
        pub.publish(b"ed25519", "v2")
    assert sub.wait_for("v2", timeout=30).signature_algorithm == "ed25519"
    assert sub.latest is not None and sub.latest.model == b"ed25519"
    # An HMAC-only subscriber (the previous setup) rejects the Ed25519 version, keeps v1.
    hmac_only = subscribers(model_topic, config, signing_key="old shared secret")
    assert hmac_only.wait_for(timeout=30).version == "v1"
    with pytest.raises(km.ModelIntegrityError, match="has no verify_keys"):
        hmac_only.wait_for("v2", timeout=30)


def test_key_material_never_shown(
    config: dict[str, str], model_topic: str, subscribers: Any, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    pem = private_pem(key)
    pem_body = b"".join(pem.splitlines()[1:-1]).decode()  # the base64 of the key
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    secret = "correct horse battery staple"
    shown: list[str] = []

    with km.ModelPublisher(model_topic, config, signing_key=pem, key_id="k1") as pub:
        shown.append(repr(pub))
        assert "ed25519" in repr(pub) and "'k1'" in repr(pub)
        pub.publish(b"x", "v1")
    with km.ModelPublisher(model_topic, config, signing_key=secret) as pub:
        shown.append(repr(pub))
        assert "hmac-sha256" in repr(pub)
    sub = subscribers(model_topic, config, signing_key=secret, verify_keys={"k1": public_pem(key)})
    sub.wait_for("v1", timeout=30)
    shown.append(repr(sub))
    assert "'k1'" in repr(sub) and "hmac-sha256" in repr(sub)
    shown.append(repr(sub.latest))

    # Errors about keys name the file or the kind of key, never the key.
    (tmp_path / "public.pem").write_bytes(public_pem(key))
    truncated = pem[: len(pem) // 2] + b"\n-----END PRIVATE KEY-----\n"
    bad_signing: list[tuple[Any, str]] = [
        (public_pem(key), "is a public key"),
        (key.public_key(), "is a public key"),
        (truncated, "not a readable PEM private key"),
        (tmp_path / "public.pem", "is a public key"),
        (str(tmp_path / "missing.pem"), "no such key file"),
        (b"", "signing_key is empty"),
        (3.14, "got a float"),
    ]
    for bad, message in bad_signing:
        with pytest.raises(km.ConfigError, match=message) as info:
            km.ModelPublisher(model_topic, config, signing_key=bad)
        shown.append(str(info.value))
    bad_verify: list[tuple[Any, str]] = [
        ({"k1": key}, "is a private key"),
        ({"k1": pem}, "is a private key"),
        ({"k1": b"not a key"}, "must be an Ed25519 public key"),
        ([], "verify_keys is empty"),
    ]
    for keys, message in bad_verify:
        with pytest.raises(km.ConfigError, match=message) as info:
            km.ModelSubscriber(model_topic, config, verify_keys=keys)
        shown.append(str(info.value))
    with pytest.raises(km.ConfigError, match="key_id is set but signing_key is not"):
        km.ModelPublisher(model_topic, config, key_id="k1")

    for text in shown:
        assert secret not in text and pem_body not in text and pem_body[:20] not in text
        assert raw.hex() not in text and "PRIVATE KEY-----" not in text


def test_duplicate_and_reordered_chunks_are_assembled(
    config: dict[str, str], model_topic: str, subscribers: Any
) -> None:
    sub = subscribers(model_topic, config)
    data = os.urandom(10_000)
    with km.Producer(config) as p:
        # As producer retries without idempotence could leave them: repeats and another order.
        write_publication(
            p, model_topic, data, "v1", chunk_size=1000, order=[3, 0, 1, 1, 2, 9, 4, 5, 0, 6, 7, 8, 9]
        )
    assert sub.wait_for("v1", timeout=30).size == 10_000
    assert sub.latest is not None and sub.latest.model == data
    assert sub.stats["duplicate_chunks"] == 3 and sub.stats["rejected"] == 0

    # A corrupt first copy is replaced by a good repeat of the same chunk.
    data = os.urandom(5_000)
    with km.Producer(config) as p:
        write_publication(p, model_topic, data, "v2", chunk_size=1000, order=[0, 1, 2, 2, 3, 4], corrupt=2)
    assert sub.wait_for("v2", timeout=30).sha256 == hashlib.sha256(data).hexdigest()
    assert sub.latest is not None and sub.latest.model == data and sub.stats["rejected"] == 0


def test_restarted_subscriber_comes_back_to_the_same_version_and_pins(
    config: dict[str, str], model_topic: str, subscribers: Any, tmp_path: Path
) -> None:
    with km.ModelPublisher(model_topic, config, keep_last=2, chunk_size=500) as pub:
        for i in range(1, 4):
            pub.publish(os.urandom(2000), f"v{i}")
    first = subscribers(model_topic, config, directory=tmp_path / "a")
    latest = first.wait_for(timeout=30)
    first.close()
    second = subscribers(model_topic, config, directory=tmp_path / "b")
    again = second.wait_for(timeout=30)
    assert (
        (again.version, again.sha256, again.offset)
        == (latest.version, latest.sha256, latest.offset)
        == (
            "v3",
            latest.sha256,
            latest.offset,
        )
    )
    assert [v.version for v in second.versions()] == ["v2", "v3"], "v1 is beyond keep_last: tombstoned"

    # Rolling back pins an older version: new publications are followed but not served.
    assert second.rollback().version == "v2"
    assert second.latest is not None and second.latest.version == "v2" and second.pinned
    with km.ModelPublisher(model_topic, config, keep_last=2) as pub:
        pub.publish(b"four", "v4")
    second.wait_for("v4", timeout=30)
    assert second.latest.version == "v2"
    assert second.unpin() is not None and second.latest.version == "v4"
    with pytest.raises(km.ConfigError, match="not on topic"):
        second.pin("v1")


def test_replay_skips_a_corrupt_newest_version(
    config: dict[str, str], model_topic: str, subscribers: Any
) -> None:
    with km.ModelPublisher(model_topic, config) as pub:
        pub.publish(b"good one", "v1")
    with km.Producer(config) as p:
        write_publication(
            p, model_topic, b"bad" * 100, "v2", chunk_size=100, manifest_changes={"sha256": "0" * 64}
        )
        write_publication(p, model_topic, b"partial" * 100, "v3", chunk_size=100, manifest=False)
    sub = subscribers(model_topic, config)
    assert sub.wait_for(timeout=30).version == "v1"
    assert sub.stats["rejected"] == 1


def test_bad_arguments_are_named(config: dict[str, str], model_topic: str) -> None:
    with km.ModelPublisher(model_topic, config) as pub:
        with pytest.raises(km.ConfigError, match="cannot publish a list"):
            pub.publish([1, 2, 3], "v1")
        with pytest.raises(km.ConfigError, match="tensor 'w' is a list"):
            pub.publish({"w": [1.0]}, "v1")
        with pytest.raises(km.ConfigError, match="is not a file"):
            pub.publish("/nonexistent/model.onnx", "v1")
        with pytest.raises(km.ConfigError, match="version must be a non-empty string"):
            pub.publish(b"x", "")
        with pytest.raises(km.ConfigError, match="JSON-serializable"):
            pub.publish(b"x", "v1", metadata={"f": object()})
    with pytest.raises(km.ConfigError, match="chunk_size"):
        km.ModelPublisher(model_topic, config, chunk_size=2_000_000)
    with pytest.raises(km.ConfigError, match="unknown loader"):
        km.ModelSubscriber(model_topic, config, loader="pickle")  # type: ignore[arg-type]


def test_large_artifact_is_delivered_with_bounded_memory(
    config: dict[str, str], model_topic: str, subscribers: Any, tmp_path: Path
) -> None:
    size = 200 << 20
    artifact = tmp_path / "model.bin"
    digest = hashlib.sha256()
    with artifact.open("wb") as f:
        for _ in range(size >> 20):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)

    process = psutil.Process()
    baseline = process.memory_info().rss
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        sub = subscribers(model_topic, config, loader="path", directory=tmp_path / "sub")
        with km.ModelPublisher(model_topic, config) as pub:
            pub.publish(artifact, "big")
        got = sub.wait_for("big", timeout=60)
    finally:
        stop.set()
        sampler.join()
    assert got.size == size and got.sha256 == digest.hexdigest()
    assert got.path is not None and got.path.stat().st_size == size and got.model == got.path
    growth = (peak - baseline) >> 20
    # Publisher and subscriber together, in this process: far below the artifact's 200 MB.
    assert growth < 110, f"RSS grew by {growth} MiB while moving a 200 MiB artifact"
