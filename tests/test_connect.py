"""Kafka Connect end to end: a real Connect worker (Apache Kafka's connect-runtime, distributed
mode) on the test broker, with the Debezium PostgreSQL source connector, Debezium's JDBC sink
connector and Apache Kafka's FileStream connectors resolved from Maven Central, and a real
PostgreSQL (Debian's package) with logical decoding. One worker and one PostgreSQL serve the
whole module: both take seconds to start.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import nbformat
import numpy as np
import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kafka_ml import (
    ConnectError,
    ConnectorExistsError,
    ConnectorFailedError,
    ConnectorNotFoundError,
    ConnectUnreachableError,
    ConnectValidationError,
    KafkaDataset,
    KafkaMLError,
    Producer,
)
from kafka_ml.cli import main as cli_main
from kafka_ml.connect import ConnectClient
from kafka_ml.inference import InferenceLoop
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
from connect_launcher import ConnectWorker, PostgresServer
from launcher import free_port

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04-postgres-to-model.ipynb"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"
JDBC_SINK = "io.debezium.connector.jdbc.JdbcSinkConnector"


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def connect_worker(bootstrap_servers: str) -> Iterator[ConnectWorker]:
    worker = ConnectWorker(bootstrap_servers)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def connect(connect_worker: ConnectWorker) -> Iterator[ConnectClient]:
    with ConnectClient(connect_worker.url) as client:
        yield client


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        yield conn


def debezium_config(postgres: PostgresServer, prefix: str, table: str) -> dict[str, object]:
    return {
        "connector.class": POSTGRES_CONNECTOR,
        "database.hostname": postgres.host,
        "database.port": postgres.port,
        "database.user": postgres.user,
        "database.password": "unused-trust-auth",
        "database.dbname": postgres.database,
        "topic.prefix": prefix,
        "table.include.list": f"public.{table}",
        "plugin.name": "pgoutput",
        # A slot and a publication per connector: several connectors share the server.
        "slot.name": prefix.replace("-", "_"),
        "publication.name": f"{prefix.replace('-', '_')}_pub",
        "publication.autocreate.mode": "filtered",
        # A test server: the slot goes with the connector instead of holding WAL forever.
        "slot.drop.on.stop": True,
        "tasks.max": 1,
    }


def wait_for_topic(bootstrap_servers: str, topic: str, timeout: float = 60.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if topic in admin.list_topics(timeout=5).topics:
            return
        time.sleep(0.3)
    raise AssertionError(f"topic {topic} not created within {timeout}s")


def test_plugins_are_installed(connect: ConnectClient) -> None:
    classes = {p["class"] for p in connect.plugins()}
    assert POSTGRES_CONNECTOR in classes
    assert JDBC_SINK in classes
    assert "org.apache.kafka.connect.file.FileStreamSourceConnector" in classes
    assert connect.info()["version"].startswith("4.")


def test_postgres_rows_stream_through_debezium_as_typed_columns(
    connect: ConnectClient,
    postgres: PostgresServer,
    db: psycopg.Connection[tuple[object, ...]],
    config: dict[str, str],
    bootstrap_servers: str,
) -> None:
    table = f"items_{uuid.uuid4().hex[:8]}"
    db.execute(
        f"CREATE TABLE {table} (id serial PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL,"
        " qty integer, created timestamp NOT NULL DEFAULT now())"
    )
    # Full row images in delete events (by default only the key columns).
    db.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")
    before = [("apple", "1.25", 3), ("pear", "0.10", None), ("fig", "1234.50", 7)]
    for row in before:
        db.execute(f"INSERT INTO {table} (name, price, qty) VALUES (%s, %s, %s)", row)

    prefix = f"pg-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.public.{table}"
    connect.create(prefix, debezium_config(postgres, prefix, table))
    try:
        status = connect.wait_until_running(prefix, timeout=60)
        assert status.tasks[0].state == "RUNNING"
        wait_for_topic(bootstrap_servers, topic)

        # A nullable integer with nulls has no NumPy form: `qty` is read as a float (NaN for null).
        schema = {"id": "int32", "name": "string", "price": "float64", "qty": "float64?", "created": "int64"}
        rows: dict[str, list[object]] = {k: [] for k in [*schema, "__op", "__lsn", "__source_ts_ms"]}
        changes_sent = False
        deadline = time.monotonic() + 90
        with KafkaDataset(
            topic, config, format="debezium", schema=schema, start="earliest", max_wait=0.2
        ) as dataset:
            assert dataset.columns == [*schema, "__op", "__source_ts_ms", "__lsn"]
            for batch in dataset:
                assert batch["id"].dtype == np.int32
                assert batch["price"].dtype == np.float64
                for k in rows:
                    rows[k].extend(batch[k].tolist())
                if not changes_sent and len(rows["id"]) >= 3:
                    # The snapshot has arrived: new changes keep streaming into the same pass.
                    db.execute(f"INSERT INTO {table} (name, price, qty) VALUES ('kiwi', 2.00, 1)")
                    db.execute(f"INSERT INTO {table} (name, price, qty) VALUES ('lime', 0.35, 12)")
                    db.execute(f"UPDATE {table} SET price = 1.50, qty = 4 WHERE name = 'apple'")
                    db.execute(f"DELETE FROM {table} WHERE name = 'pear'")
                    changes_sent = True
                if len(rows["id"]) >= 7 or time.monotonic() > deadline:
                    break
    finally:
        connect.delete(prefix)

    assert rows["__op"] == ["r", "r", "r", "c", "c", "u", "d"]
    assert rows["id"] == [1, 2, 3, 4, 5, 1, 2]
    assert rows["name"] == ["apple", "pear", "fig", "kiwi", "lime", "apple", "pear"]
    # numeric(10, 2) in Debezium's precise mode: base64 unscaled integers, scaled by the schema.
    assert rows["price"] == [1.25, 0.10, 1234.50, 2.00, 0.35, 1.50, 0.10]
    assert [None if np.isnan(q) else q for q in rows["qty"]] == [3, None, 7, 1, 12, 4, None]  # type: ignore[arg-type]
    # `timestamp` columns are epoch microseconds (io.debezium.time.MicroTimestamp).
    now_us = time.time() * 1e6
    assert all(abs(now_us - t) < 600e6 for t in rows["created"])  # type: ignore[operator]
    # Streamed changes carry their log position; the snapshot's are in order after it.
    lsns = rows["__lsn"][3:]
    assert all(isinstance(x, int) and x > 0 for x in lsns) and lsns == sorted(lsns)  # type: ignore[type-var]

    # A bounded re-read: the delete's tombstone gives no row and is counted.
    with KafkaDataset(topic, config, format="debezium", schema=schema, end="latest") as dataset:
        total = sum(batch.num_rows for batch in dataset)
        assert total == 7
        assert dataset.stats["tombstones"] == 1
        assert len(dataset) == 8


def test_file_stream_source_pause_resume_update(
    connect: ConnectClient, config: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "lines.txt"
    source.write_text("".join(f"line {i}\n" for i in range(5)))
    name = f"file-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-lines"
    settings = {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "file": str(source),
        "topic": topic,
        "value.converter": "org.apache.kafka.connect.storage.StringConverter",
    }
    connect.create(name, settings)
    try:
        assert name in connect.connectors()
        assert connect.config(name)["file"] == str(source)
        connect.wait_until_running(name, timeout=30)
        values = read_values(topic, config, expect=5)
        assert values == [f"line {i}".encode() for i in range(5)]

        connect.pause(name)
        wait_for_state(connect, name, "PAUSED")
        connect.resume(name)
        wait_for_state(connect, name, "RUNNING")

        with pytest.raises(ConnectorExistsError):
            connect.create(name, settings)
        connect.update_config(name, {**settings, "batch.size": 100})
        assert connect.config(name)["batch.size"] == "100"
        connect.restart(name, include_tasks=True)
        connect.wait_until_running(name, timeout=30)
        with source.open("a") as f:
            f.write("line 5\n")
        assert read_values(topic, config, expect=6)[-1] == b"line 5"
    finally:
        connect.delete(name)
    assert name not in connect.connectors()


def read_values(topic: str, config: dict[str, str], expect: int, timeout: float = 30.0) -> list[bytes]:
    """Re-reads the topic until it holds `expect` messages (a bounded number of times)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with KafkaDataset(topic, config, format="raw", end="latest") as dataset:
                values = [v for batch in dataset for v in batch["value"]]
        except KafkaMLError:
            values = []  # the topic is created by the connector's first record
        if len(values) >= expect or time.monotonic() > deadline:
            return values
        time.sleep(0.3)


