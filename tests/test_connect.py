"""Kafka Connect end to end: a real Connect worker (Apache Kafka's connect-runtime, distributed
mode) on the test broker, with the Debezium PostgreSQL connector and Apache Kafka's FileStream
connectors resolved from Maven Central, and a real PostgreSQL (Debian's package) with logical
decoding. One worker and one PostgreSQL serve the whole module: both take seconds to start.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nbformat
import numpy as np
import psycopg
import pytest
from confluent_kafka.admin import AdminClient
from kafka_ml import (
    ConnectError,
    ConnectorExistsError,
    ConnectorFailedError,
    ConnectorNotFoundError,
    ConnectUnreachableError,
    ConnectValidationError,
    KafkaDataset,
    KafkaMLError,
)
from kafka_ml.cli import main as cli_main
from kafka_ml.connect import ConnectClient
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kafka"))
from connect_launcher import ConnectWorker, PostgresServer
from launcher import free_port

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04-postgres-to-model.ipynb"
POSTGRES_CONNECTOR = "io.debezium.connector.postgresql.PostgresConnector"


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


def test_postgres_to_model_notebook(
    connect_worker: ConnectWorker, postgres: PostgresServer, bootstrap_servers: str
) -> None:
    """notebooks/04 needs the real services, so it runs here rather than in test_notebooks.py."""
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
