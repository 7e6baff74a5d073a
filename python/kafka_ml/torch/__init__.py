"""PyTorch integration: a Kafka topic as a sharded, resumable ``IterableDataset``.

``KafkaIterableDataset`` yields one dict of tensors per batch (``torch.from_numpy`` views of the
Arrow buffers where no reshuffling is needed), for ``DataLoader(ds, batch_size=None, ...)``.
The dataset and its sharding are in ``dataset``; ``transport`` packs a DataLoader worker's batch
for its trip to the main process.

torch is an optional dependency (``pip install kafka-ml[torch]``).
"""

from __future__ import annotations

from .dataset import KafkaIterableDataset, merge_state_dicts

# What `kafka_ml.torch` offered as one module, importable from it as before (tests and
# bench/torch_bench.py use the transport's private names).
from .dataset import TopicPartition as TopicPartition  # isort: skip
from .transport import _PIPE_MAX_BYTES as _PIPE_MAX_BYTES, _worker_batch as _worker_batch  # isort: skip

__all__ = ["KafkaIterableDataset", "merge_state_dicts"]
