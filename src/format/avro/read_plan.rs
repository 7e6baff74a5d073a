//! Avro datums decoded straight into columns, by a plan compiled once per writer schema.
//!
//! The general path (`apache_avro::from_avro_datum` with schema resolution) builds a `Value`
//! tree per message and is several times slower than reading the bytes. A plan resolves the
//! writer schema against the reader schema once — which writer field feeds which column, with
//! which promotion; which writer fields are skipped; which reader fields take their default —
//! and then each datum is one pass over its bytes. Float and double arrays are copied as they
//! lie (Avro writes them little-endian, as Arrow holds them).
//!
//! Plans cover records of primitives, logical types over them, enums, `["null", T]` unions,
//! arrays of numbers, and records and arrays of records nested in them (struct and list-of-struct
//! columns, each read by a plan of its own) — the columns the reader can have (see
//! `reader_columns::col_for`).
//! Writer fields that are only skipped may be of any type except a reference to a named type.
//! Anything else (`compile` returns `None`: also a reader record written as a reference to a named
//! type, or a missing nested record that takes its default) keeps the general path, which gives
//! the same rows and errors.

use super::reader_columns::{is_int, is_long, is_string, Col};
use crate::format::columns::{ColumnBuilder, Num, ScalarType, Shape, Values};
use apache_avro::schema::{RecordField, RecordSchema, Schema};
use std::sync::Arc;

/// The compiled resolution of one writer schema against the reader's columns.
#[derive(Debug)]
pub(super) struct Plan {
    steps: Vec<Step>,
    /// Reader fields the writer does not have: their columns take the default.
    defaults: Vec<(usize, DefaultValue)>,
}

#[derive(Debug)]
enum Step {
    Read { column: usize, kind: Kind },
    Skip(Skip),
}

/// How one writer value becomes a column's row.
#[derive(Debug, Clone)]
enum Kind {
    Null,
    Bool,
    Int,
    Long,
    Float,
    Double,
    /// Avro string (written as UTF-8 bytes).
    Str,
    Bytes,
    Fixed(usize),
    /// Writer symbol index → the reader's symbol (`None`: unknown to the reader, no default).
    Enum(Arc<[Option<String>]>),
    Array(Item),
    /// A nested record into a struct column's children.
    Record(Arc<Plan>),
    /// An array of records into a list-of-struct column.
    Records(Arc<Plan>),
    /// A writer union of null and one type; `null_index` is the null branch.
    Nullable {
        null_index: i64,
        inner: Box<Kind>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Int,
    Long,
    Float,
    Double,
}

/// How to step over a writer value no column wants.
#[derive(Debug)]
enum Skip {
    Nothing,
    Bool,
    Varint,
    Fixed(usize),
    /// Length-prefixed: bytes and strings.
    Sized,
    Array(Box<Skip>),
    Map(Box<Skip>),
    Union(Vec<Skip>),
    Record(Vec<Skip>),
}

#[derive(Debug)]
enum DefaultValue {
    Null,
    Bool(bool),
    Num(Num),
    Str(String),
    Bytes(Vec<u8>),
    Nums(Vec<Num>),
}

impl Plan {
    /// Resolves `writer` against `reader` (both records) for `columns` (one per reader field, in
    /// order), or `None` where the general path must decode.
    pub(super) fn compile(writer: &Schema, reader: &Schema, columns: &[Col]) -> Option<Plan> {
        let (Schema::Record(w), Schema::Record(r)) = (writer, reader) else {
            return None;
        };
        Plan::compile_record(w, r, columns)
    }

    fn compile_record(w: &RecordSchema, r: &RecordSchema, columns: &[Col]) -> Option<Plan> {
        if columns.len() != r.fields.len() {
            return None;
        }
        let mut used = vec![false; r.fields.len()];
        let mut steps = Vec::with_capacity(w.fields.len());
        for wf in &w.fields {
            match reader_field(&r.fields, &wf.name) {
                Some(i) => {
                    used[i] = true;
                    let kind = compile_col(&wf.schema, &r.fields[i].schema, &columns[i])?;
                    steps.push(Step::Read { column: i, kind });
                }
                None => steps.push(Step::Skip(compile_skip(&wf.schema)?)),
            }
        }
        let mut defaults = Vec::new();
        for (i, rf) in r.fields.iter().enumerate() {
            if !used[i] {
                let Col::Leaf(col) = &columns[i] else {
                    return None; // a nested record's default: the general path
                };
                defaults.push((i, compile_default(rf, col)?));
            }
        }
        Some(Plan { steps, defaults })
    }

