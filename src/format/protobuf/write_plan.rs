//! Arrow rows → Protobuf wire format by a plan compiled once per send, without a
//! `DynamicMessage` per row: each field bound to its column (cast once to the type its kind is
//! written from), then every row written field by field in field-number order, as prost-reflect
//! writes a `DynamicMessage` (a unit test checks the bytes are equal).
//!
//! Plans cover scalars, strings and bytes, enums (by name or number), `repeated` fields (packed
//! or not), nested messages from struct columns, `google.protobuf.Timestamp`, the wrappers and
//! maps. What a plan does not cover (groups, several columns on one `oneof`, floats bound for
//! integers, nulls inside lists, a column a cast cannot convert whole) returns `None` from
//! `compile`, and a row a plan cannot write (an unknown enum name, a null where the field has
//! no presence) fails `write`: either way the general path (`DynamicMessage`) encodes the send,
//! and names the column and row of what is wrong.
//!
//! Map entries are written in the column's order (one per entry), where prost-reflect writes
//! them in its hash map's order with duplicate keys merged; readers see the same map.

use crate::format::protobuf::wrapped;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int32Array, Int64Array, PrimitiveArray, StringArray,
    UInt32Array, UInt64Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, TimeUnit};
use prost::encoding::{encode_key, encode_varint, WireType};
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A row cannot be written by the plan (the general path says why).
#[derive(Debug)]
pub(super) struct Unplanned;

type Written = Result<(), Unplanned>;

/// The fields of one message, bound to the columns of a batch (or the children of a struct).
pub(super) struct MessagePlan {
    /// In field-number order: the order prost-reflect writes them.
    fields: Vec<FieldPlan>,
}

struct FieldPlan {
    number: u32,
    /// The column's nulls: a null leaves the field unset where it has presence (or is
    /// repeated), and cannot be written otherwise.
    nulls: Option<NullBuffer>,
    null_unset: bool,
    /// Fields with presence are written even when their value is the default.
    presence: bool,
    shape: Shape,
}

enum Shape {
    Single(Elem),
    List {
        offsets: Offsets,
        elem: Elem,
        packed: bool,
    },
    Map {
        offsets: OffsetBuffer<i32>,
        key: Elem,
        key_presence: bool,
        value: Elem,
        value_presence: bool,
        /// Null values are written as the default, i.e. left out (only for values without
        /// presence; see `bind_map`).
        value_nulls: Option<NullBuffer>,
    },
}

enum Offsets {
    Small(OffsetBuffer<i32>),
    Large(OffsetBuffer<i64>),
    Fixed { offset: usize, size: usize },
}

impl Offsets {
    #[inline]
    fn range(&self, row: usize) -> std::ops::Range<usize> {
        match self {
            Offsets::Small(o) => o[row] as usize..o[row + 1] as usize,
            Offsets::Large(o) => o[row] as usize..o[row + 1] as usize,
            Offsets::Fixed { offset, size } => (offset + row) * size..(offset + row + 1) * size,
        }
    }
}

/// How an integer is written.
#[derive(Clone, Copy)]
enum IntWire {
    /// `int32`, `int64`, enums: the two's complement as a 64-bit varint.
    Varint,
    /// `sint32`, `sint64`.
    ZigZag,
    /// `sfixed32`, `sfixed64`, `fixed32`, `fixed64`.
    Fixed,
}

/// One value of a kind, read from an array by index: how it is written (without its key).
enum Elem {
    I32(Int32Array, IntWire),
    I64(Int64Array, IntWire),
    U32(UInt32Array, IntWire),
    U64(UInt64Array, IntWire),
    F32(PrimitiveArray<Float32Type>),
    /// A `float` field from wider values, rounded as the general path rounds them.
    F64AsF32(PrimitiveArray<Float64Type>),
    F64(PrimitiveArray<Float64Type>),
    Bool(BooleanArray),
    Str(StringArray),
    Bytes(BinaryArray),
    /// Enum values by name; numbers by name.
    EnumName(StringArray, Arc<HashMap<String, i32>>),
    /// Enum values by number; the enum's numbers, sorted.
    EnumNumber(Int32Array, Arc<Vec<i32>>),
    /// `google.protobuf.Timestamp` from a timestamp column's raw values, `per_second` a second.
    Timestamp(Int64Array, i64),
    /// A `google.protobuf.*Value` wrapper around the value; `presence` of its `value` field.
    Wrapper(Box<Elem>, bool),
    Message(Box<MessagePlan>),
}

