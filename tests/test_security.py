"""Secured clusters on a real broker (kafka/secure_launcher.py): TLS, mTLS, SASL SCRAM and PLAIN,
OAUTHBEARER tokens from a Python callback, ACLs — each component's happy path, each failure as its
typed error in bounded time, and no secret in any output."""

from __future__ import annotations

import asyncio
import base64
import gc
import http.server
import json
import logging
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import kafka_ml as km
import numpy as np
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kafka_ml import _native
from kafka_ml.inference import InferenceLoop
from secure_launcher import unsecured_jwt

SCHEMA = {"id": "int64", "x": ("float32", 4)}

# Failing fast: librdkafka retries a refused login for ever, and a request's own timeout is 10-30 s.
FAST = 8.0


def rows(n: int) -> dict[str, np.ndarray]:
    ids = np.arange(n, dtype=np.int64)
    return {"id": ids, "x": np.repeat(ids[:, None], 4, axis=1).astype(np.float32)}


def create_topic(broker: Any, name: str, partitions: int = 1) -> str:
    """Creates a topic through the broker's PLAINTEXT (setup) listener."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
    return name


@pytest.fixture
def topic(secure_broker: Any) -> str:
    return create_topic(secure_broker, f"secure-{uuid.uuid4().hex[:10]}", partitions=2)


@pytest.fixture
def scram(secure_broker: Any) -> dict[str, Any]:
    return dict(secure_broker.client_config("scram512", user="alice"))


def fill(config: dict[str, Any], topic: str, n: int) -> None:
    with km.Producer(config) as p:
        p.send(topic, rows(n), format="json", schema=SCHEMA, key="id").wait(30)


def read_ids(config: dict[str, Any], topic: str, **kw: Any) -> list[int]:
    with km.KafkaDataset(topic, config, format="json", schema=SCHEMA, end="latest", **kw) as ds:
        return sorted(int(i) for b in ds for i in b["id"])


def test_librdkafka_is_built_with_tls_and_sasl() -> None:
    for feature in ("ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer", "oidc"):
        assert feature in km.librdkafka_features, km.librdkafka_features


# -- every component over SASL_SSL with SCRAM-SHA-512 ---------------------------------------------


def test_send_and_bounded_read_over_scram(scram: dict[str, Any], topic: str) -> None:
    fill(scram, topic, 500)
    assert read_ids(scram, topic) == list(range(500))


@pytest.mark.parametrize("case", ["scram256", "plain"])
def test_other_sasl_mechanisms(secure_broker: Any, topic: str, case: str) -> None:
    config = dict(secure_broker.client_config(case))
    fill(config, topic, 20)
    assert read_ids(config, topic) == list(range(20))


def test_async_producer_over_scram(scram: dict[str, Any], topic: str) -> None:
    from kafka_ml import aio

    async def main() -> None:
        async with aio.Producer(scram) as p:
            report = await p.send(topic, rows(100), format="json", schema=SCHEMA)
            assert report.delivered == 100

    asyncio.run(main())
    assert read_ids(scram, topic) == list(range(100))


def test_group_commit_and_offsets_helpers_over_scram(scram: dict[str, Any], topic: str) -> None:
    fill(scram, topic, 50)
    group = f"g-{uuid.uuid4().hex[:8]}"
    config = {**scram, "group.id": group}
    with km.KafkaDataset(topic, config, format="json", schema=SCHEMA, start="earliest", end="latest") as ds:
        n = sum(len(b) for b in ds)
        ds.commit()
    assert n == 50
    committed = _native.committed_offsets(config, [(topic, 0), (topic, 1)])
    assert sum(o or 0 for o in committed.values()) == 50
    marks = _native.watermarks(scram, [(topic, 0), (topic, 1)])
    assert sum(high for _, high in marks.values()) == 50


@pytest.mark.parametrize("start", ["spawn", "fork"])
def test_dataloader_epoch_over_scram(scram: dict[str, Any], topic: str, start: str) -> None:
    torch = pytest.importorskip("torch")
    from kafka_ml.torch import KafkaIterableDataset

    fill(scram, topic, 300)  # its producer is closed when it returns
    gc.collect()  # and so are the clients earlier tests left to the garbage collector
    ds = KafkaIterableDataset(topic, scram, format="json", schema=SCHEMA, end="latest", batch_size=64)
    # Forked workers may use TLS because the parent has no TLS client open at the fork (one open
    # would be refused in them: test_a_child_forked_with_tls_clients_open_is_refused_tls_at_once).
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context=start)
    seen = sorted(int(i) for batch in loader for i in batch["id"])
    assert seen == list(range(300))


def test_model_publish_and_subscribe_over_scram(scram: dict[str, Any]) -> None:
    model_topic = f"models-{uuid.uuid4().hex[:8]}"
    weights = {"w": np.arange(12, dtype=np.float32).reshape(3, 4)}
    data_topic = f"secure-data-{uuid.uuid4().hex[:8]}"
    fill(scram, data_topic, 10)
    with (
        km.KafkaDataset(data_topic, scram, format="json", schema=SCHEMA, end="latest") as ds,
        km.ModelPublisher(model_topic, scram) as pub,
    ):
        assert sum(len(b) for b in ds) == 10
        pub.publish(weights, "v1", metadata={"trained_on": "secure"}, lineage=ds)
    with km.ModelSubscriber(model_topic, scram) as sub:
        got = sub.wait_for("v1", timeout=30)
        assert got.version == "v1"
        np.testing.assert_array_equal(sub.latest.model["w"], weights["w"])
        # The manifest records where the data came from, never how to log in there.
        assert got.lineage == {"version": 1, "offsets": {data_topic: {"0": 10}}}
        assert scram["sasl.password"] not in json.dumps([got.lineage, got.metadata, repr(got)])


def test_exactly_once_inference_over_scram(scram: dict[str, Any], topic: str) -> None:
    out = f"secure-out-{uuid.uuid4().hex[:8]}"
    fill(scram, topic, 200)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    loop = InferenceLoop(
        lambda b: {"id": b["id"], "y": b["x"].sum(axis=1, dtype="float64")},
        topic,
        out,
        {**scram, "group.id": group},
        delivery="exactly_once",
        format="json",
        schema=SCHEMA,
        output_schema={"id": "int64", "y": "float64"},
    )
    metrics = loop.run(max_messages=200, idle_timeout=10, handle_signals=False)
    assert metrics["messages"] == 200
    with km.KafkaDataset(
        out,
        {**scram, "isolation.level": "read_committed"},
        format="json",
        schema={"id": "int64", "y": "float64"},
        end="latest",
    ) as ds:
        got = sorted(int(i) for b in ds for i in b["id"])
    assert got == list(range(200))


# -- mTLS and OAUTHBEARER ------------------------------------------------------------------------


def test_read_over_mtls(secure_broker: Any, topic: str) -> None:
    config = dict(secure_broker.client_config("mtls"))
    fill(config, topic, 30)
    assert read_ids(config, topic) == list(range(30))


def test_mtls_with_an_encrypted_key(secure_broker: Any, topic: str) -> None:
    config = dict(secure_broker.client_config("mtls_encrypted"))
    fill(config, topic, 10)
    assert read_ids(config, topic) == list(range(10))


def test_read_over_oauthbearer_with_a_token_callback(secure_broker: Any, topic: str) -> None:
    calls: list[str] = []

    def oauth_cb(oauthbearer_config: str) -> tuple[str, float]:
        calls.append(oauthbearer_config)
        return unsecured_jwt("alice", 3600)

    config = {**secure_broker.client_config("oauthbearer"), "oauth_cb": oauth_cb}
    fill(config, topic, 40)
    assert read_ids(config, topic) == list(range(40))
    assert calls, "the callback was never asked for a token"


class _TokenEndpoint(http.server.BaseHTTPRequestHandler):
    """An OAuth 2 token endpoint (client credentials) issuing unsecured JWTs, which the test
    broker's validator accepts: enough for librdkafka's own OIDC client to fetch real tokens."""

    client_id = "kafka-ml-test"
    client_secret = "oidc-" + uuid.uuid4().hex
    requests: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        form = dict(urllib.parse.parse_qsl(body))
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        self.requests.append(form)
        if self.headers.get("Authorization") != f"Basic {expected}" or form.get("grant_type") != (
            "client_credentials"
        ):
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b'{"error": "invalid_client"}')
            return
        token, _ = unsecured_jwt("alice", 3600)
        answer = json.dumps({"access_token": token, "token_type": "bearer", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/token"
    finally:
        server.shutdown()


def test_read_over_oauthbearer_with_librdkafkas_own_oidc_client(
    secure_broker: Any, topic: str, token_endpoint: str
) -> None:
    config = {
        **secure_broker.client_config("oauthbearer"),
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.client.id": _TokenEndpoint.client_id,
        "sasl.oauthbearer.client.secret": _TokenEndpoint.client_secret,
        "sasl.oauthbearer.token.endpoint.url": token_endpoint,
    }
    _TokenEndpoint.requests.clear()
    fill(config, topic, 25)
    assert read_ids(config, topic) == list(range(25))
    assert _TokenEndpoint.requests, "librdkafka never asked the token endpoint"
    # A wrong client secret: the endpoint refuses, so no token, so no login.
    bad = {**config, "sasl.oauthbearer.client.secret": "wrong-" + _TokenEndpoint.client_secret}
    _, took = timed(lambda: read_ids(bad, topic, timeout=20), km.KafkaMLError)
    assert took < 25, took


@pytest.mark.parametrize("verification", ["ca", "off"])
def test_dead_letters_over_scram(scram: dict[str, Any], topic: str, verification: str) -> None:
    if verification == "off":
        # The dead-letter producer takes every setting of the consumer but the consumer-only
        # ones: here the broker's certificate is only accepted because checks are off, so a
        # producer that dropped that setting could not connect.
        scram = {k: v for k, v in scram.items() if k != "ssl.ca.location"}
        scram["enable.ssl.certificate.verification"] = "false"
    with km.Producer(scram) as p:
        p.produce(topic, b'{"id": 1, "x": [1, 2, 3, 4]}', partition=0)
        p.produce(topic, b"not json", partition=0)
        p.produce(topic, b'{"id": 2, "x": [1, 2, 3, 4]}', partition=0)
    dlq = f"secure-dlq-{uuid.uuid4().hex[:8]}"
    with km.KafkaDataset(
        topic,
        scram,
        format="json",
        schema=SCHEMA,
        end="latest",
        on_error="dead_letter",
        dead_letter_topic=dlq,
    ) as ds:
        assert sorted(int(i) for b in ds for i in b["id"]) == [1, 2]
    with km.KafkaDataset(dlq, scram, format="raw", end="latest", metadata=["headers"]) as ds:
        batches = list(ds)
    values = [v for b in batches for v in b.to_numpy()["value"]]
    assert values == [b"not json"]
    headers = repr([b.to_numpy()["headers"] for b in batches])
    assert "kafka_ml.error" in headers and scram["sasl.password"] not in headers


def test_cli_demo_with_a_properties_file(secure_broker: Any, tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text(
        "# the secured listener, as a Kafka tool's --command-config\n"
        + "".join(f"{k}={v}\n" for k, v in secure_broker.client_config("scram512", user="alice").items())
    )
    cli = subprocess.run(
        [sys.executable, "-m", "kafka_ml.cli", "demo", "--config", str(props), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    assert "exactly once: yes" in cli.stdout, cli.stdout[-2000:]
    assert secure_broker.passwords["alice"] not in cli.stdout + cli.stderr


# -- failures: typed, fast, saying what is wrong ----------------------------------------------------


def timed(fn: Callable[[], object], error: type[BaseException]) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(error) as info:
        fn()
    return info.value, time.monotonic() - start


@pytest.mark.parametrize("user", ["alice", "nobody"])
def test_wrong_password_or_unknown_user_fails_fast(secure_broker: Any, topic: str, user: str) -> None:
    config = {**secure_broker.client_config("scram512", user="alice"), "sasl.username": user}
    config["sasl.password"] = "not-the-password-" + uuid.uuid4().hex[:6]
    err, took = timed(lambda: read_ids(config, topic), km.AuthenticationError)
    assert took < FAST, took
    assert "SCRAM" in str(err) or "authentication" in str(err).lower(), err
    assert config["sasl.password"] not in str(err)

    def send() -> None:
        with km.Producer(config) as p:
            p.send(topic, rows(5), format="json", schema=SCHEMA).wait(60)

    err, took = timed(send, km.AuthenticationError)
    assert took < FAST, took


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong_ca", "self-signed certificate in certificate chain"),
        ("expired", "certificate has expired"),
        ("wronghost", "ip address mismatch"),
    ],
)
def test_tls_verification_failures_are_ssl_errors(
    secure_broker: Any, topic: str, case: str, expected: str
) -> None:
    config = dict(secure_broker.client_config(case))
    err, took = timed(lambda: read_ids(config, topic, timeout=20), km.SSLError)
    assert took < FAST, took
    # librdkafka says only "certificate verify failed"; the library adds OpenSSL's reason.
    assert "certificate verify failed" in str(err) and expected in str(err).lower(), err
    assert isinstance(err, km.AuthenticationError)


def test_mtls_without_a_client_certificate_is_refused(secure_broker: Any, topic: str) -> None:
    config = {
        k: v
        for k, v in secure_broker.client_config("mtls").items()
        if k not in ("ssl.certificate.location", "ssl.key.location", "ssl.key.password")
    }
    _, took = timed(lambda: read_ids(config, topic, timeout=20), km.AuthenticationError)
    assert took < FAST, took


def test_reading_a_denied_topic_names_topic_and_operation(secure_broker: Any) -> None:
    forbidden = f"bob-forbidden-{uuid.uuid4().hex[:8]}"
    create_topic(secure_broker, forbidden)
    config = dict(secure_broker.client_config("scram256", user="bob"))
    err, took = timed(lambda: read_ids(config, forbidden), km.AuthorizationError)
    assert took < FAST, took
    assert isinstance(err, km.AuthorizationError)
    assert err.resource == f"topic '{forbidden}'", err.resource
    assert err.operation, err


def test_a_denied_group_names_the_group(secure_broker: Any) -> None:
    readable = f"bob-readable-{uuid.uuid4().hex[:8]}"
    create_topic(secure_broker, readable)
    fill(secure_broker.client_config("scram512", user="alice"), readable, 5)
    config = {**secure_broker.client_config("scram256", user="bob"), "group.id": "not-bobs-group"}
    err, _ = timed(lambda: read_ids(config, readable, start="committed"), km.AuthorizationError)
    assert isinstance(err, km.AuthorizationError)
    assert err.resource == "group 'not-bobs-group'", err.resource
    # The group bob may use works.
    allowed = {**config, "group.id": f"bob-group-{uuid.uuid4().hex[:6]}"}
    assert read_ids(allowed, readable, start="earliest") == list(range(5))


def test_writing_a_denied_topic_is_an_authorization_error(secure_broker: Any) -> None:
    readable = create_topic(secure_broker, f"bob-readable-{uuid.uuid4().hex[:8]}")
    config = dict(secure_broker.client_config("scram256", user="bob"))

    def send(config: dict[str, Any]) -> None:
        with km.Producer(config) as p:
            p.send(readable, rows(3), format="json", schema=SCHEMA)
            p.flush(30)

    # Idempotent (the default): the producer id is refused, as bob may write nowhere.
    err, took = timed(lambda: send(config), km.AuthorizationError)
    assert took < FAST, took
    assert isinstance(err, km.AuthorizationError)
    assert (err.resource, err.operation) == ("cluster", "idempotent write"), err
    # Not idempotent: each message is refused for its topic.
    err, took = timed(lambda: send({**config, "enable.idempotence": "false"}), km.AuthorizationError)
    assert took < FAST, took
    assert isinstance(err, km.AuthorizationError)
    assert readable in err.resource and err.operation == "write", (err.resource, err.operation)


def test_missing_transactional_id_acl_is_an_authorization_error(secure_broker: Any, topic: str) -> None:
    config = {**secure_broker.client_config("scram512", user="carol"), "transactional.id": "carol-tx"}
    with km.Producer(config) as p:
        err, took = timed(lambda: p.init_transactions(20), km.AuthorizationError)
    assert took < FAST, took
    assert isinstance(err, km.AuthorizationError)
    assert err.resource == "transactional id 'carol-tx'", err.resource


@pytest.mark.parametrize("token", ["expired", "garbage", "raises"])
def test_bad_oauth_tokens_are_authentication_errors(secure_broker: Any, topic: str, token: str) -> None:
    def oauth_cb(_config: str) -> tuple[str, float]:
        if token == "raises":
            raise RuntimeError("the identity provider is down")
        if token == "garbage":
            return "not.a.jwt", time.time() + 3600
        jwt, _ = unsecured_jwt("alice", -60)  # expired a minute ago
        return jwt, time.time() + 3600

    config = {**secure_broker.client_config("oauthbearer"), "oauth_cb": oauth_cb}
    _, took = timed(lambda: read_ids(config, topic, timeout=20), km.AuthenticationError)
    assert took < FAST, took


# -- secrets never leak ---------------------------------------------------------------------------


def test_no_secret_in_errors_logs_or_reprs(
    secure_broker: Any, topic: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG, logger="kafka_ml")
    secrets = [secure_broker.passwords["alice"]]
    token, _ = unsecured_jwt("alice", 3600)
    secrets.append(token)
    good = dict(secure_broker.client_config("scram512", user="alice"))
    outputs: list[str] = []

    # Happy paths, with librdkafka's debug log on.
    debug = {**good, "debug": "security,broker,conf"}
    fill(debug, topic, 5)
    with km.KafkaDataset(topic, debug, format="json", schema=SCHEMA, end="latest") as ds:
        outputs += [repr(ds), repr(ds.state_dict())]
        outputs += [repr(b) for b in ds]
    with km.Producer(debug) as p:
        outputs.append(repr(p.send(topic, rows(2), format="json", schema=SCHEMA).wait(30)))

    oauth = {**secure_broker.client_config("oauthbearer"), "oauth_cb": lambda _c: (token, time.time() + 60)}
    assert read_ids(oauth, topic) == [0, 0, 1, 1, 2, 3, 4]

    # Failures whose messages could echo a secret.
    bad = {**good, "sasl.password": "wrong-" + secrets[0]}
    secrets.append(bad["sasl.password"])
    for config in (bad, {**good, "ssl.key.password": secrets[0], "bad.property": "x"}):
        try:
            read_ids(config, topic, timeout=5)
        except km.KafkaMLError as e:
            outputs += [str(e), repr(e)]
        else:
            pytest.fail("a bad config was accepted")

    # The CLI with a properties file holding the password.
    props = secure_broker.workdir / f"client-{uuid.uuid4().hex[:6]}.properties"
    props.write_text("".join(f"{k}={v}\n" for k, v in bad.items() if isinstance(v, str)))
    cli = subprocess.run(
        [sys.executable, "-m", "kafka_ml.cli", "demo", "--config", str(props), "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    outputs += [cli.stdout, cli.stderr]
    assert cli.returncode != 0

    time.sleep(0.5)  # log records are forwarded from librdkafka's threads
    records = [r.getMessage() for r in caplog.records]
    assert any(r.name.startswith("kafka_ml.librdkafka") for r in caplog.records), "no librdkafka log"
    captured = capfd.readouterr()
    text = "\n".join([*outputs, *records, captured.out, captured.err])
    for secret in secrets:
        assert secret not in text


def test_librdkafka_log_goes_to_python_logging_not_stderr(
    secure_broker: Any, topic: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="kafka_ml")
    config = {**secure_broker.client_config("scram512", user="alice"), "sasl.password": "wrong-password"}
    with pytest.raises(km.AuthenticationError):
        read_ids(config, topic, timeout=5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        r.name == "kafka_ml.librdkafka" and r.levelno >= logging.ERROR for r in caplog.records
    ):
        time.sleep(0.1)
    assert any(r.name == "kafka_ml.librdkafka" and r.levelno >= logging.ERROR for r in caplog.records)
    assert "%3|" not in capfd.readouterr().err


def test_librdkafka_keeps_logging_below_errors_once_the_client_is_made(
    config: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # rust-rdkafka sets a new client's log level from what the `log` crate's logger accepts for
    # target "librdkafka"; kafka-ml's logger names its own targets, so that level was "errors
    # only", and every warning and `debug=` line after the client's creation was lost. A broker
    # connection comes up after the producer is made: its debug line must come through.
    caplog.set_level(logging.DEBUG, logger="kafka_ml")
    with km.Producer({**config, "debug": "broker"}) as producer:
        producer.send("t-debug-log", np.zeros((1, 1), dtype=np.float32)).wait(30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "-> UP" in r.getMessage() for r in caplog.records if r.name == "kafka_ml.librdkafka"
        ):
            time.sleep(0.05)
    up = [r for r in caplog.records if r.name == "kafka_ml.librdkafka" and "-> UP" in r.getMessage()]
    assert up and all(r.levelno == logging.DEBUG for r in up), "no debug line after the client was made"


def _log_a_failed_login_in_this_process(config: dict[str, Any], topic: str, password: str) -> None:
    """A forked child's body: its failed login must reach its own Python logging, scrubbed."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("kafka_ml").addHandler(handler)
    try:
        read_ids(config, topic, timeout=5)
    except km.AuthenticationError:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(r.name == "kafka_ml.librdkafka" for r in records):
        time.sleep(0.05)
    logged = [r.getMessage() for r in records if r.name == "kafka_ml.librdkafka"]
    sys.exit(0 if logged and not any(password in m for m in logged) else 3)


