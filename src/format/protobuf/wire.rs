//! A compiled reader for Protobuf values: the wire format read straight into the column storage,
//! driven by the writer → reader plan, with no `DynamicMessage` (a map of boxed values) per value.
//!
//! It reads the common shapes exactly as the general path (`DynamicMessage::decode` then
//! `append_fields`) does, and gives a value up to the general path wherever the two could differ
//! or the input is unusual: a non-repeated field seen twice (where the last value would win, or
//! messages would merge), two members of one oneof, groups, a wrong wire type, invalid UTF-8,
//! truncated input, a timestamp out of range. The general path then decodes that value or
//! reports its error, so errors read the same either way. Writers with maps, groups or more than
//! 64 fields in a message get no compiled reader. A differential test (`tests` below) holds both
//! paths to the same columns.

use super::columns::{Node, Ty};
use super::read_plan::{Conv, Plan};
use super::storage::{offset, Col, Data};
use prost::encoding::{decode_key, decode_varint, WireType};
use prost_reflect::{EnumDescriptor, FieldDescriptor, Kind, Value};

/// The value must go through the general path.
pub(super) struct GiveUp;

type Step<T = ()> = Result<T, GiveUp>;

/// Field numbers up to this are looked up in a table; larger ones by search.
const DENSE_NUMBERS: u32 = 256;

/// How one message's fields are read.
#[derive(Debug)]
pub(super) struct WirePlan {
    /// Slot by field number (`NONE`: not a reader column).
    dense: Vec<u8>,
    /// (field number, slot) for numbers of `DENSE_NUMBERS` and above, sorted.
    sparse: Vec<(u32, u8)>,
    slots: Vec<Slot>,
    /// Reader columns that no writer field fills (always null).
    unfilled: Vec<usize>,
}

const NONE: u8 = u8::MAX;

#[derive(Debug)]
struct Slot {
    column: usize,
    list: bool,
    /// What an absent field reads as: its default (fields without presence), or null (`None`).
    default: Option<Scalar>,
    oneof: Option<u8>,
    kind: WireKind,
}

/// A writer field's type as it appears on the wire.
#[derive(Debug)]
enum WireKind {
    Bool,
    Int32,
    Sint32,
    Sfixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint32,
    Fixed32,
    Uint64,
    Fixed64,
    Float,
    Double,
    String,
    Bytes,
    Enum(EnumDescriptor),
    Timestamp,
    /// A `google.protobuf.*Value` wrapper of this scalar kind.
    Wrapper(Box<WireKind>),
    Message(Box<WirePlan>),
}

/// One decoded element, before it is widened into its column's type.
#[derive(Debug, Clone)]
enum Scalar {
    Bool(bool),
    I32(i32),
    I64(i64),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
    /// UTF-8 text: a string or an enum value's name.
    Text(Box<str>),
    Bytes(Box<[u8]>),
}

impl WireKind {
    fn scalar(kind: &Kind) -> Option<WireKind> {
        Some(match kind {
            Kind::Bool => WireKind::Bool,
            Kind::Int32 => WireKind::Int32,
            Kind::Sint32 => WireKind::Sint32,
            Kind::Sfixed32 => WireKind::Sfixed32,
            Kind::Int64 => WireKind::Int64,
            Kind::Sint64 => WireKind::Sint64,
            Kind::Sfixed64 => WireKind::Sfixed64,
            Kind::Uint32 => WireKind::Uint32,
            Kind::Fixed32 => WireKind::Fixed32,
            Kind::Uint64 => WireKind::Uint64,
            Kind::Fixed64 => WireKind::Fixed64,
            Kind::Float => WireKind::Float,
            Kind::Double => WireKind::Double,
            Kind::String => WireKind::String,
            Kind::Bytes => WireKind::Bytes,
            Kind::Enum(e) => WireKind::Enum(e.clone()),
            Kind::Message(_) => return None,
        })
    }