def wait_for_state(connect: ConnectClient, name: str, state: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = connect.status(name)
        if status.state == state and status.tasks and all(t.state == state for t in status.tasks):
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} not {state} within {timeout}s: {connect.status(name)}")


def test_connect_json_is_read_by_connects_json_converter(
    connect: ConnectClient, config: dict[str, str], tmp_path: Path
) -> None:
    """`format="connect_json"` rows of every supported type, as Connect's own JsonConverter (the
    worker's value converter, schemas enabled) reads them: a FileStream sink writes each record's
    Struct as text."""
    name = f"json-{uuid.uuid4().hex[:8]}"
    topic, out = f"{name}-in", tmp_path / "records.txt"
    schema = {
        "id": "int64", "flag": "bool", "small": "int8", "count": "uint32", "score": "float32",
        "price": "float64?", "name": "string?", "vec": ("float32", 2), "tags": "int16[]",
    }  # fmt: skip
    rows = {
        "id": np.array([0, 1]),
        "flag": np.array([True, False]),
        "small": np.array([-128, 127]),
        "count": np.array([0, 4_294_967_295], dtype=np.uint32),
        "score": np.array([0.1, -2.25], dtype=np.float32),
        "price": np.array([312000.5, None], dtype=object),
        "name": np.array(['quote " é', None], dtype=object),
        "vec": np.array([[0.1, 0.2], [1, 2]], dtype=np.float32),
        "tags": np.array([[1, 2], [3, 4]]),
    }
    with Producer(config) as producer:
        producer.send(topic, rows, format="connect_json", schema=schema, key="id")
    connect.create(
        name,
        {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "topics": topic,
            "file": str(out),
            "key.converter": "org.apache.kafka.connect.storage.StringConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": True,
        },
    )
    try:
        connect.wait_until_running(name, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 2):
            time.sleep(0.3)
        assert connect.status(name).tasks[0].state == "RUNNING"  # no record failed conversion
    finally:
        connect.delete(name)
    # Struct.toString: the fields that are not null, as Java prints their values.
    assert out.read_text().splitlines() == [
        'Struct{id=0,flag=true,small=-128,count=0,score=0.1,price=312000.5,name=quote " é,'
        "vec=[0.1, 0.2],tags=[1, 2]}",
        "Struct{id=1,flag=false,small=127,count=4294967295,score=-2.25,vec=[1.0, 2.0],tags=[3, 4]}",
    ]