def test_a_forked_process_logs_and_connects_while_the_parent_logs(secure_broker: Any, topic: str) -> None:
    """DataLoader workers are forked from a process whose librdkafka threads have logged (and
    scrubbed secrets): a child must connect, and its own log records must reach its logging (it
    inherits no log-forwarding thread). The parent's clients are closed before each fork: forking
    while another thread is inside OpenSSL can hang the child in OpenSSL's own locks, which no
    library above it can prevent (openssl/openssl#19066), and a DataLoader forks with none open."""
    import multiprocessing

    password = f"wrong-{uuid.uuid4().hex}"
    config = {**secure_broker.client_config("scram512", user="alice"), "sasl.password": password}
    fork = multiprocessing.get_context("fork")
    for _ in range(3):
        with pytest.raises(km.AuthenticationError):  # the parent logs a failed login
            read_ids(config, topic, timeout=5)
        child = fork.Process(target=_log_a_failed_login_in_this_process, args=(config, topic, password))
        child.start()
        child.join(60)
        if child.is_alive():
            child.kill()
            pytest.fail("a forked child hung")
        assert child.exitcode == 0, "a forked child's librdkafka log did not reach its logging"


def _tls_and_plaintext_in_a_forked_child(
    tls: dict[str, Any], plaintext: dict[str, Any], topic: str, answers: Any
) -> None:
    """A forked child's body: tries a TLS producer, then a PLAINTEXT one; reports both."""
    out = []
    for config in (tls, plaintext):
        try:
            with km.Producer(config) as p:
                p.produce(topic, b'{"id": 7, "x": [1, 2, 3, 4]}', partition=0)
                p.flush(30)
            out.append("sent")
        except km.ForkedProcessError as e:
            out.append(f"ForkedProcessError: {e}")
    answers.send(out)