    /// Decodes one datum into `columns`, which must be consumed whole. On an error the columns
    /// may hold part of the row: the caller truncates them.
    pub(super) fn decode(&self, body: &[u8], columns: &mut [Col]) -> Result<(), String> {
        let mut cur = Cursor { buf: body, pos: 0 };
        self.read_fields(&mut cur, columns)?;
        if cur.pos != body.len() {
            return Err(format!(
                "invalid Avro: {} bytes left after the record",
                body.len() - cur.pos
            ));
        }
        Ok(())
    }

    /// Reads one record's fields into `columns` (a struct's children, or the top level's).
    fn read_fields(&self, cur: &mut Cursor<'_>, columns: &mut [Col]) -> Result<(), String> {
        for step in &self.steps {
            match step {
                Step::Read { column, kind } => {
                    let col = &mut columns[*column];
                    read_col(cur, kind, col).map_err(|e| match (&*col, e.strip_prefix("field '")) {
                        // A nested column's own fields name their path below it.
                        (Col::Struct(_) | Col::List(_), Some(rest)) => {
                            format!("field '{}.{rest}", col.name())
                        }
                        _ => format!("field '{}': {e}", col.name()),
                    })?;
                }
                Step::Skip(skip) => skip_value(cur, skip)?,
            }
        }
        for (column, value) in &self.defaults {
            let col = columns[*column]
                .leaf()
                .expect("defaults are compiled for leaf columns");
            push_default(col, value).map_err(|e| format!("field '{}': {e}", col.spec.name))?;
        }
        Ok(())
    }
}

/// The reader field a writer field feeds: same name, or a reader alias.
fn reader_field(fields: &[RecordField], name: &str) -> Option<usize> {
    fields.iter().position(|f| f.name == name).or_else(|| {
        fields
            .iter()
            .position(|f| f.aliases.as_ref().is_some_and(|a| a.iter().any(|x| x == name)))
    })
}

/// `T` of a reader `["null", T]` union (the column is then nullable), or the schema itself.
fn non_null(schema: &Schema) -> Option<&Schema> {
    match schema {
        Schema::Union(u) => {
            let v = u.variants();
            match v {
                [Schema::Null, t] | [t, Schema::Null] => Some(t),
                _ => None,
            }
        }
        s => Some(s),
    }
}

/// The read of writer type `w` into a column (of any kind) of reader type `r`.
fn compile_col(w: &Schema, r: &Schema, col: &Col) -> Option<Kind> {
    if let Col::Leaf(leaf) = col {
        return compile_kind(w, r, leaf);
    }
    if let Schema::Union(u) = w {
        return match u.variants() {
            [Schema::Null, t] => Some(Kind::Nullable {
                null_index: 0,
                inner: Box::new(compile_col(t, r, col)?),
            }),
            [t, Schema::Null] => Some(Kind::Nullable {
                null_index: 1,
                inner: Box::new(compile_col(t, r, col)?),
            }),
            _ => None,
        };
    }
    let r = non_null(r)?;
    Some(match (w, r, col) {
        (Schema::Record(wr), Schema::Record(rr), Col::Struct(s)) => {
            Kind::Record(Arc::new(Plan::compile_record(wr, rr, &s.children)?))
        }
        (Schema::Array(wa), Schema::Array(ra), Col::List(l)) => {
            let (Schema::Record(wr), Schema::Record(rr), Col::Struct(s)) =
                (wa.items.as_ref(), ra.items.as_ref(), l.item.as_ref())
            else {
                return None;
            };
            Kind::Records(Arc::new(Plan::compile_record(wr, rr, &s.children)?))
        }
        _ => return None,
    })
}

/// The read of writer type `w` into a column of reader type `r`, following Avro's resolution
/// rules (promotions int → long → float → double, string ↔ bytes, enum symbols by name).
fn compile_kind(w: &Schema, r: &Schema, col: &ColumnBuilder) -> Option<Kind> {
    if let Schema::Union(u) = w {
        return match u.variants() {
            [Schema::Null, t] => Some(Kind::Nullable {
                null_index: 0,
                inner: Box::new(compile_kind(t, r, col)?),
            }),
            [t, Schema::Null] => Some(Kind::Nullable {
                null_index: 1,
                inner: Box::new(compile_kind(t, r, col)?),
            }),
            _ => None,
        };
    }
    let r = non_null(r)?;
    let scalar = col.spec.shape == Shape::Scalar;
    Some(match w {
        Schema::Null => Kind::Null,
        Schema::Boolean if matches!(r, Schema::Boolean) && scalar => Kind::Bool,
        w if is_int(w)
            && (is_int(r) || is_long(r) || matches!(r, Schema::Float | Schema::Double))
            && scalar =>
        {
            Kind::Int
        }
        w if is_long(w) && (is_long(r) || matches!(r, Schema::Float | Schema::Double)) && scalar => {
            Kind::Long
        }
        Schema::Float if matches!(r, Schema::Float | Schema::Double) && scalar => Kind::Float,
        Schema::Double if matches!(r, Schema::Double) && scalar => Kind::Double,
        w if is_string(w) && (is_string(r) || matches!(r, Schema::Bytes)) && scalar => Kind::Str,
        Schema::Bytes if (is_string(r) || matches!(r, Schema::Bytes)) && scalar => Kind::Bytes,
        Schema::Fixed(wf) if matches!(r, Schema::Fixed(rf) if rf.size == wf.size) && scalar => {
            Kind::Fixed(wf.size)
        }
        Schema::Enum(we) if scalar => {
            let Schema::Enum(re) = r else { return None };
            let symbols = we
                .symbols
                .iter()
                .map(|s| {
                    if re.symbols.contains(s) {
                        Some(s.clone())
                    } else {
                        re.default.clone()
                    }
                })
                .collect::<Vec<_>>();
            Kind::Enum(symbols.into())
        }
        Schema::Array(wa) if col.spec.shape == Shape::Variable => {
            let Schema::Array(ra) = r else { return None };
            let (wi, ri) = (wa.items.as_ref(), ra.items.as_ref());
            let item = match wi {
                Schema::Int if matches!(ri, Schema::Int | Schema::Long | Schema::Float | Schema::Double) => {
                    Item::Int
                }
                Schema::Long if matches!(ri, Schema::Long | Schema::Float | Schema::Double) => Item::Long,
                Schema::Float if matches!(ri, Schema::Float | Schema::Double) => Item::Float,
                Schema::Double if matches!(ri, Schema::Double) => Item::Double,
                _ => return None,
            };
            Kind::Array(item)
        }
        _ => return None,
    })
}

fn compile_skip(w: &Schema) -> Option<Skip> {
    Some(match w {
        Schema::Null => Skip::Nothing,
        Schema::Boolean => Skip::Bool,
        s if is_int(s) || is_long(s) => Skip::Varint,
        Schema::Enum(_) => Skip::Varint,
        Schema::Float => Skip::Fixed(4),
        Schema::Double => Skip::Fixed(8),
        Schema::Fixed(f) => Skip::Fixed(f.size),
        Schema::Duration => Skip::Fixed(12),
        Schema::String | Schema::Uuid | Schema::Bytes => Skip::Sized,
        Schema::Array(a) => Skip::Array(Box::new(compile_skip(&a.items)?)),
        Schema::Map(m) => Skip::Map(Box::new(compile_skip(&m.types)?)),
        Schema::Union(u) => Skip::Union(u.variants().iter().map(compile_skip).collect::<Option<_>>()?),
        Schema::Record(r) => Skip::Record(
            r.fields
                .iter()
                .map(|f| compile_skip(&f.schema))
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

fn compile_default(field: &RecordField, col: &ColumnBuilder) -> Option<DefaultValue> {
    use serde_json::Value as J;
    let default = field.default.as_ref()?;
    // A union's default is of its first branch.
    let schema = match &field.schema {
        Schema::Union(u) => u.variants().first()?,
        s => s,
    };
    Some(match (schema, default) {
        (Schema::Null, J::Null) => DefaultValue::Null,
        (Schema::Boolean, J::Bool(b)) => DefaultValue::Bool(*b),
        (s, J::Number(n)) if is_int(s) || is_long(s) => DefaultValue::Num(Num::I(n.as_i64()?)),
        (Schema::Float | Schema::Double, J::Number(n)) => DefaultValue::Num(Num::F(n.as_f64()?)),
        (s, J::String(t)) if is_string(s) => DefaultValue::Str(t.clone()),
        (Schema::Enum(_), J::String(t)) => DefaultValue::Str(t.clone()),
        // Avro writes byte defaults as a string of code points 0-255.
        (Schema::Bytes | Schema::Fixed(_), J::String(t)) => DefaultValue::Bytes(
            t.chars()
                .map(|c| u8::try_from(u32::from(c)).ok())
                .collect::<Option<_>>()?,
        ),
        (Schema::Array(a), J::Array(items)) if col.spec.shape == Shape::Variable => {
            let integer = matches!(a.items.as_ref(), Schema::Int | Schema::Long);
            DefaultValue::Nums(
                items
                    .iter()
                    .map(|v| match v {
                        J::Number(n) if integer => n.as_i64().map(Num::I),
                        J::Number(n) => n.as_f64().map(Num::F),
                        _ => None,
                    })
                    .collect::<Option<_>>()?,
            )
        }
        _ => return None,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

const TRUNCATED: &str = "invalid Avro: the value ends early";

impl<'a> Cursor<'a> {
    #[inline]
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = *self.buf.get(self.pos).ok_or(TRUNCATED)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err("invalid Avro: a varint is longer than 10 bytes".into());
            }
        }
        Ok((value >> 1) as i64 ^ -((value & 1) as i64))
    }

    #[inline]
    fn int(&mut self) -> Result<i32, String> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| format!("invalid Avro: int {v} out of range"))
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(TRUNCATED)?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn sized(&mut self) -> Result<&'a [u8], String> {
        let len = self.long()?;
        let len = usize::try_from(len).map_err(|_| format!("invalid Avro: negative length {len}"))?;
        self.take(len)
    }

    /// The next block's item count of an array or map (0 ends it); skips a negative count's
    /// byte size.
    fn block(&mut self) -> Result<usize, String> {
        let count = self.long()?;
        if count < 0 {
            self.long()?;
        }
        usize::try_from(count.unsigned_abs()).map_err(|_| "invalid Avro: block too large".to_owned())
    }
}

/// Reads one writer value into a column of any kind.
fn read_col(cur: &mut Cursor<'_>, kind: &Kind, col: &mut Col) -> Result<(), String> {
    let col = match col {
        Col::Leaf(leaf) => return read(cur, kind, leaf),
        col => col,
    };
    match (kind, col) {
        (Kind::Nullable { null_index, inner }, col) => {
            let branch = cur.long()?;
            match branch {
                b if b == *null_index => col.push_null(),
                b if b == 1 - *null_index => read_col(cur, inner, col),
                b => Err(format!("invalid Avro: union branch {b} out of range")),
            }
        }
        (Kind::Record(plan), Col::Struct(s)) => {
            plan.read_fields(cur, &mut s.children)?;
            s.end_row();
            Ok(())
        }
        (Kind::Records(plan), Col::List(l)) => {
            let Col::Struct(item) = l.item.as_mut() else {
                unreachable!("arrays of records have struct items")
            };
            loop {
                let count = cur.block()?;
                if count == 0 {
                    break;
                }
                for _ in 0..count {
                    plan.read_fields(cur, &mut item.children)?;
                    item.end_row();
                }
            }
            l.end_row()
        }
        (kind, col) => unreachable!("{kind:?} compiled for column '{}'", col.name()),
    }
}

fn read(cur: &mut Cursor<'_>, kind: &Kind, col: &mut ColumnBuilder) -> Result<(), String> {
    let ty = col.spec.ty;
    match kind {
        Kind::Nullable { null_index, inner } => {
            let branch = cur.long()?;
            return match branch {
                b if b == *null_index => col.push_null(),
                b if b == 1 - *null_index => read(cur, inner, col),
                b => Err(format!("invalid Avro: union branch {b} out of range")),
            };
        }
        Kind::Null => return col.push_null(),
        Kind::Bool => {
            let b = cur.take(1)?[0];
            if b > 1 {
                return Err(format!("invalid Avro: boolean byte {b}"));
            }
            col.values.push_bool(b == 1, ty)?;
        }
        Kind::Int => col.values.push_num(Num::I(i64::from(cur.int()?)), ty)?,
        Kind::Long => col.values.push_num(Num::I(cur.long()?), ty)?,
        Kind::Float => {
            let v = f32::from_le_bytes(cur.take(4)?.try_into().expect("4 bytes"));
            col.values.push_num(Num::F(f64::from(v)), ty)?;
        }
        Kind::Double => {
            let v = f64::from_le_bytes(cur.take(8)?.try_into().expect("8 bytes"));
            col.values.push_num(Num::F(v), ty)?;
        }
        Kind::Str | Kind::Bytes => {
            let bytes = cur.sized()?;
            push_text_or_bytes(col, bytes, matches!(kind, Kind::Str))?;
        }
        Kind::Fixed(n) => {
            let bytes = cur.take(*n)?;
            col.values.push_bytes(bytes, ty)?;
        }
        Kind::Enum(symbols) => {
            let i = cur.int()?;
            let symbol = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| format!("invalid Avro: enum index {i} out of range"))?
                .as_deref()
                .ok_or_else(|| format!("enum symbol #{i} of the writer is unknown to the reader schema"))?;
            col.values.push_str(symbol, ty)?;
        }
        Kind::Record(_) | Kind::Records(_) => unreachable!("nested records are read by read_col"),
        Kind::Array(item) => loop {
            let count = cur.block()?;
            if count == 0 {
                break;
            }
            read_items(cur, *item, count, &mut col.values, ty)?;
        },
    }
    col.end_row()
}

fn push_text_or_bytes(col: &mut ColumnBuilder, bytes: &[u8], utf8_checked: bool) -> Result<(), String> {
    let ty = col.spec.ty;
    if ty == ScalarType::Utf8 {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            if utf8_checked {
                "invalid Avro: a string is not valid UTF-8".to_owned()
            } else {
                "bytes read as a string are not valid UTF-8".to_owned()
            }
        })?;
        col.values.push_str(text, ty)
    } else {
        col.values.push_bytes(bytes, ty)
    }
}

