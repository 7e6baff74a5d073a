//! The columns an Avro reader schema gives: scalars and lists of numbers (`ColumnBuilder`, as for
//! every format), nested records as Arrow structs, arrays of records as lists of structs; and how
//! a resolved Avro value is appended to them (the general path; `read_plan` is the compiled one).

use crate::format::columns::{ColumnBuilder, ColumnSpec, Num, ScalarType, Shape};
use apache_avro::schema::NamesRef;
use apache_avro::types::Value;
use apache_avro::Schema;
use arrow_array::{ArrayRef, ListArray, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields};
use std::sync::Arc;

/// Resolves a reference to a named type (`"type": "ml.Kind"`) through `names`; other schemas
/// are returned as they are. Unions and arrays have their branches and items resolved.
pub(super) fn resolve_refs(name: &str, schema: &Schema, names: &NamesRef<'_>) -> Result<Schema, String> {
    let resolve = |s: &'_ Schema| -> Result<Schema, String> {
        match s {
            Schema::Ref { name: type_name } => names
                .get(type_name)
                .map(|&s| s.clone())
                .ok_or_else(|| format!("field '{name}': unknown Avro type '{}'", type_name.fullname(None))),
            s => Ok(s.clone()),
        }
    };
    Ok(match schema {
        Schema::Union(u) => Schema::Union(
            apache_avro::schema::UnionSchema::new(
                u.variants().iter().map(resolve).collect::<Result<Vec<_>, _>>()?,
            )
            .map_err(|e| format!("field '{name}': {e}"))?,
        ),
        Schema::Array(a) => Schema::array(resolve(&a.items)?),
        s => resolve(s)?,
    })
}

/// `T` of a `["null", T]` union and `true`, or the schema itself and `false`.
fn nullable_inner<'s>(name: &str, schema: &'s Schema) -> Result<(&'s Schema, bool), String> {
    match schema {
        Schema::Union(u) => {
            let non_null: Vec<&Schema> = u
                .variants()
                .iter()
                .filter(|s| !matches!(s, Schema::Null))
                .collect();
            match non_null.as_slice() {
                [one] if u.variants().len() == 2 => Ok((*one, true)),
                _ => Err(format!("field '{name}': only [\"null\", T] unions are supported")),
            }
        }
        s => Ok((s, false)),
    }
}

/// Avro types read as 32-bit integers: `int` and its logical types. (The column mapping below
/// and the compiled read plans use these three, so the two paths agree on every type.)
pub(super) fn is_int(s: &Schema) -> bool {
    matches!(s, Schema::Int | Schema::Date | Schema::TimeMillis)
}

/// Avro types read as 64-bit integers: `long` and its logical types.
pub(super) fn is_long(s: &Schema) -> bool {
    matches!(
        s,
        Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos
    )
}

/// Avro types read as text: `string` and `uuid` (enums too, by symbol, but not in a plan).
pub(super) fn is_string(s: &Schema) -> bool {
    matches!(s, Schema::String | Schema::Uuid)
}

/// Maps an Avro field schema to a column type; `["null", T]` unions make nullable columns. A
/// reference to a named type (`"type": "ml.Kind"`) is looked up in `names`.
pub(super) fn column_for(name: &str, schema: &Schema, names: &NamesRef<'_>) -> Result<ColumnSpec, String> {
    let schema = &resolve_refs(name, schema, names)?;
    let (schema, nullable) = nullable_inner(name, schema)?;
    let scalar = |s: &Schema| -> Option<ScalarType> {
        Some(match s {
            Schema::Boolean => ScalarType::Bool,
            s if is_int(s) => ScalarType::Int32,
            s if is_long(s) => ScalarType::Int64,
            Schema::Float => ScalarType::Float32,
            Schema::Double => ScalarType::Float64,
            s if is_string(s) || matches!(s, Schema::Enum(_)) => ScalarType::Utf8,
            Schema::Bytes | Schema::Fixed(_) => ScalarType::Binary,
            _ => return None,
        })
    };
    let (ty, shape) = match schema {
        Schema::Array(a) => match scalar(&a.items) {
            Some(t) if t.byte_width().is_some() => (t, Shape::Variable),
            _ => {
                return Err(format!(
                    "field '{name}': only arrays of numbers and of records are supported"
                ))
            }
        },
        s => (
            scalar(s).ok_or_else(|| {
                let what = format!("{:?}", apache_avro::schema::SchemaKind::from(s)).to_lowercase();
                format!(
                    "field '{name}': an Avro {what} is not supported as a column (scalars, enums, \
                     fixed, strings, bytes, records and arrays of numbers or records are)"
                )
            })?,
            Shape::Scalar,
        ),
    };
    Ok(ColumnSpec {
        name: name.to_string(),
        ty,
        shape,
        nullable,
    })
}

