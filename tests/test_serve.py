"""`kafka-ml serve` and the Prometheus metrics of inference loops and datasets.

Broker-free (marked `unit` by conftest): every bad argument of `serve` exits 2 naming what was
wrong, before anything connects (the cluster named is a closed port); metrics without
prometheus-client; ports in use; two loops on one registry. On the real broker: a serving
process answers every input once, is scraped while it runs, and stops on SIGTERM with everything
committed; an in-process loop's scrape matches its own metrics through a model swap and dead
letters; a dataset's counters match what it handed out.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kafka_ml as km
import numpy as np
import pytest
from helpers import confluent_avro_values, finished, in_background
from kafka_ml.cli import main as cli_main
from kafka_ml.inference import InferenceLoop
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_inference import (
    INPUT_SCHEMA,
    OUTPUT_SCHEMA,
    PARTITIONS,
    committed_total,
    fill_inputs,
    result_ids,
    score,
)

CLOSED = "127.0.0.1:1"  # nothing listens there: a test that connected would hang, not pass
SECRET = "s3cr3t-never-printed"
PREDICT = """
    import time

    def score(batch):
        return {"id": batch["id"], "y": batch["x"].sum(axis=1, dtype="float64")}

    def score_with_model(batch, model):
        return score(batch)

    not_a_function = 42
"""


def write_module(directory: Path, name: str, source: str = PREDICT) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def serve_args(target: str, *extra: str) -> list[str]:
    """``serve`` of a valid input, with ``extra`` last (a repeated flag: the last one wins)."""
    return [
        "serve", target, "--input", "in", "--output", "out", "--group", "g",
        "--bootstrap-servers", CLOSED, "--schema", "id:int64,x:float32[4]", *extra,
    ]  # fmt: skip


def scrape(url: str) -> dict[str, list[Any]]:
    """``{family name: [samples]}`` of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(families: dict[str, list[Any]], sample: str, **labels: str) -> float:
    """The one sample named ``sample`` whose labels include ``labels``."""
    # Looked for in every family: an Info's family is `x` from the registry, `x_info` from the text.
    samples = [s for family in families.values() for s in family if s.name == sample]
    found = [s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{sample}{labels}: {found} in {samples}"
    return float(found[0])


def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    yield from busy_port()


# -- bad arguments: exit 2 before connecting --------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "extra", "expected"),
    [
        ("no_such_module:score", [], "no module named 'no_such_module'"),
        ("serve_mod_a:missing", [], "serve_mod_a has no attribute 'missing'"),
        ("serve_mod_a:not_a_function", [], "is a int, not a function"),
        ("serve_mod_a.py:score", ["--model-topic", "m"], "cannot be called as predict(batch, model)"),
        ("nowhere/model.py:score", [], "nowhere/model.py: no such file"),
        ("serve_mod_b:score", [], "importing 'serve_mod_b' failed: ModuleNotFoundError"),
        (
            "serve_mod_a:score",
            ["--schema", "id:int64,x:flaot[4]"],
            "--schema: invalid configuration: column 'x'",
        ),
        ("serve_mod_a:score", ["--output-schema", "y:"], "--output-schema: expected name:type"),
        ("serve_mod_a:score", ["--output-schema", "y:float32[x]"], "cannot parse type 'float32[x]'"),
        ("serve_mod_a:score", ["--output-format", "avro"], "--output-format avro needs --output-schema"),
        ("serve_mod_a:score", ["--config", "missing.properties"], "missing.properties: cannot read"),
    ],
)
def test_bad_arguments_exit_2_naming_what_is_wrong(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: str,
    extra: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "serve_mod_a")
    write_module(tmp_path, "serve_mod_b", "import a_module_that_is_not_installed\n")
    started = time.monotonic()
    assert cli_main(serve_args(target, *extra)) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert time.monotonic() - started < 5  # refused at once: nothing waited on the cluster