    /// The wire type of one element (`LengthDelimited` for strings, bytes and messages).
    fn wire_type(&self) -> WireType {
        match self {
            WireKind::Bool
            | WireKind::Int32
            | WireKind::Sint32
            | WireKind::Int64
            | WireKind::Sint64
            | WireKind::Uint32
            | WireKind::Uint64
            | WireKind::Enum(_) => WireType::Varint,
            WireKind::Sfixed32 | WireKind::Fixed32 | WireKind::Float => WireType::ThirtyTwoBit,
            WireKind::Sfixed64 | WireKind::Fixed64 | WireKind::Double => WireType::SixtyFourBit,
            _ => WireType::LengthDelimited,
        }
    }
}

/// The compiled reader of a message whose reader columns are `nodes` and writer fields `plan`;
/// `None` where the writer has a shape it does not read.
pub(super) fn compile(plan: &Plan, nodes: &[Node]) -> Option<WirePlan> {
    let mut out = WirePlan {
        dense: Vec::new(),
        sparse: Vec::new(),
        slots: Vec::new(),
        unfilled: Vec::new(),
    };
    let mut oneofs: Vec<String> = Vec::new();
    for (column, (node, slot)) in nodes.iter().zip(&plan.slots).enumerate() {
        let Some((field, conv)) = slot else {
            out.unfilled.push(column);
            continue;
        };
        if field.is_map() || field.is_group() || out.slots.len() >= 64 {
            return None;
        }
        let kind = wire_kind(field, conv, node)?;
        let oneof = match field.containing_oneof() {
            Some(o) => {
                let at = oneofs.iter().position(|n| n == o.full_name()).unwrap_or_else(|| {
                    oneofs.push(o.full_name().to_owned());
                    oneofs.len() - 1
                });
                Some(u8::try_from(at).ok().filter(|&i| i < 64)?)
            }
            None => None,
        };
        let default = if field.is_list() || field.supports_presence() {
            None
        } else {
            Some(default_scalar(field, &kind)?)
        };
        let index = u8::try_from(out.slots.len()).ok()?;
        if field.number() < DENSE_NUMBERS {
            let at = field.number() as usize;
            if out.dense.len() <= at {
                out.dense.resize(at + 1, NONE);
            }
            out.dense[at] = index;
        } else {
            out.sparse.push((field.number(), index));
        }
        out.slots.push(Slot {
            column,
            list: field.is_list(),
            default,
            oneof,
            kind,
        });
    }
    out.sparse.sort_unstable();
    Some(out)
}

fn wire_kind(field: &FieldDescriptor, conv: &Conv, node: &Node) -> Option<WireKind> {
    Some(match conv {
        Conv::Scalar | Conv::Enum(_) => WireKind::scalar(&field.kind())?,
        Conv::Timestamp => WireKind::Timestamp,
        Conv::Wrapper(value) => WireKind::Wrapper(Box::new(WireKind::scalar(&value.kind())?)),
        Conv::Message(plan) => {
            let Ty::Struct(children) = &node.ty else {
                return None;
            };
            WireKind::Message(Box::new(compile(plan, children)?))
        }
        Conv::Map { .. } => return None,
    })
}

/// The value an absent field without presence reads as (its declared or zero default).
fn default_scalar(field: &FieldDescriptor, kind: &WireKind) -> Option<Scalar> {
    Some(match (field.default_value(), kind) {
        (Value::Bool(b), _) => Scalar::Bool(b),
        (Value::I32(x), _) => Scalar::I32(x),
        (Value::I64(x), _) => Scalar::I64(x),
        (Value::U32(x), _) => Scalar::U32(x),
        (Value::U64(x), _) => Scalar::U64(x),
        (Value::F32(x), _) => Scalar::F32(x),
        (Value::F64(x), _) => Scalar::F64(x),
        (Value::String(s), _) => Scalar::Text(s.into()),
        (Value::Bytes(b), _) => Scalar::Bytes(b.to_vec().into()),
        (Value::EnumNumber(n), WireKind::Enum(e)) => Scalar::Text(enum_name(e, n).into()),
        _ => return None,
    })
}

