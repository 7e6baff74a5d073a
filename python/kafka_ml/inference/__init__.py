"""Real-time inference: consume a topic, predict, produce one result per input.

``InferenceLoop`` (and ``serve``, its one-call form) reads input batches from a streaming
``KafkaDataset`` of a consumer group, calls ``predict`` on each, and writes one result per input
with the input's key and lineage headers (source topic, partition, offset, model version):

- ``delivery="at_least_once"``: a batch's input offsets are committed only once its results are
  acknowledged by the cluster; after a crash the uncommitted tail is processed again.
- ``delivery="exactly_once"``: results and input offsets go in one Kafka transaction; readers of
  the output with ``isolation.level=read_committed`` see each result exactly once.

Given a ``ModelSubscriber`` (anything with a ``latest`` version that has ``version`` and
``model``), each batch is predicted by the newest verified model: ``predict(batch, model)``.
"""

from __future__ import annotations

from ..exceptions import InferenceError
from .loop import InferenceLoop, ModelSource, serve

# What `kafka_ml.inference` offered as one module, importable from it as before
# (bench/inference_bench.py uses `_Latencies`).
from ..headers import ERROR as ERROR, MODEL_VERSION as MODEL_VERSION  # isort: skip
from ..headers import SOURCE_OFFSET as SOURCE_OFFSET, SOURCE_PARTITION as SOURCE_PARTITION  # isort: skip
from ..headers import SOURCE_TOPIC as SOURCE_TOPIC  # isort: skip
from .latency import _Latencies as _Latencies  # isort: skip
from .loop import Delivery as Delivery  # isort: skip

__all__ = ["InferenceError", "InferenceLoop", "ModelSource", "serve"]