fn read_items(
    cur: &mut Cursor<'_>,
    item: Item,
    count: usize,
    values: &mut Values,
    ty: ScalarType,
) -> Result<(), String> {
    match (item, ty) {
        // Little-endian as Avro writes them and as the column stores them: one copy.
        (Item::Float, ScalarType::Float32) => {
            let bytes = cur.take(count.checked_mul(4).ok_or(TRUNCATED)?)?;
            values.extend_le_bytes(bytes);
        }
        (Item::Double, ScalarType::Float64) => {
            let bytes = cur.take(count.checked_mul(8).ok_or(TRUNCATED)?)?;
            values.extend_le_bytes(bytes);
        }
        (Item::Float, _) => {
            for chunk in cur.take(count.checked_mul(4).ok_or(TRUNCATED)?)?.chunks_exact(4) {
                let v = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
                values.push_num(Num::F(f64::from(v)), ty)?;
            }
        }
        (Item::Double, _) => {
            for chunk in cur.take(count.checked_mul(8).ok_or(TRUNCATED)?)?.chunks_exact(8) {
                let v = f64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                values.push_num(Num::F(v), ty)?;
            }
        }
        (Item::Int, _) => {
            for _ in 0..count {
                values.push_num(Num::I(i64::from(cur.int()?)), ty)?;
            }
        }
        (Item::Long, _) => {
            for _ in 0..count {
                values.push_num(Num::I(cur.long()?), ty)?;
            }
        }
    }
    Ok(())
}