def wait_for_rows(
    db: psycopg.Connection[tuple[object, ...]],
    query: str,
    done: Any,
    timeout: float = 60.0,
) -> list[tuple[object, ...]]:
    """Runs `query` until `done(rows)` (the table may not exist yet), a bounded number of times."""
    deadline = time.monotonic() + timeout
    rows: list[tuple[object, ...]] = []
    while time.monotonic() < deadline:
        try:
            rows = db.execute(query).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            rows = []
        if done(rows):
            break
        time.sleep(0.5)
    return rows


def test_predictions_flow_back_into_postgres_through_the_jdbc_sink(
    connect: ConnectClient,
    postgres: PostgresServer,
    db: psycopg.Connection[tuple[object, ...]],
    config: dict[str, str],
    bootstrap_servers: str,
) -> None:
    """The loop closed: a table streams in through Debezium, a model is fitted on it, an
    `InferenceLoop` writes one prediction per row in Connect's JSON envelope, and Debezium's JDBC
    sink upserts them by id into a PostgreSQL table with typed columns. The inputs are then
    served a second time, by a new model: the table still holds one row per input, updated."""
    run = uuid.uuid4().hex[:8]
    table, predictions_table = f"houses_{run}", f"price_predictions_{run}"
    db.execute(
        f"CREATE TABLE {table} (id serial PRIMARY KEY, size_m2 real NOT NULL, rooms integer NOT NULL,"
        " price numeric(12, 2) NOT NULL)"
    )
    rng = np.random.default_rng(3)
    n = 60
    size, rooms = rng.uniform(30, 200, n), rng.integers(1, 7, n)
    price = 3000 * size + 10_000 * rooms + rng.normal(0, 2000, n)
    with db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} (size_m2, rooms, price) VALUES (%s, %s, %s)",
            [(float(s), int(r), round(float(p), 2)) for s, r, p in zip(size, rooms, price, strict=True)],
        )

    source, sink = f"pg-{run}", f"predictions-sink-{run}"
    topic, out_topic = f"{source}.public.{table}", f"price-predictions-{run}"
    connect.create(source, debezium_config(postgres, source, table))
    try:
        connect.wait_until_running(source, timeout=60)
        wait_for_topic(bootstrap_servers, topic)

        # Train on the rows as they stream in.
        schema = {"id": "int32", "size_m2": "float32", "rooms": "int32", "price": "float64"}
        columns: dict[str, list[np.ndarray]] = {k: [] for k in schema}
        deadline = time.monotonic() + 60
        with KafkaDataset(topic, config, format="debezium", schema=schema, max_wait=0.2) as dataset:
            for batch in dataset:
                for k in schema:
                    columns[k].append(batch[k])
                if sum(len(c) for c in columns["id"]) >= n or time.monotonic() > deadline:
                    break
        data = {k: np.concatenate(v) for k, v in columns.items()}
        assert len(data["id"]) == n

        def features(size_m2: np.ndarray, rooms: np.ndarray) -> np.ndarray:
            return np.column_stack([size_m2.astype(np.float64), rooms, np.ones(len(rooms))])

        coef, *_ = np.linalg.lstsq(features(data["size_m2"], data["rooms"]), data["price"], rcond=None)

        def serve(model: np.ndarray, group: str) -> dict[str, Any]:
            def predict(batch: Any) -> dict[str, np.ndarray]:
                return {
                    "id": batch["id"],
                    "predicted_price": features(batch["size_m2"], batch["rooms"]) @ model,
                }

            loop = InferenceLoop(
                predict,
                topic,
                out_topic,
                {**config, "group.id": group},
                format="debezium",
                schema={"id": "int32", "size_m2": "float32", "rooms": "int32"},
                output_format="connect_json",
                output_schema={"id": "int32", "predicted_price": "float64"},
                max_wait=0.05,
            )
            return loop.run(max_messages=n, idle_timeout=30, handle_signals=False)

        assert serve(coef, f"serve-{run}")["messages"] == n
        connect.create(
            sink,
            {
                "connector.class": JDBC_SINK,
                "topics": out_topic,
                "connection.url": f"jdbc:postgresql://{postgres.host}:{postgres.port}/{postgres.database}",
                "connection.username": postgres.user,
                "connection.password": "unused-trust-auth",
                "collection.name.format": predictions_table,
                "insert.mode": "upsert",  # a re-delivered prediction updates its row
                "primary.key.mode": "record_value",
                "primary.key.fields": "id",
                "schema.evolution": "basic",  # creates the table from the records' schema
                # The results carry the inputs' keys (Debezium's, here): the table's key is in the value.
                "key.converter": "org.apache.kafka.connect.storage.StringConverter",
                "tasks.max": 1,
            },
        )
        connect.wait_until_running(sink, timeout=60)

        ids = db.execute(f"SELECT id, size_m2, rooms FROM {table} ORDER BY id").fetchall()
        x = features(np.array([r[1] for r in ids], np.float32), np.array([r[2] for r in ids], np.int32))
        query = f"SELECT id, predicted_price FROM {predictions_table} ORDER BY id"

        def check(model: np.ndarray) -> None:
            expected = x @ model
            rows = wait_for_rows(
                db,
                query,
                lambda rows: len(rows) >= n and np.allclose([r[1] for r in rows], expected, rtol=1e-9),
            )
            assert [r[0] for r in rows] == [r[0] for r in ids]  # exactly one row per input
            np.testing.assert_allclose([r[1] for r in rows], expected, rtol=1e-9)
            assert connect.status(sink).tasks[0].state == "RUNNING"

        check(coef)
        types = db.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            f"WHERE table_name = '{predictions_table}' ORDER BY ordinal_position"
        ).fetchall()
        assert types == [("id", "integer", "NO"), ("predicted_price", "double precision", "NO")]
        key = db.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
            f" AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{predictions_table}'::regclass"
            " AND i.indisprimary"
        ).fetchall()
        assert key == [("id",)]

        # Every input served again (a new consumer group), by a retrained model: the topic holds
        # two predictions per input, the table still one row each, with the newer value.
        retrained = coef * np.array([1.1, 1.0, 1.0])
        assert serve(retrained, f"serve-again-{run}")["messages"] == n
        assert len(read_values(out_topic, config, expect=2 * n)) == 2 * n
        check(retrained)
        count, distinct = db.execute(
            f"SELECT count(*), count(DISTINCT id) FROM {predictions_table}"
        ).fetchone()  # type: ignore[misc]
        assert count == distinct == n
    finally:
        for name in (sink, source):
            with contextlib.suppress(ConnectorNotFoundError):
                connect.delete(name)


