"""Files to topics and back (`kafka-ml export / ingest / peek`, `kafka_ml.files`) on the real broker:
round trips through Parquet, CSV and JSON lines, the offsets an export's metadata records, ranges and
partitions, a registry-framed export with its schema ids, bad input named by file, row and column,
and peek's table."""

from __future__ import annotations

import json
import shlex
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import kafka_ml as km
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Consumer as CkConsumer
from confluent_kafka import Producer as CkProducer
from confluent_kafka import TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from kafka_ml.cli import main as cli_main
from kafka_ml.files import export, export_metadata, ingest

SCHEMA = "id:int64,x:float32[4],y:int64,note:string?"
COLUMNS = {"id": "int64", "x": ("float32", 4), "y": "int64", "note": "string?"}
SECRET = "s3cr3t-never-printed"


def features(n: int, start: int = 0) -> pa.Table:
    """Rows with the values the file formats must keep: floats exact only as float32, nulls, an empty
    string, quotes, commas, newlines, backslashes, tabs and non-ASCII text."""
    rng = np.random.default_rng(start)
    ids = np.arange(start, start + n, dtype=np.int64)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    texts = ["plain", 'say "hi"', "a,b\nc\\d", "café ✓\t", ""]
    notes = [None if i % 7 == 0 else texts[i % 5] for i in range(start, start + n)]
    return pa.table(
        {
            "id": ids,
            "x": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4),
            "y": ids % 7,
            "note": pa.array(notes, pa.string()),
        }
    )


def kml(capsys: pytest.CaptureFixture[str], command: str) -> tuple[int, str, str]:
    """Runs `kafka-ml <command>` in this process: (exit code, stdout, stderr)."""
    code = cli_main(shlex.split(command))
    out, err = capsys.readouterr()
    return code, out, err


def same_rows(a: pa.Table, b: pa.Table) -> None:
    """Equal rows whatever the order (a topic with several partitions reorders them)."""
    a, b = a.sort_by("id"), b.sort_by("id")
    assert a.column_names == b.column_names
    for name in a.column_names:
        assert a.column(name).to_pylist() == b.column(name).to_pylist(), name


def watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    c = CkConsumer({"bootstrap.servers": bootstrap, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)}
    finally:
        c.close()


def topic_size(config: dict[str, str], topic: str) -> int:
    with km.KafkaDataset(topic, config, format="raw", end="latest") as ds:
        return len(ds)


# -- round trips ------------------------------------------------------------------------------------


