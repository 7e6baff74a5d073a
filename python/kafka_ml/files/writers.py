"""The file writers of an export: Parquet, CSV and JSON lines, one batch at a time, with the
column conversions CSV and JSON need (bytes as base64; lists, structs and maps as JSON text)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import EncodeError
from ._common import _pyarrow


class _Writer:
    def write(self, batch: Any, source: Any) -> None:
        raise NotImplementedError

    def close(self, metadata: Mapping[str, str]) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


def _writer(kind: str, path: Path, schema: Any, parquet_options: Mapping[str, Any]) -> _Writer:
    if kind == "parquet":
        return _ParquetWriter(path, schema, parquet_options)
    if kind == "csv":
        return _CsvWriter(path, schema)
    return _JsonLinesWriter(path, schema)


class _ParquetWriter(_Writer):
    def __init__(self, path: Path, schema: Any, options: Mapping[str, Any]) -> None:
        import pyarrow.parquet as pq

        pa = _pyarrow()
        text = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
        options = {"use_dictionary": text, **options}
        self._writer = pq.ParquetWriter(os.fspath(path), schema, **options)

    def write(self, batch: Any, source: Any) -> None:
        self._writer.write_batch(batch)

    def close(self, metadata: Mapping[str, str]) -> None:
        self._writer.add_key_value_metadata(dict(metadata))
        self._writer.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


class _CsvWriter(_Writer):
    """CSV through pyarrow's writer; what CSV cannot hold as it is becomes text: lists, structs
    and maps as JSON, bytes as base64."""

    def __init__(self, path: Path, schema: Any) -> None:
        self._path = path
        self._writer: Any = None
        self._empty = schema

    def write(self, batch: Any, source: Any) -> None:
        pa = _pyarrow()
        import pyarrow.csv as pcsv

        columns = [
            _csv_column(pa, batch.column(i), batch.schema.field(i).name, source)
            for i in range(batch.num_columns)
        ]
        table = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
        if self._writer is None:
            self._writer = pcsv.CSVWriter(os.fspath(self._path), table.schema)
        self._writer.write_batch(table)

    def close(self, metadata: Mapping[str, str]) -> None:
        if self._writer is None:  # no rows: the header alone
            pa = _pyarrow()
            self.write(pa.RecordBatch.from_pylist([], schema=self._empty), None)
        self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()


class _JsonLinesWriter(_Writer):
    """One JSON object per line, built column by column with Arrow compute (no Python object
    per row for numbers, booleans, strings and lists of them)."""

    def __init__(self, path: Path, schema: Any) -> None:
        self._file = open(path, "wb")  # closed in close() / abort()
        self._names = [json.dumps(name, ensure_ascii=False) for name in schema.names]

    def write(self, batch: Any, source: Any) -> None:
        pa = _pyarrow()
        pc = pa.compute
        if batch.num_rows == 0:
            return
        pieces: list[Any] = []
        for i, name in enumerate(self._names):
            text = _json_text(pa, batch.column(i), batch.schema.field(i).name, source)
            pieces += [("{" if i == 0 else ", ") + name + ": ", pc.fill_null(text, "null")]
        if not pieces:
            pieces = ["{", pa.array([""] * batch.num_rows)]
        pieces.append("}\n")
        lines = pc.binary_join_element_wise(*pieces, "")
        self._file.write(_string_bytes(lines))

    def close(self, metadata: Mapping[str, str]) -> None:
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def _string_bytes(array: Any) -> memoryview:
    """The UTF-8 bytes of a string array's values, back to back (without a copy)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    start, end = int(offsets[array.offset]), int(offsets[array.offset + len(array)])
    return memoryview(array.buffers()[2])[start:end]


def _where(source: Any, row: int) -> str:
    """Topic, partition and offset of an exported batch's row (from the accounting columns)."""
    if source is None:
        return f"row {row}"
    names = source.schema.names
    part = source.column("partition")[row].as_py() if "partition" in names else "?"
    offset = source.column("offset")[row].as_py() if "offset" in names else "?"
    topic = source.column("topic")[row].as_py() if "topic" in names else None
    return (f"topic '{topic}' " if topic else "") + f"partition {part} offset {offset}"