def test_invalid_config_lists_each_settings_errors(connect: ConnectClient, postgres: PostgresServer) -> None:
    name = f"bad-{uuid.uuid4().hex[:8]}"
    bad = debezium_config(postgres, name, "whatever")
    bad["database.port"] = "not-a-port"
    del bad["topic.prefix"]
    with pytest.raises(ConnectValidationError) as info:
        connect.create(name, bad)
    err = info.value
    # 400, or 500 where Connect itself fails while formatting Debezium's errors (see _maybe_invalid).
    assert err.status in (400, 500)
    assert "database.port" in err.errors and "topic.prefix" in err.errors
    assert "integer is expected" in " ".join(err.errors["database.port"])
    assert "database.port" in str(err)  # the message lists them too
    assert name not in connect.connectors()

    result = connect.validate({"connector.class": "FileStreamSource", "file": "/tmp/x"})
    assert not result.valid and "topic" in result.errors
    with pytest.raises(ConnectValidationError, match=r"connector\.class"):
        connect.validate({"file": "/tmp/x"})
    with pytest.raises(ConnectError) as unknown_class:
        connect.create(name, {"connector.class": "com.example.NoSuchConnector"})
    assert unknown_class.value.status in (400, 500)
    assert "NoSuchConnector" in unknown_class.value.message