def test_no_group_and_secrets_in_the_config_file_are_never_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    properties = tmp_path / "client.properties"
    properties.write_text(f"bootstrap.servers={CLOSED}\nsasl.password={SECRET}\n")
    args = ["serve", "nope:f", "--input", "in", "--output", "out", "--config", str(properties)]
    assert cli_main(args) == 2
    out = capsys.readouterr()
    assert "name the consumer group: --group, or group.id in --config" in out.err
    assert SECRET not in out.err + out.out


def test_a_metrics_port_in_use_is_refused_by_the_cli_and_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], taken_port: int
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    write_module(tmp_path, "serve_mod_port")
    args = serve_args(
        "serve_mod_port:score", "--metrics-port", str(taken_port), "--metrics-addr", "127.0.0.1"
    )
    assert cli_main(args) == 2
    assert f"metrics port {taken_port} on 127.0.0.1: address already in use" in capsys.readouterr().err
    with pytest.raises(km.ConfigError, match=f"metrics port {taken_port} on 127.0.0.1"):
        InferenceLoop(
            score, "in", "out", {"bootstrap.servers": CLOSED, "group.id": "g"},
            metrics_port=taken_port, metrics_addr="127.0.0.1",
        )  # fmt: skip


def test_without_prometheus_client_metrics_name_the_extra(tmp_path: Path) -> None:
    # A process where prometheus_client cannot be imported; `import kafka_ml` must not need it.
    code = textwrap.dedent(f"""
        import sys
        sys.modules["prometheus_client"] = None
        import kafka_ml
        from kafka_ml.cli import main
        from kafka_ml.inference import InferenceLoop
        try:
            InferenceLoop(lambda b: b, "in", "out", {{"bootstrap.servers": "{CLOSED}", "group.id": "g"}},
                          metrics_port=0)
        except ImportError as e:
            print("loop:", e)
        try:
            kafka_ml.KafkaDataset("t", {{"bootstrap.servers": "{CLOSED}"}}, metrics=True)
        except ImportError as e:
            print("dataset:", e)
        from kafka_ml.torch import KafkaIterableDataset
        try:
            KafkaIterableDataset("t", {{"bootstrap.servers": "{CLOSED}"}}, end="latest", metrics=True)
        except ImportError as e:
            print("iterable dataset:", e)
        print("cli:", main(["serve", "json:dumps", "--input", "i", "--output", "o", "--group", "g",
                            "--bootstrap-servers", "{CLOSED}", "--schema", "a:int64", "--metrics-port", "0"]))
    """)
    check = "import kafka_ml, sys; print('prometheus_client' in sys.modules)"
    plain = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "False", plain.stderr
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    hint = "pip install 'kafka-ml[metrics]'"
    assert f"loop: Prometheus metrics need prometheus-client: {hint}" in run.stdout, run.stderr
    assert f"dataset: Prometheus metrics need prometheus-client: {hint}" in run.stdout
    assert f"iterable dataset: Prometheus metrics need prometheus-client: {hint}" in run.stdout
    assert "cli: 2" in run.stdout and hint in run.stderr


def test_loops_on_one_registry_are_told_apart_and_a_second_with_the_same_name_is_refused() -> None:
    registry = CollectorRegistry()
    config = {"bootstrap.servers": CLOSED, "group.id": "g"}
    a = InferenceLoop(score, "in", "out", config, instance="a", metrics_registry=registry)
    b = InferenceLoop(score, "in2", "out", config, instance="b", metrics_registry=registry)
    a._counts["messages"], b._counts["messages"] = 5, 7  # what the loops count is what is reported
    families = {f.name: f.samples for f in registry.collect()}
    assert value(families, "kafka_ml_inference_messages_total", replica="a") == 5
    assert value(families, "kafka_ml_inference_messages_total", replica="b") == 7
    assert value(families, "kafka_ml_inference_info", replica="b", input_topic="in2") == 1
    with pytest.raises(km.ConfigError, match="already reported on this registry"):
        InferenceLoop(score, "in", "out", config, instance="a", metrics_registry=registry)
    # Each with a port of its own: a registry of its own, showing only itself.
    c = InferenceLoop(score, "in", "out", config, instance="a", metrics_port=0, metrics_addr="127.0.0.1")
    d = InferenceLoop(score, "in", "out", config, instance="a", metrics_port=0, metrics_addr="127.0.0.1")
    assert c.prometheus is not None and d.prometheus is not None
    assert c.prometheus.server is not None and d.prometheus.server is not None
    c._counts["messages"] = 3
    assert value(scrape(c.prometheus.server.url), "kafka_ml_inference_messages_total") == 3
    assert value(scrape(d.prometheus.server.url), "kafka_ml_inference_messages_total") == 0
    c.prometheus.stop()
    d.prometheus.stop()