def test_parquet_to_topic_to_parquet_is_equal_and_the_metadata_says_which_records(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bs = config["bootstrap.servers"]
    source = features(1500)
    pq.write_table(source, tmp_path / "in.parquet")
    topic = new_topic(partitions=3)
    code, out, err = kml(
        capsys,
        f"ingest {tmp_path}/in.parquet --topic {topic} --schema {SCHEMA} --key id --bootstrap-servers {bs}",
    )
    assert code == 0, err
    assert f"1500 rows sent to '{topic}': 1500 delivered, 0 failed" in out

    out_path = tmp_path / "out.parquet"
    code, out, err = kml(capsys, f"export {topic} --to {out_path} --schema {SCHEMA} --bootstrap-servers {bs}")
    assert code == 0, err
    assert "exported 1500 rows" in out
    back = pq.read_table(out_path)
    same_rows(source, back)
    x = back.schema.field("x").type
    assert pa.types.is_fixed_size_list(x) and x.list_size == 4 and x.value_type == pa.float32()

    # The metadata: the topic, the format, and per partition exactly the offsets the file holds with
    # their row counts, as the broker and the records themselves say.
    meta = export_metadata(out_path)
    assert (meta["topic"], meta["format"], meta["rows"], meta["skipped"]) == (topic, "json", 1500, 0)
    marks = watermarks(bs, topic, 3)
    with km.KafkaDataset(topic, config, format="raw", end="latest", metadata=["partition"]) as ds:
        rows = np.bincount(np.concatenate([b["partition"] for b in ds]), minlength=3)
    assert all(rows > 0)
    assert meta["partitions"] == [
        {"topic": topic, "partition": p, "start": marks[p][0], "end": marks[p][1], "rows": int(rows[p])}
        for p in range(3)
    ]


def test_csv_and_json_lines_round_trip(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bs = config["bootstrap.servers"]
    source = features(400, start=10)
    topic = new_topic(partitions=2)
    with km.Producer(config) as producer:
        producer.send(topic, source, format="json", schema=COLUMNS, key="id").wait(30)
    for suffix in ("csv", "jsonl"):
        path = tmp_path / f"out.{suffix}"
        code, _, err = kml(capsys, f"export {topic} --to {path} --schema {SCHEMA} --bootstrap-servers {bs}")
        assert code == 0, err
        if suffix == "csv":  # lists as JSON text in the cells
            table = pcsv.read_csv(path)
            cells = dict(zip(table.column("id").to_pylist(), table.column("x").to_pylist(), strict=True))
            for row in source.to_pylist():
                x = np.asarray(json.loads(cells[row["id"]]), np.float32)
                assert np.array_equal(x, np.asarray(row["x"], np.float32))
        else:  # one JSON object per line, with exactly the values
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
            by_id = {d["id"]: d for d in lines}
            assert len(lines) == 400 and set(by_id) == set(range(10, 410))
            for row in source.to_pylist():
                got = by_id[row["id"]]
                assert (got["note"], got["y"]) == (row["note"], row["y"])
                assert np.array_equal(np.asarray(got["x"], np.float32), np.asarray(row["x"], np.float32))
        again = new_topic()
        code, out, err = kml(
            capsys, f"ingest {path} --topic {again} --schema {SCHEMA} --bootstrap-servers {bs}"
        )
        assert code == 0, err
        assert "400 delivered, 0 failed" in out
        with km.KafkaDataset(again, config, format="json", schema=COLUMNS, end="latest") as ds:
            assert ds.to_parquet(tmp_path / f"again-{suffix}.parquet").rows == 400
        same_rows(source, pq.read_table(tmp_path / f"again-{suffix}.parquet"))


def test_tensor_rows_round_trip(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bs = config["bootstrap.servers"]
    rows = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    value = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), 8)
    pq.write_table(pa.table({"value": value}), tmp_path / "t.parquet")
    topic = new_topic()
    code, _, err = kml(
        capsys, f"ingest {tmp_path}/t.parquet --topic {topic} --format tensor --bootstrap-servers {bs}"
    )
    assert code == 0, err
    tensor = "--format tensor --dtype float32 --shape 8"
    code, _, err = kml(capsys, f"export {topic} --to {tmp_path}/t2.parquet {tensor} --bootstrap-servers {bs}")
    assert code == 0, err
    back = pq.read_table(tmp_path / "t2.parquet").column("value").combine_chunks()
    np.testing.assert_array_equal(np.asarray(back.flatten()).reshape(-1, 8), rows)


def test_ingest_a_directory_of_parquet_and_arrow_ipc_files(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pyarrow.feather as feather

    source = features(90)
    folder = tmp_path / "in"
    (folder / "more").mkdir(parents=True)
    pq.write_table(source.slice(0, 30), folder / "a.parquet")
    feather.write_feather(source.slice(30, 30), folder / "more" / "b.arrow")  # the IPC file format
    with pa.ipc.new_stream(folder / "more" / "c.arrows", source.schema) as stream:  # the stream format
        stream.write_table(source.slice(60, 30))
    (folder / "_SUCCESS").write_text("")
    (folder / ".a.parquet.partial").write_text("an unfinished export")
    (folder / "notes.txt").write_text("not data")
    topic = new_topic()
    bs = config["bootstrap.servers"]
    code, out, err = kml(
        capsys, f"ingest {folder} --topic {topic} --schema {SCHEMA} --bootstrap-servers {bs}"
    )
    assert code == 0, err
    assert [line.split()[-2] for line in out.splitlines()[:3]] == ["30", "30", "30"]
    assert "90 rows sent" in out and "90 delivered, 0 failed" in out
    with km.KafkaDataset(topic, config, format="json", schema=COLUMNS, end="latest") as ds:
        ds.to_parquet(tmp_path / "back.parquet")
    same_rows(source, pq.read_table(tmp_path / "back.parquet"))


# -- ranges, partitions and the offsets recorded ----------------------------------------------------


def test_partitions_start_end_and_per_partition_files(
    config: dict[str, str],
    new_topic: Callable[..., str],
    produce: Callable[..., None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bs = config["bootstrap.servers"]
    topic = new_topic(partitions=3)
    for p in range(3):
        produce(topic, [json.dumps({"id": p * 1000 + i}).encode() for i in range(30)], partition=p)
    path = tmp_path / "part.parquet"
    code, out, err = kml(
        capsys,
        f"export {topic} --to {path} --schema id:int64 --partitions 0,2 --start 5 --end 2:20 "
        f"--metadata partition,offset --bootstrap-servers {bs}",
    )
    assert code == 0, err
    assert "partition 0: offsets [5, 30), 25 rows" in out and "partition 2: offsets [5, 20), 15 rows" in out
    table = pq.read_table(path)
    assert table.column_names == ["id", "partition", "offset"]  # the metadata columns asked for are kept
    got = sorted(zip(*(table.column(c).to_pylist() for c in ("partition", "offset", "id")), strict=True))
    assert got == [(0, o, o) for o in range(5, 30)] + [(2, o, 2000 + o) for o in range(5, 20)]
    ranges = [(p["partition"], p["start"], p["end"], p["rows"]) for p in export_metadata(path)["partitions"]]
    assert ranges == [(0, 5, 30, 25), (2, 5, 20, 15)]

    # A directory: one file per partition, each with its own metadata (the Python API).
    with km.KafkaDataset(topic, config, format="json", schema={"id": "int64"}, end="latest") as ds:
        result = export(ds, tmp_path / "dir", per_partition=True)
    assert sorted(Path(f).name for f in result.files) == [f"{topic}-{p}.parquet" for p in range(3)]
    for p in range(3):
        path = tmp_path / "dir" / f"{topic}-{p}.parquet"
        assert pq.read_table(path).column("id").to_pylist() == [p * 1000 + i for i in range(30)]
        expected = [{"topic": topic, "partition": p, "start": 0, "end": 30, "rows": 30}]
        assert export_metadata(path)["partitions"] == expected
    # Only a bounded read can be exported.
    with (
        km.KafkaDataset(topic, config, format="raw") as unbounded,
        pytest.raises(km.ConfigError, match="bounded"),
    ):
        unbounded.to_parquet(tmp_path / "never.parquet")


def test_the_end_offset_covers_a_transaction_marker(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    """Offsets without a record (here a transaction's commit marker) are inside the range the file
    holds: ``end`` is where the next export starts, ``rows`` what the file has."""
    topic = new_topic()
    producer = CkProducer({**config, "transactional.id": f"files-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(10):
        producer.produce(topic, json.dumps({"id": i}).encode())
    producer.commit_transaction(30)
    # The commit marker (offset 10) is written after the commit returns: wait for it.
    deadline = time.monotonic() + 20
    while watermarks(config["bootstrap.servers"], topic, 1)[0][1] < 11 and time.monotonic() < deadline:
        time.sleep(0.1)
    committed = {**config, "isolation.level": "read_committed"}
    with km.KafkaDataset(topic, committed, format="json", schema={"id": "int64"}, end="latest") as ds:
        result = ds.to_parquet(tmp_path / "tx.parquet")
    assert (result.partitions[0].start, result.partitions[0].end, result.rows) == (0, 11, 10)
    assert export_metadata(tmp_path / "tx.parquet")["partitions"][0]["end"] == 11


# -- Schema Registry -------------------------------------------------------------------------------


AVRO_V1 = {
    "type": "record",
    "name": "Reading",
    "namespace": "ml.files",
    "fields": [{"name": "id", "type": "long"}, {"name": "x", "type": {"type": "array", "items": "float"}}],
}
AVRO_V2 = {**AVRO_V1, "fields": [*AVRO_V1["fields"], {"name": "w", "type": "double", "default": 1.5}]}


def test_registry_framed_avro_export_records_the_schema_ids(
    config: dict[str, str],
    new_topic: Callable[..., str],
    schema_registry_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topic = new_topic()
    (tmp_path / "v1.avsc").write_text(json.dumps(AVRO_V1))
    (tmp_path / "v2.avsc").write_text(json.dumps(AVRO_V2))
    pq.write_table(
        pa.table({"id": range(6), "x": [[float(i), 0.5] for i in range(6)]}), tmp_path / "a.parquet"
    )
    pq.write_table(pa.table({"id": range(6, 10), "x": [[1.25]] * 4, "w": [2.0] * 4}), tmp_path / "b.parquet")
    bs = config["bootstrap.servers"]
    common = f"--format avro --schema-registry {schema_registry_url} --bootstrap-servers {bs}"
    for data, schema in (("a.parquet", "v1.avsc"), ("b.parquet", "v2.avsc")):
        code, _, err = kml(
            capsys, f"ingest {tmp_path / data} --topic {topic} --schema {tmp_path / schema} {common}"
        )
        assert code == 0, err
    # Without --schema: the subject's latest (v2) is the writer schema.
    assert kml(capsys, f"ingest {tmp_path}/b.parquet --topic {topic} {common}")[0] == 0

    code, _, err = kml(capsys, f"export {topic} --to {tmp_path}/avro.parquet {common}")
    assert code == 0, err
    client = SchemaRegistryClient({"url": schema_registry_url})
    versions = [client.get_version(f"{topic}-value", v) for v in client.get_versions(f"{topic}-value")]
    ids = sorted(v.schema_id for v in versions)
    assert len(ids) == 2
    meta = export_metadata(tmp_path / "avro.parquet")
    assert meta["format"] == "avro"
    assert meta["schema_registry"] == {
        "subject": f"{topic}-value",
        "reader_schema_id": ids[1],
        "reader_schema_version": max(v.version for v in versions),
        "writer_schema_ids": ids,
    }
    assert meta["partitions"] == [{"topic": topic, "partition": 0, "start": 0, "end": 14, "rows": 14}]
    table = pq.read_table(tmp_path / "avro.parquet")
    assert table.column("id").to_pylist() == [*range(10), *range(6, 10)]
    assert table.column("w").to_pylist() == [1.5] * 6 + [2.0] * 8  # v1 values take v2's default


def test_secrets_in_the_config_file_are_never_printed(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = new_topic()
    properties = tmp_path / "client.properties"
    properties.write_text(
        f"bootstrap.servers={config['bootstrap.servers']}\n"
        "schema.registry.url=http://127.0.0.1:1\n"  # nothing listens there
        f"basic.auth.user.info=trainer:{SECRET}\n"
    )
    code, out, err = kml(
        capsys, f"export {topic} --to {tmp_path}/x.parquet --format avro --config {properties}"
    )
    assert code == 1 and "SchemaRegistryError" in err
    assert SECRET not in out + err and not (tmp_path / "x.parquet").exists()
    bs, url = config["bootstrap.servers"], f"http://trainer:{SECRET}@127.0.0.1:1"
    code, out, err = kml(
        capsys, f"peek {topic} --format avro --schema-registry {url} --bootstrap-servers {bs}"
    )
    assert code == 1 and "SchemaRegistryError" in err and SECRET not in out + err


# -- bad input -------------------------------------------------------------------------------------


GOOD_JSON = '{"id": 1, "x": [1, 2, 3, 4], "y": 1}\n'
BAD_FILES = [
    # name, content, what the error must say after the file's path
    ("ragged.csv", 'id,x,y\n1,"[1,2,3,4]",2\n2,"[1,2,3]",2\n', ", row 1 (line 3), column 'x': "),
    (
        "word.csv",
        'id,x,y\n1,"[1,2,3,4]",2\n2,"[1,2,3,4]",2\n3,"[1,2,3,4]",zz\n',
        ", row 2 (line 4), column 'y': ",
    ),
    ("short.csv", 'id,x,y\n1,"[1,2,3,4]",2\n2,"[1,2,3,4]"\n', ", row 1 (line 3): CSV parse error"),
    ("missing.csv", 'id,x\n1,"[1,2,3,4]"\n', ", row 0 (line 2), column 'y': missing"),
    ("syntax.jsonl", GOOD_JSON + '{"id": 2, "x": [1, 2, 3, 4], "y": }\n', ", row 1 (line 2): "),
    (
        "kinds.jsonl",
        GOOD_JSON + '{"id": 2, "x": [1, 2, 3, 4], "y": "two"}\n',
        ", row 1 (line 2), column 'y': ",
    ),
    (
        "fraction.jsonl",
        GOOD_JSON + '{"id": 2, "x": [1, 2, 3, 4], "y": 2.5}\n',
        ", row 1 (line 2), column 'y': ",
    ),
    ("broken.parquet", "not parquet at all", ": cannot be read as Parquet"),
]


def test_bad_input_is_named_by_file_row_and_column_and_nothing_sent_goes_unreported(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bs = config["bootstrap.servers"]
    topic = new_topic()
    good = tmp_path / "good.parquet"
    pq.write_table(features(200).select(["id", "x", "y"]), good)
    sent = 0
    for name, content, expected in BAD_FILES:
        bad = tmp_path / name
        bad.write_text(content)
        # The good file first: its rows are delivered, and the error says so.
        schema = "id:int64,x:float32[4],y:int64"
        code, out, err = kml(
            capsys, f"ingest {good} {bad} --topic {topic} --schema {schema} --bootstrap-servers {bs}"
        )
        assert code == 1, (name, out, err)
        assert f"{bad}{expected}" in err, (name, err)
        assert f"200 rows were delivered to '{topic}' before the error" in err, (name, err)
        assert "200 rows delivered, 0 failed" in err
        sent += 200
        assert topic_size(config, topic) == sent, name  # nothing of the bad file reached the topic

    # A key column that is not there, a file of no known type, a value that cannot be encoded.
    code, _, err = kml(capsys, f"ingest {good} --topic {topic} --key nope --bootstrap-servers {bs}")
    assert code == 1 and f"{good}, row 0, column 'nope': no such column for the key" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = kml(capsys, f"ingest {tmp_path}/notes.txt --topic {topic} --bootstrap-servers {bs}")
    assert code == 1 and "notes.txt: cannot tell the file format" in err
    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "v": [0.5, float("nan"), 1.0]}), nan)
    with pytest.raises(km.IngestError, match=r"nan\.parquet, row 1, column 'v': .*NaN") as info:
        ingest(nan, topic, config, format="json")
    assert (info.value.file, info.value.row, info.value.column, info.value.delivered) == (str(nan), 1, "v", 0)
    assert topic_size(config, topic) == sent
    # Rows in later sends of a file are numbered from the file's start; the earlier sends are delivered.
    late = tmp_path / "late.parquet"
    pq.write_table(
        pa.table({"id": range(6), "y": [1.0, 2.0, 3.0, float("nan"), 5.0, 6.0]}), late, row_group_size=2
    )
    with pytest.raises(km.IngestError, match=r"late\.parquet, row 3, column 'y': .*NaN") as info:
        ingest(late, topic, config, format="json", schema={"id": "int64", "y": "int64"}, batch_size=2)
    assert (info.value.row, info.value.delivered, info.value.failed) == (3, 2, 0)
    assert "2 rows were delivered" in str(info.value)
    assert topic_size(config, topic) == sent + 2


def test_delivery_failures_are_counted_and_exit_non_zero(
    bootstrap_servers: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    # A topic whose broker refuses every record batch (its max.message.bytes is tiny).
    name = f"unwritable-{uuid.uuid4().hex[:8]}"
    topic = NewTopic(name, num_partitions=1, replication_factor=1, config={"max.message.bytes": "200"})
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([topic])[name].result(timeout=30)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": range(3), "text": ["x" * 300] * 3}), path)
    properties = tmp_path / "p.properties"
    properties.write_text(f"bootstrap.servers={bootstrap_servers}\nmessage.timeout.ms=3000\n")
    code, _, err = kml(capsys, f"ingest {path} --topic {name} --config {properties}")
    assert code == 1
    assert "3 of 3 rows failed delivery" in err and f"{path} row 0" in err
    assert "0 rows delivered, 3 failed" in err


def test_a_record_that_does_not_decode_leaves_no_file(
    config: dict[str, str],
    new_topic: Callable[..., str],
    produce: Callable[..., None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bs = config["bootstrap.servers"]
    topic = new_topic()
    produce(topic, [b'{"id": 1}', b'{"id": 2}', b"{not json", b'{"id": 4}'])
    out_path = tmp_path / "bad.parquet"
    code, _, err = kml(capsys, f"export {topic} --to {out_path} --schema id:int64 --bootstrap-servers {bs}")
    assert code == 1 and "DecodeError" in err and topic in err and "offset 2" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its partial one
    code, _, err = kml(
        capsys, f"export {topic} --to {out_path} --schema id:int64 --on-error skip --bootstrap-servers {bs}"
    )
    assert code == 0, err
    assert pq.read_table(out_path).column("id").to_pylist() == [1, 2, 4]
    meta = export_metadata(out_path)
    assert (meta["rows"], meta["skipped"], meta["partitions"][0]["end"]) == (3, 1, 4)


def test_json_text_refuses_nan_naming_partition_and_offset(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic()
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "v", "type": {"type": "array", "items": "float"}}],
    }
    with km.Producer(config) as producer:
        values = np.array([[0.5, 1.0], [np.nan, 2.0]], np.float32)
        producer.send(topic, {"v": values}, format="avro", avro_schema=schema).wait(30)
    with km.KafkaDataset(topic, config, format="avro", avro_schema=schema, end="latest") as ds:
        with pytest.raises(km.EncodeError, match=r"column 'v' \(partition 0 offset 1\): NaN"):
            ds.to_jsonl(tmp_path / "v.jsonl")
        with pytest.raises(km.EncodeError, match=r"column 'v' \(partition 0 offset 1\): NaN"):
            ds.to_csv(tmp_path / "v.csv")  # a list in a CSV cell is JSON text too
        assert list(tmp_path.iterdir()) == []
        ds.to_parquet(tmp_path / "v.parquet")  # Parquet keeps NaN
    assert np.isnan(pq.read_table(tmp_path / "v.parquet").column("v").to_pylist()[1][0])


# -- peek ------------------------------------------------------------------------------------------


def test_peek_prints_the_last_records_of_each_partition(
    config: dict[str, str],
    new_topic: Callable[..., str],
    produce: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    bs = config["bootstrap.servers"]
    topic = new_topic(partitions=2)
    for p in range(2):
        messages = [
            {"value": json.dumps({"id": p * 100 + i, "x": [i, 0.5]}).encode(), "key": f"k{i}".encode()}
            for i in range(10)
        ]
        produce(topic, messages, partition=p)
    code, out, err = kml(
        capsys, f"peek {topic} -n 3 --format json --schema id:int64,x:float64[2] --bootstrap-servers {bs}"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["partition", "offset", "key", "id", "x"]
    rows = [line.split(None, 4) for line in lines[2:]]
    expected = [
        [str(p), str(o), f"k{o}", str(p * 100 + o), f"[{o}.0, 0.5]"] for p in range(2) for o in (7, 8, 9)
    ]
    assert rows == expected
    # Raw values, one partition, fewer records than asked for.
    code, out, _ = kml(capsys, f"peek {topic} -n 50 --partitions 1 --width 80 --bootstrap-servers {bs}")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["partition", "offset", "key", "value"] and len(lines) == 2 + 10
    assert lines[2].split(None, 3) == ["1", "0", "k0", '{"id": 100, "x": [0, 0.5]}']