/// An enum value's name; an open enum may carry a number its schema does not name (kept as
/// digits, as the general path does).
fn enum_name(e: &EnumDescriptor, n: i32) -> String {
    match e.get_value(n) {
        Some(v) => v.name().to_owned(),
        None => n.to_string(),
    }
}

impl WirePlan {
    fn slot(&self, number: u32) -> Option<usize> {
        let index = if number < DENSE_NUMBERS {
            *self.dense.get(number as usize)?
        } else {
            let at = self.sparse.binary_search_by_key(&number, |&(n, _)| n).ok()?;
            self.sparse[at].1
        };
        (index != NONE).then_some(usize::from(index))
    }
}

/// Reads one message body into `cols` (one row each), or gives it up. On `GiveUp` the columns
/// may hold part of a row: the caller truncates them.
pub(super) fn read_message(plan: &WirePlan, mut buf: &[u8], cols: &mut [Col]) -> Step {
    let mut seen: u64 = 0;
    let mut oneofs: u64 = 0;
    while !buf.is_empty() {
        let (number, wire) = decode_key(&mut buf).map_err(|_| GiveUp)?;
        let Some(index) = plan.slot(number) else {
            skip_field(wire, &mut buf)?;
            continue;
        };
        let slot = &plan.slots[index];
        let col = &mut cols[slot.column];
        if slot.list {
            read_list_items(&slot.kind, wire, &mut buf, col)?;
            continue;
        }
        if seen & (1 << index) != 0 {
            return Err(GiveUp); // the last value would win, or messages would merge
        }
        seen |= 1 << index;
        if let Some(o) = slot.oneof {
            if oneofs & (1 << o) != 0 {
                return Err(GiveUp); // a later member clears an earlier one
            }
            oneofs |= 1 << o;
        }
        if wire != slot.kind.wire_type() {
            return Err(GiveUp);
        }
        read_element(&slot.kind, &mut buf, col)?;
    }
    for (index, slot) in plan.slots.iter().enumerate() {
        let col = &mut cols[slot.column];
        if slot.list {
            let Data::List { offsets, item } = &mut col.data else {
                unreachable!("list nodes have list storage")
            };
            offsets.push(offset(item.len()).map_err(|_| GiveUp)?);
            col.valid();
        } else if seen & (1 << index) == 0 {
            match &slot.default {
                Some(value) => push_scalar(col, value)?,
                None => col.push_null().map_err(|_| GiveUp)?,
            }
        }
    }
    for &column in &plan.unfilled {
        cols[column].push_null().map_err(|_| GiveUp)?;
    }
    Ok(())
}

/// Appends the elements of one occurrence of a repeated field (packed, or one element) to the
/// list column's items; the row's offset is pushed when the message ends.
fn read_list_items(kind: &WireKind, wire: WireType, buf: &mut &[u8], col: &mut Col) -> Step {
    let Data::List { item, .. } = &mut col.data else {
        unreachable!("list nodes have list storage")
    };
    let element = kind.wire_type();
    if wire == WireType::LengthDelimited && element != WireType::LengthDelimited {
        let mut packed = length_delimited(buf)?;
        match (kind, &mut item.data) {
            // The common feature vector: little-endian floats copied as they are.
            (WireKind::Float, Data::F32(v)) if packed.len() % 4 == 0 => {
                v.extend(
                    packed
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
                );
            }
            (WireKind::Double, Data::F64(v)) if packed.len() % 8 == 0 => {
                v.extend(
                    packed
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
                );
            }
            _ => {
                while !packed.is_empty() {
                    read_element(kind, &mut packed, item)?;
                }
            }
        }
        return Ok(());
    }
    if wire != element {
        return Err(GiveUp);
    }
    read_element(kind, buf, item)
}

