"""`kafka-ml export`, `kafka-ml ingest` and `kafka-ml peek`: files to topics and back from the
shell (the work is :mod:`kafka_ml.files`'s)."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path
from typing import Any

from .cli_args import (
    READ_FORMATS,
    WRITE_FORMATS,
    add_decoding,
    add_kafka_options,
    decoding_options,
    kafka_config,
    split_registry,
)
from .exceptions import ConfigError, KafkaMLError


def add_files_parsers(sub: Any) -> None:
    """The `export`, `ingest` and `peek` subcommands."""
    e = sub.add_parser(
        "export",
        help="write a bounded snapshot of a topic to a Parquet, CSV or JSON-lines file (needs pyarrow)",
        description="Reads a topic from --start to --end (offsets resolved once, when it starts) and "
        "writes the decoded records to --to, batch by batch. A Parquet file's key-value metadata "
        "'kafka_ml.export' records the topic, each partition's [start, end) offsets and row count, "
        "the format and the schema ids.",
    )
    e.add_argument("topic")
    e.add_argument(
        "--to",
        required=True,
        metavar="PATH",
        help="a .parquet, .csv or .jsonl file, or a directory (an existing one, a name ending in '/', or "
        "one without a file suffix) that gets one file per partition, <topic>-<partition>.<ext>",
    )
    e.add_argument(
        "--file-format",
        choices=("parquet", "csv", "jsonl"),
        help="the file format (default: from the suffix of --to; parquet for a directory)",
    )
    add_decoding(e, READ_FORMATS, default="json")
    e.add_argument(
        "--start",
        default="earliest",
        help="earliest (default), latest, an offset for every partition, P:OFFSET,P:OFFSET,..., or an "
        "ISO-8601 time (UTC unless it names a zone)",
    )
    e.add_argument("--end", default="latest", help="as --start; default latest (the end offsets now)")
    e.add_argument("--partitions", metavar="LIST", help="partitions to read, e.g. 0,2,5-7 (default: all)")
    e.add_argument(
        "--metadata",
        metavar="COLUMNS",
        help="Kafka columns to add: a comma list of partition, offset, timestamp, key, headers, topic",
    )
    e.add_argument("--on-error", choices=("error", "skip"), default="error", help="undecodable records")
    e.add_argument("--batch-size", type=int, default=65_536, help="rows per batch (a Parquet row group)")
    e.add_argument("--compression", default="snappy", help="Parquet compression (snappy, zstd, none, ...)")
    e.add_argument(
        "--no-writer-schema-ids",
        action="store_true",
        help="do not record the writer schema ids of registry-framed values (saves a second, raw read)",
    )
    _add_progress(e)
    add_kafka_options(e)

    i = sub.add_parser(
        "ingest",
        help="send the rows of Parquet, CSV, JSON-lines or Arrow IPC files to a topic (needs pyarrow)",
        description="Sends every row of the files (directories: every such file under them) to --topic, "
        "encoded in --format, and waits for every delivery report. Exits 1 if any row failed or the "
        "input is bad (the error names the file, row and column, and how many rows were delivered).",
    )
    i.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    i.add_argument("--topic", required=True)
    add_decoding(i, WRITE_FORMATS, default="json", reading=False)
    i.add_argument("--key", metavar="COLUMN", help="the column whose value keys each message")
    i.add_argument("--partition", type=int, help="send every row to this partition (default: by key)")
    i.add_argument("--batch-size", type=int, default=262_144, help="rows per send (about)")
    _add_progress(i)
    add_kafka_options(i)

    p = sub.add_parser("peek", help="print the last records of each partition of a topic (needs pyarrow)")
    p.add_argument("topic")
    p.add_argument("-n", type=int, default=20, help="records (offsets) per partition (default 20)")
    add_decoding(p, READ_FORMATS, default="raw")
    p.add_argument("--partitions", metavar="LIST", help="partitions, e.g. 0,2,5-7 (default: all)")
    p.add_argument("--width", type=int, default=40, help="cut each cell at this many characters")
    add_kafka_options(p)


def _add_progress(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="show a progress bar (tqdm)"
    )
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


# -- arguments -----------------------------------------------------------------------------------


def parse_partitions(value: str | None) -> list[int] | None:
    if value is None:
        return None
    out: list[int] = []
    for item in value.split(","):
        first, sep, last = item.strip().partition("-")
        try:
            out += list(range(int(first), int(last) + 1)) if sep else [int(first)]
        except ValueError:
            raise ConfigError(
                f"--partitions: expected numbers and ranges like 0,2,5-7, got {item!r}"
            ) from None
    return sorted(set(out))


def parse_position(
    value: str, flag: str, topic: str, partitions: list[int] | None, config: dict[str, str]
) -> Any:
    """``earliest`` / ``latest`` / an offset for every partition / ``P:OFFSET,...`` / a time."""
    text = value.strip()
    if text in ("earliest", "latest"):
        return text
    if ":" in text and all(part.partition(":")[0].strip().isdigit() for part in text.split(",")):
        try:
            return {(topic, int(p)): int(o) for p, _, o in (part.partition(":") for part in text.split(","))}
        except ValueError:
            raise ConfigError(f"{flag}: expected P:OFFSET,P:OFFSET,..., got {value!r}") from None
    if text.lstrip("-").isdigit():
        offset = int(text)
        if offset < 0:
            raise ConfigError(f"{flag}: an offset cannot be negative, got {offset}")
        return {
            (topic, p): offset
            for p in (partitions if partitions is not None else _all_partitions(topic, config))
        }
    try:
        when = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag}: expected earliest, latest, an offset, P:OFFSET,... or an ISO-8601 time, got {value!r}"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.timezone.utc)


def _all_partitions(topic: str, config: dict[str, str]) -> list[int]:
    from .dataset import KafkaDataset

    with KafkaDataset(topic, config, format="raw", start="earliest", end="latest") as probe:
        return sorted(p for _, p, _, _ in probe.plan or [])


def _is_directory(path: Path, given: str) -> bool:
    from .files._common import _SUFFIXES

    return path.is_dir() or given.endswith(("/", "\\")) or path.suffix.lower() not in _SUFFIXES


# -- commands ------------------------------------------------------------------------------------


def files_command(args: argparse.Namespace) -> int:
    name = f"kafka-ml {args.command}"
    try:
        config, registry = split_registry(kafka_config(args), args.schema_registry)
        if args.command == "export":
            return _export(args, config, registry)
        if args.command == "ingest":
            return _ingest(args, config, registry)
        return _peek(args, config, registry)
    except ImportError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except ConfigError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 2
    except KafkaMLError as e:
        # The library's messages say what failed and never carry a secret.
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1


def _export(args: argparse.Namespace, config: dict[str, str], registry: Any) -> int:
    from .dataset import KafkaDataset
    from .files import export
    from .files._common import _pyarrow

    _pyarrow()
    options = decoding_options(args, registry)
    partitions = parse_partitions(args.partitions)
    start = parse_position(args.start, "--start", args.topic, partitions, config)
    end = parse_position(args.end, "--end", args.topic, partitions, config)
    metadata = [m.strip() for m in args.metadata.split(",") if m.strip()] if args.metadata else []
    directory = _is_directory(Path(args.to), args.to)
    with KafkaDataset(
        None if partitions is not None else args.topic,
        config,
        partitions=[(args.topic, p) for p in partitions] if partitions is not None else None,
        start=start,
        end=end,
        metadata=metadata,
        on_error=args.on_error,
        **options,
    ) as dataset:
        result = export(
            dataset,
            Path(args.to),
            file_format=args.file_format,
            per_partition=directory,
            compression=None if args.compression == "none" else args.compression,
            batch_size=args.batch_size,
            progress=args.progress,
            writer_schema_ids=not args.no_writer_schema_ids,
        )
    print(f"exported {result.rows} rows of '{args.topic}' ({args.format}) to {args.to}")
    for file, doc in result.metadata.items():
        for r in doc["partitions"]:
            where = f" ({file})" if directory else ""
            print(
                f"  partition {r['partition']}: offsets [{r['start']}, {r['end']}), {r['rows']} rows{where}"
            )
    return 0


def _ingest(args: argparse.Namespace, config: dict[str, str], registry: Any) -> int:
    from .exceptions import IngestError
    from .files import ingest
    from .files._common import _pyarrow

    _pyarrow()
    options = decoding_options(args, registry)
    try:
        result = ingest(
            args.paths,
            args.topic,
            config,
            key=args.key,
            partition=args.partition,
            batch_size=args.batch_size,
            progress=args.progress,
            **options,
        )
    except IngestError as e:
        print(f"kafka-ml ingest: {e}", file=sys.stderr)
        print(f"{e.delivered} rows delivered, {e.failed} failed", file=sys.stderr)
        return 1
    for path, rows in result.files:
        print(f"  {path}: {rows} rows")
    print(f"{result.rows} rows sent to '{args.topic}': {result.delivered} delivered, {result.failed} failed")
    return 0


def _peek(args: argparse.Namespace, config: dict[str, str], registry: Any) -> int:
    from .files import format_table, peek

    options = decoding_options(args, registry)
    fmt = options.pop("format")
    table = peek(
        args.topic, config, args.n, partitions=parse_partitions(args.partitions), format=fmt, **options
    )
    print(format_table(table, width=args.width))
    return 0