def test_a_child_forked_with_tls_clients_open_is_refused_tls_at_once(secure_broker: Any, topic: str) -> None:
    """OpenSSL's locks, held by a parent's librdkafka thread mid-handshake, stay held in a child
    forked then, and the child's first TLS client hangs on them (openssl/openssl#19066; seen in
    DataLoader workers). A child forked while TLS clients are open gets ForkedProcessError at
    once instead, for TLS only; once the parent's TLS clients are closed, children use TLS."""
    import multiprocessing

    scram = secure_broker.client_config("scram512", user="alice")
    plaintext = secure_broker.client_config("plaintext")
    fork = multiprocessing.get_context("fork")

    def run_child() -> list[str]:
        receive, send = fork.Pipe(duplex=False)
        child = fork.Process(
            target=_tls_and_plaintext_in_a_forked_child, args=(scram, plaintext, topic, send)
        )
        child.start()
        try:
            assert receive.poll(60), "the forked child hung"
            answer: list[str] = receive.recv()
            return answer
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()

    with km.Producer(scram) as parent_producer:
        parent_producer.produce(topic, b'{"id": 1, "x": [1, 2, 3, 4]}', partition=0)
        tls, plain = run_child()
        assert tls.startswith("ForkedProcessError") and "1 TLS client(s) open" in tls, tls
        assert 'multiprocessing_context="spawn"' in tls and scram["sasl.password"] not in tls
        assert plain == "sent"
        parent_producer.flush(30)
    # No TLS client open in the parent now (those of earlier tests collected too): the child's
    # TLS producer connects and sends.
    gc.collect()
    assert run_child() == ["sent", "sent"]
    assert read_ids(scram, topic) == [1, 7, 7, 7]