# -- on the broker ----------------------------------------------------------------------------------


class Lines:
    """A process's stderr, drained on a thread (a full pipe would stall the server)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stderr is not None
        self._stream = proc.stderr
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def wait_for(self, pattern: str, proc: subprocess.Popen[str], timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            assert proc.poll() is None, "".join(self.lines)[-3000:]
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.lines)[-3000:]}")

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


@pytest.mark.timeout(120)
def test_serve_answers_every_input_once_is_scraped_and_stops_on_sigterm(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path
) -> None:
    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    total = 300
    fill_inputs(config, inp, total)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, "predictor")
    properties = tmp_path / "client.properties"
    # A secret the broker ignores (plaintext listener): it must show as *** and nowhere in clear.
    properties.write_text(
        f"bootstrap.servers={config['bootstrap.servers']}\ngroup.id={group}\nssl.key.password={SECRET}\n"
    )
    cmd = [
        sys.executable, "-m", "kafka_ml.cli", "serve", "predictor:score", "--input", inp, "--output", out,
        "--config", str(properties), "--format", "json", "--schema", "id:int64,x:float32[4]",
        "--output-schema", '{"id": "int64", "y": "float64"}', "--instance", "r1", "--batch-size", "50",
        "--metrics-port", "0", "--metrics-addr", "127.0.0.1", "--metrics-interval", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stderr = Lines(proc)
        port = int(stderr.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proc).group(1))
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 60
        while True:  # scraped while serving, until every input is answered
            families = scrape(url)
            answered = families.get("kafka_ml_inference_messages", [])
            if answered and answered[0].value == total:
                break
            assert time.monotonic() < deadline, f"not all answered: {answered}"
            time.sleep(0.2)
        labels = {"group": group, "replica": "r1"}
        batches = value(families, "kafka_ml_inference_batches_total", **labels)
        assert 6 <= batches <= total  # batches of at most 50
        assert value(families, "kafka_ml_inference_latency_seconds_count", **labels) == total
        assert value(families, "kafka_ml_inference_latency_seconds_bucket", le="+Inf", **labels) == total
        assert value(families, "kafka_ml_inference_latency_seconds_sum", **labels) > 0
        assert value(families, "kafka_ml_inference_predict_errors_total", **labels) == 0
        assert value(families, "kafka_ml_inference_info", output_topic=out, delivery="at_least_once") == 1
        dataset = {"dataset": f"{group}/r1"}
        assert value(families, "kafka_ml_dataset_messages_total", **dataset) == total
        assert value(families, "kafka_ml_dataset_decoded_bytes_total", **dataset) > 0
        for p in range(PARTITIONS):  # one lag gauge per input partition, all caught up
            assert value(families, "kafka_ml_consumer_lag", topic=inp, partition=str(p)) == 0
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log = stderr.text()
    assert proc.returncode == 0, log[-3000:]
    final = json.loads(stdout.strip().splitlines()[-1])
    assert final["messages"] == total and final["batches"] == batches and final["predict_errors"] == 0
    assert final["lag"] == {f"{inp}[{p}]": 0 for p in range(PARTITIONS)}
    assert Counter(result_ids(config, out)) == Counter(range(total))  # every input answered once
    assert committed_total(config, group, inp) == total
    assert '"ssl.key.password": "***"' in log
    assert SECRET not in log + stdout


@pytest.mark.timeout(120)
def test_a_scrape_matches_the_loop_through_a_model_swap_and_dead_letters(
    config: dict[str, str], new_topic: Callable[..., str]
) -> None:
    inp, out, dead = new_topic(partitions=1), new_topic(partitions=1), new_topic(partitions=1)
    model_topic = f"models-{uuid.uuid4().hex[:8]}"
    publisher = km.ModelPublisher(model_topic, config)
    publisher.publish({"w": np.array([1.0])}, "v1")
    subscriber = km.ModelSubscriber(model_topic, config, loader="numpy")
    subscriber.wait_for("v1", timeout=30)

    def predict(batch: Any, model: dict[str, np.ndarray]) -> dict[str, Any]:
        if (batch["id"] < 0).any():
            raise ValueError("negative id")
        return {"id": batch["id"], "y": score(batch)["y"] * float(model["w"][0])}

    loop = InferenceLoop(
        predict, inp, out, {**config, "group.id": f"serve-{uuid.uuid4().hex[:8]}"},
        model=subscriber, format="json", schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
        on_predict_error="dead_letter", dead_letter_topic=dead, instance="m",
        metrics_port=0, metrics_addr="127.0.0.1",
    )  # fmt: skip
    assert loop.prometheus is not None and loop.prometheus.server is not None
    url = loop.prometheus.server.url
    thread, result = in_background(lambda: loop.run(handle_signals=False))

    def send(ids: np.ndarray) -> None:
        x = np.repeat(ids[:, None], 4, axis=1).astype(np.float32)
        with km.Producer(config) as producer:
            producer.send(inp, {"id": ids, "x": x}, format="json", schema=INPUT_SCHEMA)

    def settled(n: int) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while loop.metrics["messages"] + loop.metrics["dead_lettered"] < n:
            assert "error" not in result, result.get("error")
            assert time.monotonic() < deadline, loop.metrics
            time.sleep(0.05)
        return loop.metrics

    try:
        loop.wait_until_assigned()
        send(np.arange(100, dtype=np.int64))
        before = settled(100)
        assert value(scrape(url), "kafka_ml_inference_model_info", version="v1") == 1
        publisher.publish({"w": np.array([2.0])}, "v2")
        subscriber.wait_for("v2", timeout=30)
        send(np.arange(100, 200, dtype=np.int64))
        settled(200)  # answered before the bad inputs come, which then make up batches of their own
        send(np.array([-1, -2], dtype=np.int64))  # predict raises: dead-lettered
        metrics = settled(202)
        families = scrape(url)  # nothing more comes in: the scrape and the loop agree
        assert metrics["model_version"] == "v2" and metrics["model_updates"] == 1
        assert before["model_version"] == "v1"
        assert value(families, "kafka_ml_inference_model_info", version="v2") == 1
        assert "v1" not in {s.labels["version"] for s in families["kafka_ml_inference_model_info"]}
        for key in ("messages", "batches", "predict_errors", "model_updates", "transaction_aborts"):
            assert value(families, f"kafka_ml_inference_{key}_total") == metrics[key], key
        assert value(families, "kafka_ml_inference_dead_letters_total") == metrics["dead_lettered"] == 2
        assert metrics["predict_errors"] >= 1 and metrics["messages"] == 200
        assert value(families, "kafka_ml_inference_latency_seconds_count") == metrics["messages"]
        assert value(families, "kafka_ml_consumer_lag", topic=inp, partition="0") == 0
    finally:
        loop.stop()
        thread.join(timeout=60)
        subscriber.close()
        publisher.close()
    finished(thread, result, 60)
    assert loop.prometheus.server is None  # the endpoint stops with the loop
    assert sorted(result_ids(config, out)) == list(range(200))


def test_a_dataset_reports_what_it_handed_out(config: dict[str, str], new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=PARTITIONS)
    fill_inputs(config, topic, 120)
    registry = CollectorRegistry()
    ds = km.KafkaDataset(
        topic, config, format="json", schema=INPUT_SCHEMA, end="latest", batch_size=16,
        metrics=registry, metrics_name="train",
    )  # fmt: skip
    batches = list(ds)
    batches += list(ds)  # a second pass: the counters go on from the first
    families = {f.name: f.samples for f in registry.collect()}
    assert value(families, "kafka_ml_dataset_messages_total", dataset="train") == 240
    assert value(families, "kafka_ml_dataset_batches_total") == len(batches)
    assert value(families, "kafka_ml_dataset_decoded_bytes_total") == sum(b.nbytes for b in batches)
    lags = {s.labels["partition"]: s.value for s in families["kafka_ml_consumer_lag"]}
    assert lags == {str(p): 0 for p in range(PARTITIONS)}
    ds.close()
    assert not list(registry.collect())  # a closed dataset is no longer reported


POISONED = """
    def score(batch):
        if (batch["id"] == 150).any():
            raise ValueError("input 150 is poison")
        return {"id": batch["id"], "y": batch["x"].sum(axis=1, dtype="float64")}