def _csv_column(pa: Any, array: Any, name: str, source: Any) -> Any:
    t = array.type
    if pa.types.is_dictionary(t):
        array = array.dictionary_decode()
        t = array.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _base64(pa, array)
    if _is_list(pa, t) or pa.types.is_struct(t) or pa.types.is_map(t):
        return _json_text(pa, array, name, source)
    return array


def _is_list(pa: Any, t: Any) -> bool:
    return bool(pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))


def _base64(pa: Any, array: Any) -> Any:
    return pa.array(
        [None if v is None else base64.b64encode(v).decode("ascii") for v in array.to_pylist()],
        type=pa.string(),
    )


_NEEDS_ESCAPE = '[\\\\"\\x00-\\x1f]'


class _NotJson(Exception):
    """A value JSON cannot represent (NaN, infinity), at ``index`` of the array being written."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def _json_text(pa: Any, array: Any, name: str, source: Any) -> Any:
    """Each value of ``array`` as JSON text (null where the value is null); a NaN or infinity
    raises :class:`EncodeError` naming the column and the record (``source``'s accounting
    columns say its partition and offset)."""
    try:
        return _json_values(pa, array)
    except _NotJson as e:
        raise EncodeError(
            f"column '{name}' ({_where(source, e.index)}): NaN or infinity has no JSON representation "
            "(export to Parquet instead)"
        ) from None


def _json_values(pa: Any, array: Any) -> Any:
    pc = pa.compute
    t = array.type
    if pa.types.is_dictionary(t):
        return _json_values(pa, array.dictionary_decode())
    if pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
        return pc.cast(array, pa.string())
    if pa.types.is_floating(t):
        finite = pc.fill_null(pc.is_finite(array), True)
        if not pc.all(finite).as_py():
            raise _NotJson(int(np.flatnonzero(~np.asarray(finite))[0]))
        return pc.cast(array, pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _quoted(pa, array.cast(pa.string()))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _quoted(pa, _base64(pa, array))
    if pa.types.is_temporal(t):
        return _quoted(pa, pc.cast(array, pa.string()))
    if _is_list(pa, t):
        offsets = np.zeros(len(array) + 1, dtype=np.int32)
        np.cumsum(np.asarray(pc.fill_null(pc.list_value_length(array), 0)), out=offsets[1:])
        try:
            items = _json_values(pa, pc.list_flatten(array))
        except _NotJson as e:  # the item's index, as its row's
            raise _NotJson(int(np.searchsorted(offsets, e.index, side="right")) - 1) from None
        lists = pa.ListArray.from_arrays(pa.array(offsets), pc.fill_null(items, "null"))
        text = pc.binary_join_element_wise("[", pc.binary_join(lists, ", "), "]", "")
        return pc.if_else(array.is_null(), pa.nulls(len(array), pa.string()), text)
    return _json_values_python(pa, array)


def _json_values_python(pa: Any, array: Any) -> Any:
    """The general path: structs, maps and what Arrow cannot cast, through ``json.dumps``."""

    def default(value: object) -> object:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return str(value)

    out: list[str | None] = []
    for row, value in enumerate(array.to_pylist()):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(json.dumps(value, allow_nan=False, default=default, ensure_ascii=False))
        except ValueError:
            raise _NotJson(row) from None
    return pa.array(out, type=pa.string())


def _quoted(pa: Any, strings: Any) -> Any:
    pc = pa.compute
    if pc.any(pc.match_substring_regex(strings, _NEEDS_ESCAPE)).as_py():
        strings = pc.replace_substring(strings, "\\", "\\\\")
        strings = pc.replace_substring(strings, '"', '\\"')
        for char, escape in (("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")):
            strings = pc.replace_substring(strings, char, escape)
        if pc.any(pc.match_substring_regex(strings, "[\\x00-\\x1f]")).as_py():
            return pa.array(
                [None if s is None else json.dumps(s, ensure_ascii=False) for s in strings.to_pylist()],
                type=pa.string(),
            )
    return pc.binary_join_element_wise('"', strings, '"', "")
