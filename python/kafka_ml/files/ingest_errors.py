"""Bad input named in the file's terms: an encoder's or pyarrow reader's error becomes an
`IngestError` naming the file, the row (and line, for text files) and the column."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import IngestError


def _row_text(kind: str, row: int) -> str:
    """A row's position as people look for it: the line too, for text files."""
    if kind == "csv":
        return f"row {row} (line {row + 2})"
    if kind == "jsonl":
        return f"row {row} (line {row + 1})"
    return f"row {row}"


_ROW = re.compile(r"\brow (\d+)")
_COLUMN = re.compile(r"column '([^']*)'")


def _encode_error(
    pa: Any, path: Path, kind: str, batch: Any, first_row: int, message: str, declared: Mapping[str, str]
) -> IngestError:
    """An :class:`EncodeError` of one batch, in the file's terms: its row numbers shifted to the
    file's, and the row found where the encoder names only the column."""
    column_match = _COLUMN.search(message)
    column = column_match.group(1) if column_match else None
    row_match = _ROW.search(message)
    row: int | None = first_row + int(row_match.group(1)) if row_match else None
    if row is None and column is not None and column in declared and column in batch.schema.names:
        found = _first_uncastable(pa, batch.column(column), declared[column])
        row = None if found is None else first_row + found
    reason = _ROW.sub(lambda m: f"row {first_row + int(m.group(1))}", message)
    where = _row_text(kind, row) if row is not None else f"rows {first_row}-{first_row + batch.num_rows - 1}"
    return IngestError(
        f"{path}, {where}" + (f", column '{column}'" if column else "") + f": {reason}",
        file=str(path),
        row=row,
        column=column,
    )


def _first_uncastable(pa: Any, column: Any, decl: str) -> int | None:
    """The first row of ``column`` that Arrow cannot cast to the declared scalar type."""
    name = decl.rstrip("?")
    if name.endswith("]"):
        return None
    try:
        target = (
            pa.from_numpy_dtype(np.dtype(name)) if name not in ("string", "binary") else getattr(pa, name)()
        )
    except TypeError:
        return None
    lo, hi = 0, len(column)

    def casts(a: int, b: int) -> bool:
        try:
            column.slice(a, b - a).cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return False
        return True

    if casts(lo, hi):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if casts(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


_CSV_ROW = re.compile(r"Row #(\d+)")
_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")
_CSV_VALUE = re.compile(r"invalid value '(.*)'")
_JSON_ROW = re.compile(r"in row (\d+)")


# What pyarrow.dataset puts before the reader's own message.
_DATASET_PREFIX = re.compile(
    r"^(Error creating dataset\. .*?\?: )?(Could not open [\w ]+ input source '[^']*': )?(Invalid: )?", re.S
)


def _read_error(path: Path, kind: str, error: BaseException, row: int) -> IngestError:
    """A file that cannot be read: the pyarrow message with the row (and column) found."""
    message = _DATASET_PREFIX.sub("", str(error), count=1)
    what = {"csv": "CSV", "jsonl": "JSON lines", "parquet": "Parquet", "ipc": "Arrow IPC"}[kind]
    located: tuple[int, str | None] | None = None
    if kind == "csv":
        located = _locate_csv(path, message)
    elif kind == "jsonl":
        located = _locate_json(path, message)
    if located is None:
        after = f" (after row {row - 1})" if row else ""
        return IngestError(f"{path}: cannot be read as {what}{after}: {message}", file=str(path))
    bad, column = located
    return IngestError(
        f"{path}, {_row_text(kind, bad)}" + (f", column '{column}'" if column else "") + f": {message}",
        file=str(path),
        row=bad,
        column=column,
    )


def _locate_csv(path: Path, message: str) -> tuple[int, str | None] | None:
    """The data row (0-based) and column of a CSV error, read again with Python's csv module."""
    line_match = _CSV_ROW.search(message)
    column_match = _CSV_COLUMN.search(message)
    value_match = _CSV_VALUE.search(message)
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, [])
        column = int(column_match.group(1)) if column_match else None
        name = header[column] if column is not None and column < len(header) else None
        if line_match is not None:  # physical line number, 1-based, header included
            return max(int(line_match.group(1)) - 2, 0), name
        value = value_match.group(1) if value_match else None
        for i, record in enumerate(reader):
            if len(record) != len(header):
                return i, None
            if column is not None and value is not None and column < len(record) and record[column] == value:
                return i, name
    return None


_JSON_COLUMN = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)")


def _locate_json(path: Path, message: str) -> tuple[int, str | None] | None:
    """The row (0-based, blank lines not counted) of a JSON-lines error: the first line that is
    not a JSON object, or whose value of the column pyarrow names is of another JSON type than
    before."""
    changed = _JSON_COLUMN.search(message)
    column = changed.group(1) if changed else None
    first_kind: str | None = None
    with open(path, encoding="utf-8", errors="replace") as f:
        row = 0
        for text in f:
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError:
                return row, None
            if not isinstance(value, dict):
                return row, None
            if column is not None and value.get(column) is not None:
                kind = _json_kind(value[column])
                if first_kind is None:
                    first_kind = kind
                elif kind != first_kind:
                    return row, column
            row += 1
    return None


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__