"""
RESULT_AVRO = {
    "type": "record",
    "name": "Result",
    "namespace": "kafka_ml.test",
    "fields": [{"name": "id", "type": "long"}, {"name": "y", "type": "double"}],
}


@pytest.mark.timeout(120)
def test_avro_results_are_registered_and_a_predict_stop_still_reports_what_was_served(
    config: dict[str, str], new_topic: Callable[..., str], tmp_path: Path, schema_registry_url: str
) -> None:
    """With --schema-registry, Avro results are framed with the id their schema got under
    <output>-value at start, so confluent's AvroDeserializer reads them; a predict error with
    --on-predict-error stop exits 1 after the final metrics line, and exactly what it reports as
    served is committed and in the output."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    inp, out = new_topic(partitions=PARTITIONS), new_topic(partitions=1)
    total = 300
    fill_inputs(config, inp, total)
    group = f"serve-{uuid.uuid4().hex[:8]}"
    write_module(tmp_path, "poisoned", POISONED)
    (tmp_path / "result.avsc").write_text(json.dumps(RESULT_AVRO))
    cmd = [
        sys.executable, "-m", "kafka_ml.cli", "serve", "poisoned:score", "--input", inp, "--output", out,
        "--bootstrap-servers", config["bootstrap.servers"], "--group", group, "--format", "json",
        "--schema", "id:int64,x:float32[4]", "--output-format", "avro", "--output-schema", "result.avsc",
        "--schema-registry", schema_registry_url, "--on-predict-error", "stop", "--batch-size", "10",
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "input 150 is poison" in run.stderr
    final = json.loads(run.stdout.strip().splitlines()[-1])
    served = final["messages"]
    assert final["predict_errors"] == 1 and 0 < served < total, final
    assert committed_total(config, group, inp) == served

    registered = SchemaRegistryClient({"url": schema_registry_url}).get_latest_version(f"{out}-value")
    assert json.loads(registered.schema.schema_str)["name"] == "Result"
    # Every value read, plus a second's wait: nothing beyond what was reported served.
    bootstrap = config["bootstrap.servers"]
    read = confluent_avro_values(bootstrap, schema_registry_url, out, served, more_after=1.0)
    header = b"\0" + registered.schema_id.to_bytes(4, "big")
    assert all(raw[:5] == header for raw, _ in read)
    results = [value for _, value in read]
    ids = [r["id"] for r in results]
    assert len(ids) == served == len(set(ids)) and 150 not in ids
    assert all(r["y"] == 4.0 * r["id"] for r in results)