/// One reader column: a scalar or a list of numbers (`ColumnBuilder`, as for every format), a
/// nested record (an Arrow struct), or an array of records (an Arrow list of structs).
#[derive(Debug)]
pub(super) enum Col {
    Leaf(ColumnBuilder),
    Struct(StructCol),
    List(ListCol),
}

#[derive(Debug)]
pub(super) struct StructCol {
    name: String,
    nullable: bool,
    /// Per-row validity (nullable structs only).
    validity: Vec<bool>,
    pub(super) children: Vec<Col>,
    rows: usize,
}

/// An array of records: the items are a struct column, never null.
#[derive(Debug)]
pub(super) struct ListCol {
    name: String,
    nullable: bool,
    validity: Vec<bool>,
    offsets: Vec<i32>,
    pub(super) item: Box<Col>,
}

fn offset_i32(len: usize) -> Result<i32, String> {
    i32::try_from(len).map_err(|_| "batch exceeds 2 GiB in one column; lower batch_size".to_string())
}

/// The column of reader field `name` of type `schema`. `seen` holds the records being expanded
/// (a record that contains itself has no column type).
pub(super) fn col_for(
    name: &str,
    schema: &Schema,
    names: &NamesRef<'_>,
    seen: &mut Vec<String>,
) -> Result<Col, String> {
    let resolved = resolve_refs(name, schema, names)?;
    let (inner, nullable) = nullable_inner(name, &resolved)?;
    let record =
        |r: &apache_avro::schema::RecordSchema, seen: &mut Vec<String>| -> Result<StructCol, String> {
            let full = r.name.fullname(None);
            if seen.contains(&full) {
                return Err(format!(
                    "field '{name}': record '{full}' contains itself (recursive records have no column type)"
                ));
            }
            seen.push(full);
            let children = r
                .fields
                .iter()
                .map(|f| {
                    col_for(&f.name, &f.schema, names, seen).map_err(|e| match e.strip_prefix("field '") {
                        Some(rest) => format!("field '{name}.{rest}"),
                        None => e,
                    })
                })
                .collect::<Result<Vec<_>, _>>();
            seen.pop();
            Ok(StructCol {
                name: name.to_string(),
                nullable,
                validity: Vec::new(),
                children: children?,
                rows: 0,
            })
        };
    Ok(match inner {
        Schema::Record(r) => Col::Struct(record(r, seen)?),
        Schema::Array(a) => match a.items.as_ref() {
            Schema::Record(r) => {
                let mut item = record(r, seen)?;
                item.name = "item".into();
                item.nullable = false;
                Col::List(ListCol {
                    name: name.to_string(),
                    nullable,
                    validity: Vec::new(),
                    offsets: vec![0],
                    item: Box::new(Col::Struct(item)),
                })
            }
            _ => Col::Leaf(ColumnBuilder::new(column_for(name, schema, names)?)),
        },
        _ => Col::Leaf(ColumnBuilder::new(column_for(name, schema, names)?)),
    })
}

impl Col {
    pub(super) fn name(&self) -> &str {
        match self {
            Col::Leaf(c) => &c.spec.name,
            Col::Struct(s) => &s.name,
            Col::List(l) => &l.name,
        }
    }