/// Reads one element of `kind` (its wire type already checked) and appends it to `col`.
fn read_element(kind: &WireKind, buf: &mut &[u8], col: &mut Col) -> Step {
    match kind {
        WireKind::String => {
            let text = length_delimited(buf)?;
            std::str::from_utf8(text).map_err(|_| GiveUp)?;
            push_bytes(col, text, true)
        }
        WireKind::Bytes => {
            let bytes = length_delimited(buf)?;
            push_bytes(col, bytes, false)
        }
        WireKind::Enum(e) => {
            let n = varint(buf)? as i32;
            match e.get_value(n) {
                Some(v) => push_bytes(col, v.name().as_bytes(), true),
                None => push_bytes(col, n.to_string().as_bytes(), true),
            }
        }
        WireKind::Timestamp => {
            let ns = read_timestamp(length_delimited(buf)?)?;
            let Data::Timestamp(v) = &mut col.data else {
                unreachable!("timestamp conversions fill timestamp columns")
            };
            v.push(ns);
            col.valid();
            Ok(())
        }
        WireKind::Wrapper(inner) => {
            let body = length_delimited(buf)?;
            read_wrapper(inner, body, col)
        }
        WireKind::Message(plan) => {
            let body = length_delimited(buf)?;
            let Data::Struct { children, len } = &mut col.data else {
                unreachable!("struct nodes have struct storage")
            };
            read_message(plan, body, children)?;
            *len += 1;
            col.valid();
            Ok(())
        }
        numeric => {
            let value = read_number(numeric, buf)?;
            push_scalar(col, &value)
        }
    }
}

fn read_number(kind: &WireKind, buf: &mut &[u8]) -> Step<Scalar> {
    Ok(match kind {
        WireKind::Bool => Scalar::Bool(varint(buf)? != 0),
        WireKind::Int32 => Scalar::I32(varint(buf)? as i32),
        WireKind::Sint32 => {
            let v = varint(buf)? as u32;
            Scalar::I32((v >> 1) as i32 ^ -((v & 1) as i32))
        }
        WireKind::Sfixed32 => Scalar::I32(i32::from_le_bytes(fixed(buf)?)),
        WireKind::Int64 => Scalar::I64(varint(buf)? as i64),
        WireKind::Sint64 => {
            let v = varint(buf)?;
            Scalar::I64((v >> 1) as i64 ^ -((v & 1) as i64))
        }
        WireKind::Sfixed64 => Scalar::I64(i64::from_le_bytes(fixed(buf)?)),
        WireKind::Uint32 => Scalar::U32(varint(buf)? as u32),
        WireKind::Fixed32 => Scalar::U32(u32::from_le_bytes(fixed(buf)?)),
        WireKind::Uint64 => Scalar::U64(varint(buf)?),
        WireKind::Fixed64 => Scalar::U64(u64::from_le_bytes(fixed(buf)?)),
        WireKind::Float => Scalar::F32(f32::from_le_bytes(fixed(buf)?)),
        WireKind::Double => Scalar::F64(f64::from_le_bytes(fixed(buf)?)),
        _ => return Err(GiveUp),
    })
}

/// A `google.protobuf.Timestamp` body as nanoseconds since the epoch.
fn read_timestamp(mut body: &[u8]) -> Step<i64> {
    let (mut seconds, mut nanos) = (None, None);
    while !body.is_empty() {
        let (number, wire) = decode_key(&mut body).map_err(|_| GiveUp)?;
        let target = match (number, wire) {
            (1, WireType::Varint) => &mut seconds,
            (2, WireType::Varint) => &mut nanos,
            (1 | 2, _) => return Err(GiveUp),
            _ => {
                skip_field(wire, &mut body)?;
                continue;
            }
        };
        if target.replace(varint(&mut body)?).is_some() {
            return Err(GiveUp);
        }
    }
    let seconds = seconds.unwrap_or(0) as i64;
    let nanos = nanos.unwrap_or(0) as i32;
    // Out of the nanosecond range: the general path reports it.
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(i64::from(nanos)))
        .ok_or(GiveUp)
}

