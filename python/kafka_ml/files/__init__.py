"""Files to topics and back: export, ingest and peek.

- :func:`export` (also :meth:`KafkaDataset.to_parquet`, ``to_csv``, ``to_jsonl``) writes a bounded
  read of a dataset to a Parquet, CSV or JSON-lines file, or to a directory with one file per
  partition, batch by batch (memory stays bounded by the dataset's queue and one batch). A
  Parquet file's key-value metadata (key ``kafka_ml.export``, read back with
  :func:`export_metadata`) records exactly which records it holds: the topics, each partition's
  ``[start, end)`` offsets and row count, the payload format and, for registry-framed formats,
  the schema ids.
- :func:`ingest` sends Parquet, CSV, JSON-lines and Arrow IPC files (or directories of them) to a
  topic through :meth:`Producer.send` (rows encoded in Rust), batch by batch; every row ends up
  delivered or failed, and bad input raises :class:`~kafka_ml.IngestError` naming the file, the
  row and the column, with how many rows were delivered before it.
- :func:`peek` reads the last records of each partition; :func:`format_table` prints them.

pyarrow is needed here (the ``arrow`` extra) and imported only when these functions run.
"""

from ._common import EXPORT_METADATA_KEY
from .export import ExportResult, PartitionRange, export, export_metadata
from .ingest import IngestResult, ingest
from .peek import format_table, peek

__all__ = [
    "EXPORT_METADATA_KEY",
    "ExportResult",
    "IngestResult",
    "PartitionRange",
    "export",
    "export_metadata",
    "format_table",
    "ingest",
    "peek",
]