const STRICT: CastOptions<'static> = CastOptions {
    safe: false,
    format_options: arrow_cast::display::FormatOptions::new(),
};

impl MessagePlan {
    /// The plan for writing `message` from `columns` (matched to fields by name), or `None`
    /// where the general path writes.
    pub(super) fn compile<'a>(
        message: &MessageDescriptor,
        columns: impl Iterator<Item = (&'a str, &'a ArrayRef)>,
    ) -> Option<MessagePlan> {
        let mut fields = Vec::new();
        let mut oneofs = Vec::new();
        for (name, column) in columns {
            let Some(field) = message.get_field_by_name(name) else {
                continue; // columns without a field are not sent
            };
            if field.is_group() || fields.iter().any(|f: &FieldPlan| f.number == field.number()) {
                return None;
            }
            // One column per oneof: with several, the last one set in each row wins.
            if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
                if oneofs.contains(&oneof) {
                    return None;
                }
                oneofs.push(oneof);
            }
            fields.push(compile_field(&field, column)?);
        }
        fields.sort_by_key(|f| f.number);
        Some(MessagePlan { fields })
    }

    /// Appends the fields of row `row` (a message's content, without a length).
    pub(super) fn write(&self, row: usize, out: &mut Vec<u8>) -> Written {
        for f in &self.fields {
            if f.nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                if f.null_unset {
                    continue;
                }
                return Err(Unplanned);
            }
            match &f.shape {
                Shape::Single(elem) => {
                    if !f.presence && elem.is_default(row) {
                        continue;
                    }
                    encode_key(f.number, elem.wire_type(), out);
                    elem.write(row, out)?;
                }
                Shape::List {
                    offsets,
                    elem,
                    packed,
                } => {
                    let range = offsets.range(row);
                    if range.is_empty() {
                        continue;
                    }
                    if *packed {
                        encode_key(f.number, WireType::LengthDelimited, out);
                        match elem.fixed_width() {
                            Some(width) => {
                                encode_varint((range.len() * width) as u64, out);
                                elem.write_fixed_run(range, out);
                            }
                            None => length_delimited(out, |out| {
                                range.into_iter().try_for_each(|i| elem.write(i, out))
                            })?,
                        }
                    } else {
                        let wire = elem.wire_type();
                        for i in range {
                            encode_key(f.number, wire, out);
                            elem.write(i, out)?;
                        }
                    }
                }
                Shape::Map {
                    offsets,
                    key,
                    key_presence,
                    value,
                    value_presence,
                    value_nulls,
                } => {
                    let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                    for i in start..end {
                        encode_key(f.number, WireType::LengthDelimited, out);
                        length_delimited(out, |out| {
                            if *key_presence || !key.is_default(i) {
                                encode_key(1, key.wire_type(), out);
                                key.write(i, out)?;
                            }
                            let null = value_nulls.as_ref().is_some_and(|n| n.is_null(i));
                            if !null && (*value_presence || !value.is_default(i)) {
                                encode_key(2, value.wire_type(), out);
                                value.write(i, out)?;
                            }
                            Ok(())
                        })?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn compile_field(field: &FieldDescriptor, column: &ArrayRef) -> Option<FieldPlan> {
    let kind = field.kind();
    let presence = field.supports_presence();
    let shape = if field.is_map() {
        bind_map(&kind, column)?
    } else if field.is_list() {
        let (offsets, values) = match column.data_type() {
            DataType::List(_) => {
                let l = column.as_list::<i32>();
                (Offsets::Small(l.offsets().clone()), l.values())
            }
            DataType::LargeList(_) => {
                let l = column.as_list::<i64>();
                (Offsets::Large(l.offsets().clone()), l.values())
            }
            DataType::FixedSizeList(_, size) => {
                let l = column.as_fixed_size_list();
                let offset = l.offset();
                (
                    Offsets::Fixed {
                        offset,
                        size: *size as usize,
                    },
                    l.values(),
                )
            }
            _ => return None,
        };
        // Repeated fields hold no nulls: the general path names the element.
        if values.null_count() > 0 {
            return None;
        }
        Shape::List {
            offsets,
            elem: bind(&kind, values)?,
            packed: field.is_packed(),
        }
    } else {
        // Without presence a field is left out when it holds the default, which the plan
        // takes to be the zero of its kind (proto3's): anything else is the general path's.
        if !presence && !zero_default(field) {
            return None;
        }
        Shape::Single(bind(&kind, column)?)
    };
    Some(FieldPlan {
        number: field.number(),
        nulls: column.nulls().filter(|n| n.null_count() > 0).cloned(),
        null_unset: presence || field.is_list() || field.is_map(),
        presence,
        shape,
    })
}

fn zero_default(field: &FieldDescriptor) -> bool {
    match field.default_value() {
        Value::Bool(b) => !b,
        Value::I32(v) | Value::EnumNumber(v) => v == 0,
        Value::I64(v) => v == 0,
        Value::U32(v) => v == 0,
        Value::U64(v) => v == 0,
        Value::F32(v) => v == 0.0,
        Value::F64(v) => v == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Bytes(b) => b.is_empty(),
        _ => false,
    }
}

fn bind_map(kind: &Kind, column: &ArrayRef) -> Option<Shape> {
    let Kind::Message(entry) = kind else {
        return None;
    };
    let DataType::Map(_, _) = column.data_type() else {
        return None;
    };
    let map = column.as_map();
    let (key_field, value_field) = (entry.map_entry_key_field(), entry.map_entry_value_field());
    let (keys, values) = (map.keys(), map.values());
    let value_presence = value_field.supports_presence();
    // A null key is an error; a null value is written as the default, which a value with
    // presence would write explicitly: both are left to the general path.
    if keys.null_count() > 0 || (value_presence && values.null_count() > 0) {
        return None;
    }
    if !key_field.supports_presence() && !zero_default(&key_field)
        || !value_presence && !zero_default(&value_field)
    {
        return None;
    }
    Some(Shape::Map {
        offsets: map.offsets().clone(),
        key: bind(&key_field.kind(), keys)?,
        key_presence: key_field.supports_presence(),
        value: bind(&value_field.kind(), values)?,
        value_presence,
        value_nulls: values.nulls().filter(|n| n.null_count() > 0).cloned(),
    })
}

/// Binds `array` to values of `kind`, cast to the type they are written from, or `None` where
/// the general path converts them (or reports what it cannot).
fn bind(kind: &Kind, array: &ArrayRef) -> Option<Elem> {
    let dt = array.data_type();
    let to = |t: DataType| cast_with_options(array, &t, &STRICT).ok();
    let text = matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    // Floats bound for integers must be whole: the general path checks them.
    let int = dt.is_integer();
    Some(match kind {
        Kind::Bool if *dt == DataType::Boolean => Elem::Bool(array.as_boolean().clone()),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 if int => {
            Elem::I32(to(DataType::Int32)?.as_primitive().clone(), int_wire(kind))
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 if int => {
            Elem::I64(to(DataType::Int64)?.as_primitive().clone(), int_wire(kind))
        }
        Kind::Uint32 | Kind::Fixed32 if int => {
            Elem::U32(to(DataType::UInt32)?.as_primitive().clone(), int_wire(kind))
        }
        Kind::Uint64 | Kind::Fixed64 if int => {
            Elem::U64(to(DataType::UInt64)?.as_primitive().clone(), int_wire(kind))
        }
        Kind::Float if *dt == DataType::Float32 => Elem::F32(array.as_primitive().clone()),
        // Through f64 as the general path goes, so integers round the same.
        Kind::Float if int || dt.is_floating() => {
            Elem::F64AsF32(to(DataType::Float64)?.as_primitive().clone())
        }
        Kind::Double if int || dt.is_floating() => Elem::F64(to(DataType::Float64)?.as_primitive().clone()),
        Kind::String if text => Elem::Str(to(DataType::Utf8)?.as_string::<i32>().clone()),
        Kind::Bytes
            if matches!(
                dt,
                DataType::Binary
                    | DataType::LargeBinary
                    | DataType::BinaryView
                    | DataType::FixedSizeBinary(_)
            ) =>
        {
            Elem::Bytes(to(DataType::Binary)?.as_binary::<i32>().clone())
        }
        Kind::Enum(e) if text => {
            let names = e.values().map(|v| (v.name().to_owned(), v.number())).collect();
            Elem::EnumName(to(DataType::Utf8)?.as_string::<i32>().clone(), Arc::new(names))
        }
        Kind::Enum(e) if int => {
            let mut numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
            numbers.sort_unstable();
            Elem::EnumNumber(to(DataType::Int32)?.as_primitive().clone(), Arc::new(numbers))
        }
        Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
            let DataType::Timestamp(unit, _) = dt else {
                return None;
            };
            let per_second = match unit {
                TimeUnit::Second => 1,
                TimeUnit::Millisecond => 1_000,
                TimeUnit::Microsecond => 1_000_000,
                TimeUnit::Nanosecond => 1_000_000_000,
            };
            Elem::Timestamp(to(DataType::Int64)?.as_primitive().clone(), per_second)
        }
        Kind::Message(m) => {
            if let DataType::Struct(fields) = dt {
                let s = array.as_struct();
                let columns = fields.iter().map(|f| f.name().as_str()).zip(s.columns());
                Elem::Message(Box::new(MessagePlan::compile(m, columns)?))
            } else {
                let value = wrapped(m)?;
                if !value.supports_presence() && !zero_default(&value) {
                    return None;
                }
                Elem::Wrapper(Box::new(bind(&value.kind(), array)?), value.supports_presence())
            }
        }
        _ => return None,
    })
}

fn int_wire(kind: &Kind) -> IntWire {
    match kind {
        Kind::Sint32 | Kind::Sint64 => IntWire::ZigZag,
        Kind::Sfixed32 | Kind::Sfixed64 | Kind::Fixed32 | Kind::Fixed64 => IntWire::Fixed,
        _ => IntWire::Varint,
    }
}

impl Elem {
    fn wire_type(&self) -> WireType {
        match self {
            Elem::I32(_, IntWire::Fixed) | Elem::U32(_, IntWire::Fixed) => WireType::ThirtyTwoBit,
            Elem::I64(_, IntWire::Fixed) | Elem::U64(_, IntWire::Fixed) => WireType::SixtyFourBit,
            Elem::F32(_) | Elem::F64AsF32(_) => WireType::ThirtyTwoBit,
            Elem::F64(_) => WireType::SixtyFourBit,
            Elem::I32(..)
            | Elem::I64(..)
            | Elem::U32(..)
            | Elem::U64(..)
            | Elem::Bool(_)
            | Elem::EnumName(..)
            | Elem::EnumNumber(..) => WireType::Varint,
            Elem::Str(_) | Elem::Bytes(_) | Elem::Timestamp(..) | Elem::Wrapper(..) | Elem::Message(_) => {
                WireType::LengthDelimited
            }
        }
    }

    /// Bytes per value when packed values are written as they lie (little-endian floats and
    /// fixed-width integers), so a run of them is copied at once.
    fn fixed_width(&self) -> Option<usize> {
        match self {
            Elem::F32(_) | Elem::I32(_, IntWire::Fixed) | Elem::U32(_, IntWire::Fixed) => Some(4),
            Elem::F64(_) | Elem::I64(_, IntWire::Fixed) | Elem::U64(_, IntWire::Fixed) => Some(8),
            _ => None,
        }
    }

    /// Appends values `range` as they lie (see `fixed_width`).
    fn write_fixed_run(&self, range: std::ops::Range<usize>, out: &mut Vec<u8>) {
        use arrow_buffer::ToByteSlice;
        // Native byte order is little-endian on every supported target (see format::tensor),
        // which is Protobuf's byte order for fixed-width values.
        let bytes = match self {
            Elem::F32(a) => a.values()[range].to_byte_slice(),
            Elem::F64(a) => a.values()[range].to_byte_slice(),
            Elem::I32(a, _) => a.values()[range].to_byte_slice(),
            Elem::U32(a, _) => a.values()[range].to_byte_slice(),
            Elem::I64(a, _) => a.values()[range].to_byte_slice(),
            Elem::U64(a, _) => a.values()[range].to_byte_slice(),
            _ => unreachable!("only fixed-width values are written as runs"),
        };
        out.extend_from_slice(bytes);
    }

    /// Whether value `i` is its kind's zero (which a field without presence leaves out). Enum
    /// names not in the enum are not: writing them fails.
    fn is_default(&self, i: usize) -> bool {
        match self {
            Elem::I32(a, _) | Elem::EnumNumber(a, _) => a.value(i) == 0,
            Elem::I64(a, _) => a.value(i) == 0,
            Elem::U32(a, _) => a.value(i) == 0,
            Elem::U64(a, _) => a.value(i) == 0,
            // -0.0 counts as the default too, as prost-reflect compares it.
            Elem::F32(a) => a.value(i) == 0.0,
            Elem::F64AsF32(a) => a.value(i) as f32 == 0.0,
            Elem::F64(a) => a.value(i) == 0.0,
            Elem::Bool(a) => !a.value(i),
            Elem::Str(a) => a.value(i).is_empty(),
            Elem::Bytes(a) => a.value(i).is_empty(),
            Elem::EnumName(a, names) => names.get(a.value(i)) == Some(&0),
            Elem::Timestamp(..) | Elem::Wrapper(..) | Elem::Message(_) => false,
        }
    }

    /// Appends value `i` (a length first for length-delimited values).
    #[inline]
    fn write(&self, i: usize, out: &mut Vec<u8>) -> Written {
        match self {
            Elem::I32(a, wire) => int(i64::from(a.value(i)), *wire, 4, out),
            Elem::I64(a, wire) => int(a.value(i), *wire, 8, out),
            Elem::U32(a, IntWire::Fixed) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Elem::U32(a, _) => encode_varint(u64::from(a.value(i)), out),
            Elem::U64(a, IntWire::Fixed) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Elem::U64(a, _) => encode_varint(a.value(i), out),
            Elem::F32(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Elem::F64AsF32(a) => out.extend_from_slice(&(a.value(i) as f32).to_le_bytes()),
            Elem::F64(a) => out.extend_from_slice(&a.value(i).to_le_bytes()),
            Elem::Bool(a) => out.push(u8::from(a.value(i))),
            Elem::Str(a) => sized(a.value(i).as_bytes(), out),
            Elem::Bytes(a) => sized(a.value(i), out),
            Elem::EnumName(a, names) => {
                let n = *names.get(a.value(i)).ok_or(Unplanned)?;
                int(i64::from(n), IntWire::Varint, 4, out)
            }
            Elem::EnumNumber(a, numbers) => {
                let n = a.value(i);
                numbers.binary_search(&n).map_err(|_| Unplanned)?;
                int(i64::from(n), IntWire::Varint, 4, out)
            }
            Elem::Timestamp(a, per_second) => {
                let v = a.value(i);
                let (seconds, nanos) = (
                    v.div_euclid(*per_second),
                    v.rem_euclid(*per_second) * (1_000_000_000 / per_second),
                );
                length_delimited(out, |out| {
                    if seconds != 0 {
                        encode_key(1, WireType::Varint, out);
                        encode_varint(seconds as u64, out);
                    }
                    if nanos != 0 {
                        encode_key(2, WireType::Varint, out);
                        encode_varint(nanos as u64, out);
                    }
                    Ok(())
                })?
            }
            Elem::Wrapper(value, presence) => length_delimited(out, |out| {
                if *presence || !value.is_default(i) {
                    encode_key(1, value.wire_type(), out);
                    value.write(i, out)?;
                }
                Ok(())
            })?,
            Elem::Message(plan) => length_delimited(out, |out| plan.write(i, out))?,
        }
        Ok(())
    }
}

/// An integer as its wire type writes it; `bytes`: its width when fixed.
#[inline]
fn int(v: i64, wire: IntWire, bytes: usize, out: &mut Vec<u8>) {
    match wire {
        // A negative `int32` is sign-extended to ten bytes, as prost writes it.
        IntWire::Varint => encode_varint(v as u64, out),
        // For values in i32's range, sint32's zigzag is sint64's.
        IntWire::ZigZag => encode_varint(((v << 1) ^ (v >> 63)) as u64, out),
        IntWire::Fixed if bytes == 4 => out.extend_from_slice(&(v as i32).to_le_bytes()),
        IntWire::Fixed => out.extend_from_slice(&v.to_le_bytes()),
    }
}

#[inline]
fn sized(bytes: &[u8], out: &mut Vec<u8>) {
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Appends what `write` appends behind its length. The content is written first, behind a
/// one-byte length, and moved only when its length needs more bytes (rare for a row's values).
#[inline]
fn length_delimited(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> Written) -> Written {
    let at = out.len();
    out.push(0);
    write(out)?;
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        encode_varint(len as u64, &mut prefix);
        out.splice(at..at + 1, prefix);
    }
    Ok(())
}
