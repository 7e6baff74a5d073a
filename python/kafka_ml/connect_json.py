"""``format="connect_json"``: rows in Kafka Connect's JSON envelope, for sink connectors.

Sink connectors that write typed columns (Debezium's JDBC sink, Confluent's JDBC sink, ...) need
each record's schema. Kafka Connect's ``JsonConverter`` with ``schemas.enable=true`` (its
default) reads it from the message itself::

    {"schema": {"type": "struct", "fields": [{"type": "int64", "optional": false, "field": "id"},
                                            {"type": "double", "optional": false, "field": "price"}],
                "optional": false},
     "payload": {"id": 7, "price": 312000.5}}

``Producer.send(..., format="connect_json", schema=...)`` (and ``InferenceLoop(...,
output_format="connect_json", output_schema=...)``) writes every row this way: the Connect schema
comes from the declared columns, and the rows are checked and cast to them as for ``json``. The
columns are cast in Arrow and the JSON is written in Rust like ``json``'s (the envelope is two
struct columns, the schema repeated): no Python object is made per row.

Declared types map to Connect's:

==========================================  =================================
declared                                    Connect schema
==========================================  =================================
``bool``                                    ``boolean``
``int8``, ``int16``, ``int32``, ``int64``   the same
``uint8``, ``uint16``, ``uint32``           ``int16``, ``int32``, ``int64``
``uint64``                                  ``int64`` (values above 2^63 - 1 are refused)
``float32``, ``float64``                    ``float``, ``double``
``string``                                  ``string``
``("float32", 16)``, ``"int64[]"``          ``array`` of the element type
a ``?`` suffix (nullable)                   ``"optional": true``
==========================================  =================================

``binary`` is refused: Connect's JSON carries ``bytes`` as base64 text, which the JSON writer
does not produce.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dataset import ColumnType, _column_decl
from .exceptions import ConfigError, EncodeError

__all__ = ["connect_schema"]

_ALIASES = {"int": "int64", "float": "float64", "str": "string", "utf8": "string", "bytes": "binary"}

#: Declared type -> (Connect type, NumPy dtype of the values written).
_TYPES: dict[str, tuple[str, str]] = {
    "bool": ("boolean", "bool"),
    "int8": ("int8", "int8"),
    "int16": ("int16", "int16"),
    "int32": ("int32", "int32"),
    "int64": ("int64", "int64"),
    "uint8": ("int16", "int16"),
    "uint16": ("int32", "int32"),
    "uint32": ("int64", "int64"),
    "uint64": ("int64", "int64"),
    "float32": ("float", "float32"),
    "float64": ("double", "float64"),
    "string": ("string", "str"),
}

_DECL = re.compile(r"^([a-z0-9]+)(?:\[([1-9]\d*)?\])?$")  # "float32", "float32[16]", "float64[]"


@dataclass(frozen=True)
class _Column:
    name: str
    type: str  # the declared scalar type, aliases resolved
    width: int | None  # None: a scalar; 0: a variable-length list; n: n elements per row
    nullable: bool

    @property
    def connect_type(self) -> str:
        return _TYPES[self.type][0]

    def schema(self) -> dict[str, Any]:
        if self.width is None:
            return {"type": self.connect_type, "optional": self.nullable, "field": self.name}
        return {
            "type": "array",
            "items": {"type": self.connect_type, "optional": False},
            "optional": self.nullable,
            "field": self.name,
        }


def _columns(schema: Mapping[str, ColumnType]) -> list[_Column]:
    if not schema:
        raise ConfigError(
            "format='connect_json' needs a schema: the declared columns become the Connect schema"
        )
    out = []
    for name, decl in schema.items():
        text = _column_decl(name, decl).strip()
        nullable = text.endswith("?")
        match = _DECL.match(text.rstrip("?").strip())
        if match is None:
            raise ConfigError(
                f"column '{name}': cannot parse type '{text}' (expected e.g. 'float32', 'int64?')"
            )
        ty = _ALIASES.get(match.group(1), match.group(1))
        if ty == "binary":
            raise ConfigError(
                f"column '{name}': format='connect_json' cannot write binary columns "
                "(Connect's JSON holds bytes as base64 text)"
            )
        if ty not in _TYPES:
            raise ConfigError(f"column '{name}': unknown type '{match.group(1)}'")
        width = None if "[" not in text else int(match.group(2) or 0)
        if width is not None and ty == "string":
            raise ConfigError(f"column '{name}': lists of strings are not supported")
        out.append(_Column(str(name), ty, width, nullable))
    return out


def connect_schema(schema: Mapping[str, ColumnType], name: str | None = None) -> dict[str, Any]:
    """The Kafka Connect schema (as ``JsonConverter`` embeds it) of rows with these declared
    columns: a non-optional ``struct`` with one field per column, in order. ``name`` names the
    struct (Connect's optional schema name)."""
    out: dict[str, Any] = {
        "type": "struct",
        "fields": [c.schema() for c in _columns(schema)],
        "optional": False,
    }
    if name is not None:
        out["name"] = name
    return out


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def _check_values(column: _Column, values: Any, row_of: Any) -> Any:
    """Casts the column's (element) values to the declared type: integers only from whole
    numbers and within the declared type's range, floats finite (JSON has no NaN or infinity).
    ``row_of`` maps an index into ``values`` to the row it belongs to."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def fail(i: int, what: str) -> EncodeError:
        return EncodeError(f"column '{column.name}' row {row_of(i)}: {what}")

    kind = values.type
    if column.type == "string":
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_number(kind):
            return pc.cast(values, pa.string())
        raise EncodeError(f"column '{column.name}' holds {kind}, declared string")
    if column.type == "bool":
        if not pa.types.is_boolean(kind):
            raise EncodeError(f"column '{column.name}' holds {kind}, declared bool")
        return values
    if not _is_number(kind):
        raise EncodeError(f"column '{column.name}' holds {kind}, declared {column.type}")
    # The checks look at the present values; `index` maps back to positions in `values`.
    valid = np.flatnonzero(np.asarray(values.is_valid())) if values.null_count else None
    data = (values.drop_null() if valid is not None else values).to_numpy(zero_copy_only=False)

    def index(i: int) -> int:
        return int(valid[i]) if valid is not None else i

    declared = np.dtype(column.type)
    if data.dtype.kind == "f":
        bad = _first(~np.isfinite(data))
        if bad is not None:
            if declared.kind == "f":
                raise fail(index(bad), "NaN or infinity has no JSON representation")
            raise fail(index(bad), f"{data[bad]} cannot be stored as an integer")
        if declared.kind in "iu":
            bad = _first(data != np.trunc(data))
            if bad is not None:
                raise fail(index(bad), f"{data[bad]} is not an integer")
    if declared.kind in "iu":
        info = np.iinfo(declared)
        lo, hi = int(info.min), min(int(info.max), int(np.iinfo(np.int64).max))  # Connect's int64 at most
        if data.dtype.kind == "f":
            out = (data < lo) | (data >= float(hi) + 1.0) if hi >= 2**53 else (data < lo) | (data > hi)
        elif data.dtype.kind == "u":
            out = data > np.uint64(hi)
        else:
            wide = data.astype(np.int64)
            out = (wide < np.int64(lo)) | (wide > np.int64(hi))
        bad = _first(out)
        if bad is not None:
            raise fail(index(bad), f"{data[bad]} is out of range for {column.type}")
    elif declared == np.float32 and data.dtype != np.float32:
        with np.errstate(over="ignore"):
            bad = _first(~np.isfinite(data.astype(np.float32)))
        if bad is not None:
            raise fail(index(bad), f"{data[bad]} is out of range for float32")
    if pa.types.is_boolean(kind):
        values = pc.cast(values, pa.int8())
    return pc.cast(values, pa.from_numpy_dtype(np.dtype(_TYPES[column.type][1])), safe=False)


def _is_number(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))


def _conform(column: _Column, array: Any) -> Any:
    """One input column checked and cast to its declaration (an Arrow array)."""
    import pyarrow as pa

    if array.null_count and not column.nullable:
        row = _first(np.asarray(array.is_null()))
        raise EncodeError(f"column '{column.name}' row {row}: null in a column that is not nullable")
    is_list = (
        pa.types.is_list(array.type)
        or pa.types.is_large_list(array.type)
        or pa.types.is_fixed_size_list(array.type)
    )
    if column.width is None:
        if is_list:
            raise EncodeError(f"column '{column.name}' holds lists but is declared a scalar {column.type}")
        return _check_values(column, array, lambda i: i)
    if not is_list:
        raise EncodeError(f"column '{column.name}' is declared a list but holds {array.type}")
    if pa.types.is_fixed_size_list(array.type):
        width = array.type.list_size
        if column.width and width != column.width:
            raise EncodeError(f"column '{column.name}' has {width} elements per row, declared {column.width}")
        lengths = np.full(len(array), width, dtype=np.int64)
    else:
        import pyarrow.compute as pc

        lengths = pc.list_value_length(array).fill_null(0).to_numpy(zero_copy_only=False)
        if column.width:
            row = _first(np.asarray(array.is_valid()) & (lengths != column.width))
            if row is not None:
                raise EncodeError(
                    f"column '{column.name}' row {row}: {lengths[row]} elements, "
                    f"declared {column.width} (ragged rows)"
                )
    lengths = np.where(np.asarray(array.is_valid()), lengths, 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = array.flatten()  # the elements of the valid rows, in order

    def row_of(i: int) -> int:  # the row of the i-th element
        return int(np.searchsorted(offsets, i, side="right")) - 1

    if flat.null_count:
        raise EncodeError(
            f"column '{column.name}' row {row_of(int(np.flatnonzero(np.asarray(flat.is_null()))[0]))}: "
            "null element in a list"
        )
    values = _check_values(column, flat, row_of)
    mask = pa.array(~np.asarray(array.is_valid())) if array.null_count else None
    return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)


def envelope_table(data: Any, schema: Mapping[str, ColumnType], name: str | None = None) -> Any:
    """The rows of ``data`` (anything ``pyarrow.table`` takes) as a table of two struct columns,
    ``schema`` (the Connect schema, the same in every row) and ``payload`` (the row, checked
    and cast to the declared columns), which the JSON writer turns into Connect's envelope."""
    import pyarrow as pa

    columns = _columns(schema)
    table = pa.table(data)
    arrays, fields = [], []
    for column in columns:
        if column.name not in table.column_names:
            raise EncodeError(
                f"column '{column.name}' is declared but missing (columns: {table.column_names})"
            )
        array = _conform(column, table.column(column.name).combine_chunks())
        arrays.append(array)
        fields.append(pa.field(column.name, array.type, nullable=column.nullable))
    n = table.num_rows
    payload = pa.StructArray.from_arrays(arrays, fields=fields) if arrays else pa.nulls(n, pa.struct([]))
    # One row of the schema, repeated: every field has an `items` entry (null, so not written,
    # for scalars), so that all fields share one Arrow struct type.
    struct = connect_schema(schema, name)
    keys = ("type", "items", "optional", "field")
    struct["fields"] = [{k: f.get(k) for k in keys} for f in struct["fields"]]
    one = pa.array([struct])
    repeated = one.take(pa.array(np.zeros(n, dtype=np.int64)))
    return pa.table({"schema": repeated, "payload": payload})