fn skip_value(cur: &mut Cursor<'_>, skip: &Skip) -> Result<(), String> {
    match skip {
        Skip::Nothing => {}
        Skip::Bool => {
            cur.take(1)?;
        }
        Skip::Varint => {
            cur.long()?;
        }
        Skip::Fixed(n) => {
            cur.take(*n)?;
        }
        Skip::Sized => {
            cur.sized()?;
        }
        Skip::Array(items) | Skip::Map(items) => loop {
            let count = cur.block()?;
            if count == 0 {
                break;
            }
            for _ in 0..count {
                if matches!(skip, Skip::Map(_)) {
                    cur.sized()?; // the key
                }
                skip_value(cur, items)?;
            }
        },
        Skip::Union(branches) => {
            let b = cur.long()?;
            let branch = usize::try_from(b)
                .ok()
                .and_then(|b| branches.get(b))
                .ok_or_else(|| format!("invalid Avro: union branch {b} out of range"))?;
            skip_value(cur, branch)?;
        }
        Skip::Record(fields) => {
            for f in fields {
                skip_value(cur, f)?;
            }
        }
    }
    Ok(())
}

fn push_default(col: &mut ColumnBuilder, value: &DefaultValue) -> Result<(), String> {
    let ty = col.spec.ty;
    match value {
        DefaultValue::Null => return col.push_null(),
        DefaultValue::Bool(b) => col.values.push_bool(*b, ty)?,
        DefaultValue::Num(n) => col.values.push_num(*n, ty)?,
        DefaultValue::Str(s) => col.values.push_str(s, ty)?,
        DefaultValue::Bytes(b) => col.values.push_bytes(b, ty)?,
        DefaultValue::Nums(items) => {
            for n in items {
                col.values.push_num(*n, ty)?;
            }
        }
    }
    col.end_row()
}