/// A wrapper's body: its `value` field (1), or the zero value when absent.
fn read_wrapper(inner: &WireKind, mut body: &[u8], col: &mut Col) -> Step {
    let mut value: Option<&[u8]> = None;
    while !body.is_empty() {
        let (number, wire) = decode_key(&mut body).map_err(|_| GiveUp)?;
        if number != 1 {
            skip_field(wire, &mut body)?;
            continue;
        }
        if wire != inner.wire_type() || value.is_some() {
            return Err(GiveUp);
        }
        let start = body;
        skip_field(wire, &mut body)?;
        value = Some(&start[..start.len() - body.len()]);
    }
    match value {
        Some(mut encoded) => read_element(inner, &mut encoded, col),
        None => push_scalar(col, &zero(inner)?),
    }
}

fn zero(kind: &WireKind) -> Step<Scalar> {
    Ok(match kind {
        WireKind::String => Scalar::Text("".into()),
        WireKind::Bytes => Scalar::Bytes(Box::default()),
        numeric => read_number(numeric, &mut &[0u8; 8][..])?,
    })
}

fn push_bytes(col: &mut Col, value: &[u8], text: bool) -> Step {
    match (&mut col.data, text) {
        (Data::Utf8 { offsets, bytes }, true) | (Data::Binary { offsets, bytes }, false) => {
            bytes.extend_from_slice(value);
            offsets.push(offset(bytes.len()).map_err(|_| GiveUp)?);
        }
        _ => return Err(GiveUp),
    }
    col.valid();
    Ok(())
}

/// Appends `value` widened to the column's type, as the general path's `push_scalar` does.
fn push_scalar(col: &mut Col, value: &Scalar) -> Step {
    match (&mut col.data, value) {
        (Data::Bool(v), Scalar::Bool(b)) => v.push(*b),
        (Data::I32(v), Scalar::I32(x)) => v.push(*x),
        (Data::I64(v), Scalar::I64(x)) => v.push(*x),
        (Data::I64(v), Scalar::I32(x)) => v.push(i64::from(*x)),
        (Data::I64(v), Scalar::U32(x)) => v.push(i64::from(*x)),
        (Data::U32(v), Scalar::U32(x)) => v.push(*x),
        (Data::U64(v), Scalar::U64(x)) => v.push(*x),
        (Data::U64(v), Scalar::U32(x)) => v.push(u64::from(*x)),
        (Data::F32(v), Scalar::F32(x)) => v.push(*x),
        (Data::F64(v), Scalar::F64(x)) => v.push(*x),
        (Data::F64(v), Scalar::F32(x)) => v.push(f64::from(*x)),
        (_, Scalar::Text(s)) => return push_bytes(col, s.as_bytes(), true),
        (_, Scalar::Bytes(b)) => return push_bytes(col, b, false),
        _ => return Err(GiveUp),
    }
    col.valid();
    Ok(())
}

fn varint(buf: &mut &[u8]) -> Step<u64> {
    decode_varint(buf).map_err(|_| GiveUp)
}

fn fixed<const N: usize>(buf: &mut &[u8]) -> Step<[u8; N]> {
    let (head, rest) = buf.split_first_chunk::<N>().ok_or(GiveUp)?;
    *buf = rest;
    Ok(*head)
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Step<&'a [u8]> {
    let len = usize::try_from(varint(buf)?).map_err(|_| GiveUp)?;
    if len > buf.len() {
        return Err(GiveUp);
    }
    let (body, rest) = buf.split_at(len);
    *buf = rest;
    Ok(body)
}

/// Skips a field the reader has no column for (groups: given up).
fn skip_field(wire: WireType, buf: &mut &[u8]) -> Step {
    match wire {
        WireType::Varint => varint(buf).map(drop),
        WireType::SixtyFourBit => fixed::<8>(buf).map(drop),
        WireType::ThirtyTwoBit => fixed::<4>(buf).map(drop),
        WireType::LengthDelimited => length_delimited(buf).map(drop),
        WireType::StartGroup | WireType::EndGroup => Err(GiveUp),
    }
}

#[cfg(test)]
mod tests;