    pub(super) fn field(&self) -> Field {
        match self {
            Col::Leaf(c) => c.spec.field(),
            Col::Struct(s) => Field::new(&s.name, DataType::Struct(s.fields()), s.nullable),
            Col::List(l) => Field::new(&l.name, DataType::List(Arc::new(l.item.field())), l.nullable),
        }
    }

    pub(super) fn rows(&self) -> usize {
        match self {
            Col::Leaf(c) => c.rows(),
            Col::Struct(s) => s.rows,
            Col::List(l) => l.offsets.len() - 1,
        }
    }

    /// The leaf builder of a scalar or number-list column.
    pub(super) fn leaf(&mut self) -> Option<&mut ColumnBuilder> {
        match self {
            Col::Leaf(c) => Some(c),
            _ => None,
        }
    }

    /// Appends a null row, or fails if the column is not nullable.
    pub(super) fn push_null(&mut self) -> Result<(), String> {
        match self {
            Col::Leaf(c) => c.push_null(),
            Col::Struct(s) => {
                if !s.nullable {
                    return Err(format!("field '{}' is null or missing but not nullable", s.name));
                }
                for c in &mut s.children {
                    c.push_placeholder()?;
                }
                s.validity.push(false);
                s.rows += 1;
                Ok(())
            }
            Col::List(l) => {
                if !l.nullable {
                    return Err(format!("field '{}' is null or missing but not nullable", l.name));
                }
                l.offsets.push(*l.offsets.last().expect("offsets start at 0"));
                l.validity.push(false);
                Ok(())
            }
        }
    }

    /// The row under a null struct: null where the column is nullable, else a zero value.
    fn push_placeholder(&mut self) -> Result<(), String> {
        let nullable = match self {
            Col::Leaf(c) => c.spec.nullable,
            Col::Struct(s) => s.nullable,
            Col::List(l) => l.nullable,
        };
        if nullable {
            return self.push_null();
        }
        match self {
            Col::Leaf(c) => {
                let ty = c.spec.ty;
                if c.spec.shape == Shape::Scalar {
                    match ty {
                        ScalarType::Bool => c.values.push_bool(false, ty)?,
                        ScalarType::Utf8 => c.values.push_str("", ty)?,
                        ScalarType::Binary => c.values.push_bytes(b"", ty)?,
                        _ => c.values.push_num(Num::I(0), ty)?,
                    }
                }
                c.end_row()
            }
            Col::Struct(s) => {
                for c in &mut s.children {
                    c.push_placeholder()?;
                }
                s.end_row();
                Ok(())
            }
            Col::List(l) => {
                l.offsets.push(*l.offsets.last().expect("offsets start at 0"));
                Ok(())
            }
        }
    }

    /// Drops everything after the first `rows` rows (undo of a half-decoded message).
    pub(super) fn truncate(&mut self, rows: usize) {
        match self {
            Col::Leaf(c) => c.truncate(rows),
            Col::Struct(s) => {
                s.rows = s.rows.min(rows);
                if s.nullable {
                    s.validity.truncate(s.rows);
                }
                // Children may hold part of a row the struct never ended.
                let rows = s.rows;
                for c in &mut s.children {
                    c.truncate(rows);
                }
            }
            Col::List(l) => {
                l.offsets.truncate(rows + 1);
                if l.nullable {
                    l.validity.truncate(l.offsets.len() - 1);
                }
                let items = *l.offsets.last().expect("offsets start at 0") as usize;
                l.item.truncate(items);
            }
        }
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        fn nulls(nullable: bool, validity: &mut Vec<bool>) -> Option<NullBuffer> {
            let validity = std::mem::take(validity);
            nullable
                .then(|| NullBuffer::from(validity))
                .filter(|n| n.null_count() > 0)
        }
        match self {
            Col::Leaf(c) => c.finish(),
            Col::Struct(s) => {
                let rows = std::mem::take(&mut s.rows);
                let nulls = nulls(s.nullable, &mut s.validity);
                if s.children.is_empty() {
                    return Arc::new(StructArray::new_empty_fields(rows, nulls));
                }
                let fields = s.fields();
                let arrays = s.children.iter_mut().map(Col::finish).collect();
                Arc::new(StructArray::new(fields, arrays, nulls))
            }
            Col::List(l) => {
                let nulls = nulls(l.nullable, &mut l.validity);
                let item = Arc::new(l.item.field());
                let offsets = std::mem::replace(&mut l.offsets, vec![0]);
                let values = l.item.finish();
                Arc::new(ListArray::new(
                    item,
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    values,
                    nulls,
                ))
            }
        }
    }
}

