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

use super::{offset, Col, Conv, Data, Node, Plan, Ty};
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
mod tests {
    use super::super::{
        append_fields, load_message, message_nodes, plan, Col, Node, ProtoSource, ProtobufDecoder,
    };
    use super::*;
    use crate::format::Decoder;
    use arrow_array::{Array, ArrayRef};
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, MessageDescriptor};

    const PROTO: &str = r#"
        syntax = "proto3";
        package diff.v1;
        import "google/protobuf/timestamp.proto";
        import "google/protobuf/wrappers.proto";
        message Row {
            int64 id = 1; repeated float x = 2; int32 y = 3; sint32 s32 = 4; sint64 s64 = 5;
            uint32 u32 = 6; uint64 u64 = 7; fixed32 f32 = 8; fixed64 f64 = 9; sfixed32 sf32 = 10;
            sfixed64 sf64 = 11; double d = 12; bool b = 13; string name = 14; bytes blob = 15;
            Color color = 16; optional int32 maybe = 17; Inner inner = 18; repeated Inner inners = 19;
            google.protobuf.Timestamp ts = 20; google.protobuf.Int32Value wrapped = 21;
            google.protobuf.StringValue wname = 22; repeated string tags = 23;
            repeated Color colors = 24; repeated int64 ids = 25; repeated double ds = 26;
            oneof choice { string text = 27; int32 number = 28; }
            int32 far = 300;
            message Inner { int32 a = 1; repeated float v = 2; string s = 3; }
            enum Color { RED = 0; GREEN = 1; BLUE = 2; }
        }
        // An older writer: fewer fields, narrower types (int32 → int64, float → double).
        message Older { int32 id = 1; repeated float x = 2; float d = 12; string extra = 40; }
    "#;

    fn message(name: &str) -> MessageDescriptor {
        load_message(&ProtoSource::Text(PROTO.into()), Some(name)).unwrap()
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*: deterministic test data, no dependency.
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn random_value(rng: &mut Rng, kind: &Kind) -> Value {
        let r = rng.next();
        match kind {
            Kind::Bool => Value::Bool(r & 1 == 1),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(r as i32 >> rng.below(31)),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(r as i64 >> rng.below(63)),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(r as u32 >> rng.below(31)),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(r >> rng.below(63)),
            Kind::Float => Value::F32((r as i32) as f32 / 7.0),
            Kind::Double => Value::F64((r as i64) as f64 / 3.0),
            Kind::String => Value::String(["", "a", "héllo", "z".repeat(40).as_str()][r as usize % 4].into()),
            Kind::Bytes => Value::Bytes(vec![r as u8; (r % 5) as usize].into()),
            Kind::Enum(_) => Value::EnumNumber((r % 5) as i32), // 3 and 4 are not named
            Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => {
                let mut t = DynamicMessage::new(m.clone());
                // Now and then out of the nanosecond range: the general path reports it.
                let seconds = if r % 20 == 0 {
                    i64::MAX / 2
                } else {
                    (r % 4_000_000_000) as i64
                };
                t.set_field_by_name("seconds", Value::I64(seconds));
                t.set_field_by_name("nanos", Value::I32((r % 1_000_000_000) as i32));
                Value::Message(t)
            }
            Kind::Message(m) => Value::Message(random_message(rng, m)),
        }
    }

    fn random_message(rng: &mut Rng, desc: &MessageDescriptor) -> DynamicMessage {
        let mut m = DynamicMessage::new(desc.clone());
        for field in desc.fields() {
            if rng.below(10) < 3 {
                continue; // absent
            }
            let value = if field.is_list() {
                Value::List(
                    (0..rng.below(4))
                        .map(|_| random_value(rng, &field.kind()))
                        .collect(),
                )
            } else {
                random_value(rng, &field.kind())
            };
            m.set_field(&field, value);
        }
        m
    }

    /// Reads `messages` as the decoder does (the compiled reader, the general path where it gives
    /// up) and with the general path only; returns both results and how many took the compiled one.
    fn read_both(
        writer: &MessageDescriptor,
        nodes: &[Node],
        messages: &[Vec<u8>],
    ) -> (Vec<ArrayRef>, Vec<ArrayRef>, usize) {
        let p = plan(writer, nodes, "").unwrap();
        let wire = compile(&p, nodes).expect("the writer compiles");
        let mut fast: Vec<Col> = nodes.iter().map(Col::new).collect();
        let mut general: Vec<Col> = nodes.iter().map(Col::new).collect();
        let (mut rows, mut compiled) = (0, 0);
        let decode_general = |cols: &mut [Col], m: &[u8]| {
            let m = DynamicMessage::decode(writer.clone(), m).map_err(|e| e.to_string())?;
            append_fields(cols, nodes, &p, &m)
        };
        for m in messages {
            let a = match read_message(&wire, m, &mut fast) {
                Ok(()) => {
                    compiled += 1;
                    Ok(())
                }
                Err(GiveUp) => {
                    fast.iter_mut().for_each(|c| c.truncate(rows));
                    decode_general(&mut fast, m)
                }
            };
            let b = decode_general(&mut general, m);
            assert_eq!(a, b, "message {m:?}");
            if a.is_ok() {
                rows += 1;
            } else {
                fast.iter_mut().for_each(|c| c.truncate(rows));
                general.iter_mut().for_each(|c| c.truncate(rows));
            }
        }
        let finish = |cols: &mut Vec<Col>| cols.iter_mut().map(Col::finish).collect::<Vec<_>>();
        (finish(&mut fast), finish(&mut general), compiled)
    }

    fn assert_same(a: &[ArrayRef], b: &[ArrayRef]) {
        for (x, y) in a.iter().zip(b) {
            x.to_data().validate_full().unwrap();
            assert_eq!(x.to_data(), y.to_data());
        }
    }

    /// The compiled reader gives exactly the general path's columns, and gives up (so the general
    /// path decides) on duplicated fields, merged messages, truncated or corrupted input.
    #[test]
    fn compiled_reader_reads_like_the_general_path() {
        let row = message("diff.v1.Row");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut messages: Vec<Vec<u8>> = Vec::new();
        for i in 0..1500 {
            let mut m = random_message(&mut rng, &row).encode_to_vec();
            match i % 12 {
                8 => {
                    // Two messages concatenated: fields repeat, the last wins, messages merge.
                    m.extend(random_message(&mut rng, &row).encode_to_vec());
                }
                9 if !m.is_empty() => m.truncate(rng.below(m.len() as u64) as usize),
                10 if !m.is_empty() => {
                    let at = rng.below(m.len() as u64) as usize;
                    m[at] ^= 1 << rng.below(8);
                }
                11 => m.extend([0xf8, 0x3e, 0x05, 0x8a, 0x3f, 0x01, 0x00]), // unknown fields 999, 1009
                _ => {}
            }
            messages.push(m);
        }
        // A repeated float written unpacked (parsers must accept both encodings).
        messages.push(vec![0x15, 0, 0, 0x80, 0x3f, 0x15, 0, 0, 0, 0x40]);
        for all_nullable in [false, true] {
            let nodes = message_nodes(&row, "", all_nullable, &mut vec![]).unwrap();
            let (a, b, compiled) = read_both(&row, &nodes, &messages);
            assert_same(&a, &b);
            assert!(a[0].len() > 1000, "{} rows", a[0].len());
            assert!(compiled > 1000, "only {compiled} values took the compiled reader");
        }
        // The decoder itself: compiled reader first, general path where it gives up.
        let mut fast = ProtobufDecoder::new(row.clone(), None).unwrap();
        let mut general = ProtobufDecoder::new(row.clone(), None).unwrap();
        general.general_only = true;
        assert!(fast.plain.as_ref().is_some_and(|w| w.wire.is_some()));
        for m in &messages {
            assert_eq!(fast.decode(None, Some(m)), general.decode(None, Some(m)));
        }
        assert_same(&fast.finish(), &general.finish());
        // An older writer's values, read with the reader's (wider, nullable) columns.
        let older = message("diff.v1.Older");
        let old: Vec<Vec<u8>> = (0..300)
            .map(|_| random_message(&mut rng, &older).encode_to_vec())
            .collect();
        let nodes = message_nodes(&row, "", true, &mut vec![]).unwrap();
        let (a, b, compiled) = read_both(&older, &nodes, &old);
        assert_same(&a, &b);
        assert_eq!(compiled, 300);
    }

    #[test]
    fn maps_have_no_compiled_reader() {
        let m = load_message(
            &ProtoSource::Text("syntax = \"proto3\"; message M { map<string, int32> m = 1; }".into()),
            None,
        )
        .unwrap();
        let nodes = message_nodes(&m, "", false, &mut vec![]).unwrap();
        assert!(compile(&plan(&m, &nodes, "").unwrap(), &nodes).is_none());
    }
}
