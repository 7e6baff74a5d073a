"""NumPy arrays view the Arrow buffers: shared memory and allocation counts, not just values."""

from __future__ import annotations

import tracemalloc

import duckdb
import kafka_ml as km
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest


@pytest.fixture
def tensor_batch(config, new_topic, produce) -> km.Batch:
    topic = new_topic()
    rows = np.random.default_rng(0).random((4000, 64), dtype=np.float32)
    produce(topic, [r.tobytes() for r in rows])
    ds = km.KafkaDataset(
        topic, config, format="tensor", dtype="float32", shape=64, end="latest", batch_size=4000, max_wait=5
    )
    batches = list(ds)
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0].to_numpy()["value"], rows)
    return batches[0]


def test_numpy_views_share_the_arrow_buffer(tensor_batch):
    a = tensor_batch["value"]
    b = tensor_batch["value"]
    assert np.shares_memory(a, b), "two views of one column must share memory"
    assert not a.flags.writeable and not a.flags.owndata
    assert isinstance(a.base, km._native.ArrowBufferOwner)
    # The address NumPy reads is the address of the Arrow buffer pyarrow sees.
    arrow_values = pa.record_batch(tensor_batch).column("value").values
    assert a.__array_interface__["data"][0] == arrow_values.buffers()[1].address == a.base.address


def test_to_numpy_allocates_no_copy_of_the_data(tensor_batch):
    nbytes = 4000 * 64 * 4
    tensor_batch.to_numpy()  # warm up
    tracemalloc.start()
    views = [tensor_batch.to_numpy() for _ in range(10)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(views) == 10
    # Ten copies would allocate 10 MB; views cost a few hundred bytes each.
    assert peak < nbytes / 10, f"to_numpy allocated {peak} bytes for {nbytes} bytes of data"


def test_view_outlives_the_batch(config, new_topic, produce):
    topic = new_topic()
    produce(topic, [np.full(8, i, dtype=np.int32).tobytes() for i in range(10)])
    ds = km.KafkaDataset(topic, config, format="tensor", dtype="int32", shape=8, end="latest")
    arrays = [b["value"] for b in ds]
    del ds
    values = np.concatenate(arrays)
    np.testing.assert_array_equal(values[:, 0], np.arange(10))


def test_arrow_capsule_readers(config, new_topic, produce):
    topic = new_topic()
    produce(topic, [f'{{"id": {i}, "x": {i * 0.5}}}'.encode() for i in range(10)])
    ds = km.KafkaDataset(topic, config, format="json", schema={"id": "int64", "x": "float64"}, end="latest")
    (batch,) = list(ds)
    rb = pa.record_batch(batch)
    assert rb.num_rows == 10
    # The capsule hands over the same buffer: no copy in pyarrow either.
    assert rb.column("id").buffers()[1].address == batch["id"].__array_interface__["data"][0]
    assert pa.table(batch).num_rows == 10  # __arrow_c_stream__
    assert pl.DataFrame(batch)["x"].sum() == pytest.approx(sum(i * 0.5 for i in range(10)))
    assert pd.DataFrame(pa.record_batch(batch).to_pandas())["id"].tolist() == list(range(10))
    features = pa.table(batch)  # DuckDB scans the Arrow table by its Python name
    assert duckdb.sql("select sum(id) as s from features").fetchall() == [(45,)]
    del features