impl StructCol {
    fn fields(&self) -> Fields {
        self.children.iter().map(Col::field).collect()
    }

    /// Marks the end of a non-null row whose children were all appended.
    pub(super) fn end_row(&mut self) {
        if self.nullable {
            self.validity.push(true);
        }
        self.rows += 1;
    }
}

impl ListCol {
    /// Marks the end of a non-null row whose items were appended.
    pub(super) fn end_row(&mut self) -> Result<(), String> {
        let items = offset_i32(self.item.rows())?;
        self.offsets.push(items);
        if self.nullable {
            self.validity.push(true);
        }
        Ok(())
    }
}

fn push_scalar(col: &mut ColumnBuilder, v: &Value) -> Result<(), String> {
    let ty = col.spec.ty;
    match v {
        Value::Boolean(b) => col.values.push_bool(*b, ty),
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => {
            col.values.push_num(Num::I(i64::from(*i)), ty)
        }
        Value::Long(i)
        | Value::TimeMicros(i)
        | Value::TimestampMillis(i)
        | Value::TimestampMicros(i)
        | Value::TimestampNanos(i)
        | Value::LocalTimestampMillis(i)
        | Value::LocalTimestampMicros(i)
        | Value::LocalTimestampNanos(i) => col.values.push_num(Num::I(*i), ty),
        Value::Float(f) => col.values.push_num(Num::F(f64::from(*f)), ty),
        Value::Double(f) => col.values.push_num(Num::F(*f), ty),
        Value::String(s) | Value::Enum(_, s) => col.values.push_str(s, ty),
        Value::Uuid(u) => col.values.push_str(&u.to_string(), ty),
        Value::Bytes(b) | Value::Fixed(_, b) => col.values.push_bytes(b, ty),
        other => Err(format!("unsupported Avro value {other:?}")),
    }
}

fn append(col: &mut ColumnBuilder, v: &Value) -> Result<(), String> {
    let v = match v {
        Value::Union(_, inner) => inner.as_ref(),
        v => v,
    };
    match (v, col.spec.shape) {
        (Value::Null, _) => col.push_null(),
        (Value::Array(items), Shape::Variable) => {
            for item in items {
                push_scalar(col, item)?;
            }
            col.end_row()
        }
        (v, _) => {
            push_scalar(col, v)?;
            col.end_row()
        }
    }
}

/// Appends a resolved value to a column of any kind. An error is the path below the column
/// (`.meta.ts`, empty at the column itself) and what is wrong.
pub(super) fn append_value(col: &mut Col, v: &Value) -> Result<(), (String, String)> {
    let v = match v {
        Value::Union(_, inner) => inner.as_ref(),
        v => v,
    };
    let here = |e: String| (String::new(), e);
    match (col, v) {
        (Col::Leaf(c), v) => append(c, v).map_err(here),
        (col, Value::Null) => col.push_null().map_err(here),
        (Col::Struct(s), Value::Record(fields)) => {
            if fields.len() != s.children.len() {
                return Err(here(format!(
                    "a record of {} fields for {} columns",
                    fields.len(),
                    s.children.len()
                )));
            }
            for (child, (_, v)) in s.children.iter_mut().zip(fields) {
                append_value(child, v).map_err(|(path, e)| (format!(".{}{path}", child.name()), e))?;
            }
            s.end_row();
            Ok(())
        }
        (Col::List(l), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                append_value(&mut l.item, item).map_err(|(path, e)| (format!("[{i}]{path}"), e))?;
            }
            l.end_row().map_err(here)
        }
        (_, other) => Err(here(format!("unsupported Avro value {other:?}"))),
    }
}