def test_unknown_connector(connect: ConnectClient) -> None:
    for call in (connect.status, connect.get, connect.config, connect.delete, connect.pause):
        with pytest.raises(ConnectorNotFoundError) as info:
            call("no-such-connector")
        assert info.value.status == 404 and info.value.error_code == 404
        assert "no-such-connector" in info.value.message


def test_unreachable_worker() -> None:
    with ConnectClient(f"http://127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(ConnectUnreachableError, match="unreachable") as info:
            client.connectors()
        assert info.value.status is None
        assert isinstance(info.value, KafkaMLError)
    assert cli_main(["connect", "--url", f"http://127.0.0.1:{free_port()}", "list"]) == 1


def test_failed_task_trace_in_status(
    connect: ConnectClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    name = f"sink-{uuid.uuid4().hex[:8]}"
    # The sink task opens its file when it starts: a directory that does not exist fails it.
    connect.create(
        name,
        {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "topics": f"{name}-in",
            "file": str(tmp_path / "missing-dir" / "out.txt"),
        },
    )
    try:
        with pytest.raises(ConnectorFailedError) as info:
            connect.wait_until_running(name, timeout=30)
        assert info.value.trace is not None and "out.txt" in info.value.trace
        status = connect.status(name)
        assert status.failed and status.tasks[0].state == "FAILED"
        assert "ConnectException" in (status.tasks[0].trace or "")
        capsys.readouterr()
        assert cli_main(["connect", "--url", connect.url, "status", name]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["tasks"][0]["state"] == "FAILED" and "out.txt" in shown["tasks"][0]["trace"]
    finally:
        connect.delete(name)


def test_cli_create_list_status_delete(
    connect_worker: ConnectWorker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "connector.json"
    spec.write_text(
        json.dumps(
            {
                "name": name,
                "config": {
                    "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                    "file": str(tmp_path / "in.txt"),
                    "topic": f"{name}-lines",
                },
            }
        )
    )
    url = ["connect", "--url", connect_worker.url]
    assert cli_main([*url, "create", "-f", str(spec)]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == name
    assert cli_main([*url, "wait", name, "--timeout", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "RUNNING"
    assert cli_main([*url, "list"]) == 0
    assert any(line.startswith(f"{name}\tRUNNING") for line in capsys.readouterr().out.splitlines())
    assert cli_main([*url, "delete", name]) == 0
    assert cli_main([*url, "list"]) == 0
    assert name not in capsys.readouterr().out.replace("delete: " + name, "")
    assert cli_main([*url, "status", f"{name}-never-created"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and f"{name}-never-created" in err

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "config": {"connector.class": "FileStreamSource"}}))
    assert cli_main([*url, "validate", "-f", str(bad)]) == 1
    assert "topic" in json.loads(capsys.readouterr().out)["errors"]


# -- TLS and authentication ------------------------------------------------------------------------

USER, PASSWORD, TOKEN = "trainer", "p4ss-w0rd-never-shown", "t0ken-never-shown"


@dataclass
class Pki:
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files;
    the server's also as a PKCS#12 keystore and the CA as a Java truststore, for the worker."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path  # with the password KEY_PASSWORD
    keystore: Path
    truststore: Path


KEY_PASSWORD = "key-passw0rd-never-shown"
STORE_PASSWORD = "store-password"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path) -> Pki:
    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("kafka-ml test CA"))
        .issuer_name(_name("kafka-ml test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName]
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    server_key, server_cert = leaf(
        "127.0.0.1",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    client_key, client_cert = leaf("kafka-ml test client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def pem(cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    pki = Pki(
        dir=directory,
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        client_key_encrypted=directory / "client-encrypted.key",
        keystore=directory / "server.p12",
        truststore=directory / "truststore.p12",
    )
    pki.ca.write_bytes(pem(ca))
    pki.server_cert.write_bytes(pem(server_cert))
    pki.server_key.write_bytes(key_pem(server_key))
    pki.client_cert.write_bytes(pem(client_cert))
    pki.client_key.write_bytes(key_pem(client_key))
    pki.client_key_encrypted.write_bytes(key_pem(client_key, KEY_PASSWORD))
    pki.keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server",
            server_key,
            server_cert,
            [ca],
            serialization.BestAvailableEncryption(STORE_PASSWORD.encode()),
        )
    )
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class FakeConnect(BaseHTTPRequestHandler):
    """Answers a few Connect REST calls, over TLS, to requests that carry the expected
    credentials; 401 with Connect's error body otherwise. Records each Authorization header."""

    expected: ClassVar[set[str | None]] = set()
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        type(self).seen.append(auth)
        if auth not in self.expected:
            self._reply(401, {"error_code": 401, "message": "User cannot access the resource."})
        elif self.path.startswith("/connectors?") and "expand=status" in self.path:
            status = {
                "name": "orders",
                "connector": {"state": "RUNNING", "worker_id": "w1"},
                "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "w1"}],
                "type": "source",
            }
            self._reply(200, {"orders": {"status": status}})
        elif self.path.startswith("/connectors/orders/config"):
            self._reply(200, {"connector.class": "FileStreamSource", "database.password": PASSWORD})
        elif self.path.startswith("/connectors"):
            self._reply(200, ["orders"])
        else:
            self._reply(200, {"version": "fake", "commit": "0", "kafka_cluster_id": "x"})

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def https_server(pki: Pki, *, require_client_cert: bool = False) -> Iterator[str]:
    """A TLS server on a free loopback port with FakeConnect; yields its https URL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeConnect)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fake_connect(pki: Pki) -> Iterator[str]:
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    FakeConnect.expected = {basic, f"Bearer {TOKEN}"}
    FakeConnect.seen = []
    with https_server(pki) as url:
        yield url


def secrets_in(text: str) -> list[str]:
    """The test secrets, or their base64 as in a Basic header, found in ``text``."""
    encoded = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return [s for s in (PASSWORD, TOKEN, KEY_PASSWORD, encoded) if s in text]


def test_basic_auth_over_tls(fake_connect: str, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    with ConnectClient(fake_connect, verify=str(pki.ca), auth=(USER, PASSWORD)) as client:
        assert client.connectors() == ["orders"]
        assert FakeConnect.seen[-1] is not None and FakeConnect.seen[-1].startswith("Basic ")
        assert repr(client) == f"ConnectClient({fake_connect!r}, auth=basic, verify={str(pki.ca)!r})"
    with ConnectClient(fake_connect, verify=pki.ca, auth=(USER, "wrong")) as client:
        with pytest.raises(ConnectError) as info:
            client.connectors()
    assert info.value.status == 401 and "User cannot access the resource" in str(info.value)
    assert "(authentication: basic)" in str(info.value)
    with ConnectClient(fake_connect, auth=(USER, PASSWORD)) as client:  # certifi's CAs only
        with pytest.raises(ConnectUnreachableError, match="not trusted: pass its CA as verify="):
            client.connectors()
    assert not secrets_in(caplog.text)


def test_bearer_token_and_credentials_in_the_url(
    fake_connect: str, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with ConnectClient(fake_connect, verify=pki.ca, token=TOKEN) as client:
        assert client.info()["version"] == "fake"
        assert FakeConnect.seen[-1] == f"Bearer {TOKEN}"
        assert "auth=bearer" in repr(client)
        shown = repr(client)
    # user:password@ in the URL is basic auth, and leaves the URL that messages show.
    with_userinfo = fake_connect.replace("https://", f"https://{USER}:{PASSWORD}@")
    with ConnectClient(with_userinfo, verify=pki.ca) as client:
        assert client.connectors() == ["orders"]
        assert client.url == fake_connect and "auth=basic" in repr(client)
        shown += repr(client)
    with ConnectClient(f"https://{USER}:{PASSWORD}@127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(ConnectUnreachableError) as info:
            client.connectors()
        shown += str(info.value)
    with pytest.raises(KafkaMLError, match="not both"):
        ConnectClient(fake_connect, auth=(USER, PASSWORD), token=TOKEN)
    with pytest.raises(KafkaMLError, match="credentials both in the URL"):
        ConnectClient(with_userinfo, token=TOKEN)
    assert not secrets_in(shown + caplog.text)


def test_mutual_tls(pki: Pki) -> None:
    FakeConnect.expected = {None}  # no HTTP auth: the client certificate is the credential
    FakeConnect.seen = []
    with https_server(pki, require_client_cert=True) as url:
        with ConnectClient(url, verify=pki.ca, cert=(pki.client_cert, pki.client_key)) as client:
            assert client.connectors() == ["orders"]
            assert f"cert={str(pki.client_cert)!r}" in repr(client)
        encrypted = (str(pki.client_cert), str(pki.client_key_encrypted), KEY_PASSWORD)
        with ConnectClient(url, verify=pki.ca, cert=encrypted) as client:
            assert client.connectors() == ["orders"]
            assert not secrets_in(repr(client))
        with ConnectClient(url, verify=pki.ca, timeout=5) as client:  # no client certificate
            with pytest.raises(ConnectUnreachableError):
                client.connectors()


def test_bad_tls_settings_are_named(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(
        KafkaMLError, match=re.escape("cannot load the CA certificates '/nonexistent/ca.pem'")
    ):
        ConnectClient("https://127.0.0.1:1", verify="/nonexistent/ca.pem")
    wrong_password = (str(pki.client_cert), str(pki.client_key_encrypted), "not-" + KEY_PASSWORD)
    with pytest.raises(KafkaMLError, match="cannot load the client certificate") as info:
        ConnectClient("https://127.0.0.1:1", verify=pki.ca, cert=wrong_password)
    assert str(pki.client_key_encrypted) in str(info.value) and not secrets_in(str(info.value))
    with pytest.raises(KafkaMLError, match="cannot load the client certificate"):
        ConnectClient("https://127.0.0.1:1", cert=str(tmp_path / "missing.pem"))
    with pytest.raises(KafkaMLError, match="auth must be"):
        ConnectClient("https://127.0.0.1:1", auth=(USER,))  # type: ignore[arg-type]


def test_cli_tls_and_password_from_the_environment(
    fake_connect: str, pki: Pki, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONNECT_PASSWORD", PASSWORD)
    flags = ["connect", "--url", fake_connect, "--ca", str(pki.ca), "--user", USER]
    assert cli_main([*flags, "--password-env", "CONNECT_PASSWORD", "list"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("orders\tRUNNING\tsource\t0:RUNNING") and not secrets_in(out + err)
    # A connector's configuration is shown with its secrets masked.
    assert cli_main([*flags, "--password-env", "CONNECT_PASSWORD", "config", "orders"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"connector.class": "FileStreamSource", "database.password": "***"}
    assert not secrets_in(out + err)

    monkeypatch.setenv("WRONG_PASSWORD", "wrong-" + PASSWORD)
    assert cli_main([*flags, "--password-env", "WRONG_PASSWORD", "list"]) == 1
    out, err = capsys.readouterr()
    assert "HTTP 401" in err and not secrets_in(out + err)
    assert cli_main([*flags, "--password-env", "UNSET_VARIABLE_42", "list"]) == 2
    assert "UNSET_VARIABLE_42" in capsys.readouterr().err
    assert cli_main([*flags, "list"]) == 2
    assert "--user needs --password-env" in capsys.readouterr().err

    monkeypatch.setenv("CONNECT_TOKEN", TOKEN)
    assert (
        cli_main(
            ["connect", "--url", fake_connect, "--ca", str(pki.ca), "--token-env", "CONNECT_TOKEN", "list"]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "orders" in out and not secrets_in(out + err)
    assert (
        cli_main(["connect", "--url", fake_connect, "--insecure", "--token-env", "CONNECT_TOKEN", "list"])
        == 0
    )
    assert cli_main(["connect", "--url", fake_connect, "--token-env", "CONNECT_TOKEN", "list"]) == 1
    assert "not trusted" in capsys.readouterr().err


class HttpsConnectWorker(ConnectWorker):
    """The test worker with its REST API on https only, requiring client certificates
    (``listeners.https.ssl.*``: Connect's own settings for its REST server) and HTTP basic auth
    (Apache Kafka's ``BasicAuthSecurityRestExtension`` with a JAAS property-file login)."""

    def __init__(self, bootstrap_servers: str, pki: Pki, user: str, password: str) -> None:
        super().__init__(bootstrap_servers)
        self.pki = pki
        self.user, self.password = user, password

    def _jvm_args(self) -> list[str]:
        users = self.workdir / "rest-users.properties"
        users.write_text(f"{self.user}={self.password}\n")
        jaas = self.workdir / "rest-jaas.conf"
        jaas.write_text(
            "KafkaConnect {\n"
            "  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n"
            f'  file="{users}";\n'
            "};\n"
        )
        return [f"-Djava.security.auth.login.config={jaas}"]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        path = super()._write_config()
        https = {
            "listeners": self.url,
            "rest.advertised.listener": "https",
            "listeners.https.ssl.keystore.type": "PKCS12",
            "listeners.https.ssl.keystore.location": str(self.pki.keystore),
            "listeners.https.ssl.keystore.password": STORE_PASSWORD,
            "listeners.https.ssl.key.password": STORE_PASSWORD,
            "listeners.https.ssl.truststore.type": "PKCS12",
            "listeners.https.ssl.truststore.location": str(self.pki.truststore),
            "listeners.https.ssl.truststore.password": STORE_PASSWORD,
            "listeners.https.ssl.client.auth": "required",
            "rest.extension.classes": "org.apache.kafka.connect.rest.basic.auth.extension."
            "BasicAuthSecurityRestExtension",
        }
        if not self.pki.truststore.exists():
            # keytool, not cryptography: Java trusts only PKCS#12 certificate entries that carry
            # its own "trusted" attribute, which keytool writes.
            subprocess.run(
                [
                    shutil.which("keytool")
                    or str(Path(shutil.which("java") or "java").resolve().parent / "keytool"),
                    "-importcert",
                    "-noprompt",
                    "-alias",
                    "ca",
                    "-file",
                    str(self.pki.ca),
                    "-keystore",
                    str(self.pki.truststore),
                    "-storetype",
                    "PKCS12",
                    "-storepass",
                    STORE_PASSWORD,
                ],
                check=True,
                capture_output=True,
            )
        kept = [line for line in path.read_text().splitlines() if line.split("=", 1)[0] not in https]
        path.write_text("".join(f"{line}\n" for line in [*kept, *(f"{k}={v}" for k, v in https.items())]))
        return path

    def _ready(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.load_cert_chain(self.pki.client_cert, self.pki.client_key)
        credentials = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.url}/connectors", headers={"Authorization": f"Basic {credentials}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=2, context=context) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


def test_connect_worker_over_mutual_tls_with_basic_auth(
    bootstrap_servers: str,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real worker whose REST API is https with client certificates and basic auth required."""
    password = "rest-" + uuid.uuid4().hex
    worker = HttpsConnectWorker(bootstrap_servers, pki, "ml-team", password)
    worker.start()
    try:
        client_cert = (pki.client_cert, pki.client_key)
        # The certificate without the password: the worker answers 401.
        with ConnectClient(worker.url, verify=pki.ca, cert=client_cert, timeout=5) as no_auth:
            with pytest.raises(ConnectError) as refused:
                no_auth.connectors()
            assert refused.value.status == 401, refused.value
        with ConnectClient(
            worker.url, verify=pki.ca, cert=client_cert, auth=("ml-team", "wrong-" + password), timeout=5
        ) as wrong:
            with pytest.raises(ConnectError) as refused:
                wrong.connectors()
            assert refused.value.status == 401 and password not in str(refused.value)
        auth = ("ml-team", password)
        with ConnectClient(worker.url, verify=pki.ca, cert=client_cert, auth=auth) as connect:
            assert password not in repr(connect)
            assert connect.info()["version"].startswith("4.")
            name = f"tls-{uuid.uuid4().hex[:8]}"
            connect.create(
                name,
                {
                    "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                    "file": str(tmp_path / "in.txt"),
                    "topic": f"{name}-lines",
                },
            )
            connect.wait_until_running(name, timeout=30)
        with ConnectClient(worker.url, verify=pki.ca, timeout=5) as no_cert:
            with pytest.raises(ConnectUnreachableError):
                no_cert.connectors()
        with ConnectClient(worker.url, cert=client_cert, timeout=5) as untrusted:
            with pytest.raises(ConnectUnreachableError, match="not trusted"):
                untrusted.connectors()
        tls = ["--ca", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
        tls += ["--user", "ml-team", "--password-env", "KAFKA_ML_TEST_CONNECT_PASSWORD"]
        monkeypatch.setenv("KAFKA_ML_TEST_CONNECT_PASSWORD", password)
        assert cli_main(["connect", "--url", worker.url, *tls, "list"]) == 0
        assert any(line.startswith(f"{name}\tRUNNING") for line in capsys.readouterr().out.splitlines())
        assert cli_main(["connect", "--url", worker.url, *tls, "delete", name]) == 0
    finally:
        worker.stop()


def test_postgres_to_model_notebook(
    connect_worker: ConnectWorker, postgres: PostgresServer, bootstrap_servers: str
) -> None:
    """notebooks/04 needs the real services, so it runs here rather than in test_notebooks.py: the
    source connector, training, the inference loop and the JDBC sink."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "KAFKA_CONNECT_URL": connect_worker.url,
        "PGHOST": postgres.host,
        "PGPORT": str(postgres.port),
        "PGUSER": postgres.user,
        "PGDATABASE": postgres.database,
    }
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute(env=env)
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "model fit" in outputs
    # The predictions, served by an InferenceLoop, landed in PostgreSQL through the JDBC sink.
    assert "700 predictions written" in outputs
    assert re.search(r"700 predictions for 700 houses in price_predictions_\w+, mean absolute error", outputs)
