//! `json`: one JSON object per message, decoded against declared columns.

use super::fast;
use crate::error::{Error, Result};
use crate::format::columns::{ColumnBuilder, ColumnSpec, Num, Shape};
use crate::format::{require_value, Decoder};
use arrow_array::ArrayRef;
use arrow_schema::FieldRef;
use simd_json::prelude::{TypedValue, ValueAsScalar};
use simd_json::tape::Value;
use simd_json::{Buffers, Tape, ValueType};
use std::time::{Duration, Instant};

pub struct JsonDecoder {
    columns: Vec<ColumnBuilder>,
    /// simd-json parses in place, so each payload is copied into this reused buffer first.
    scratch: Vec<u8>,
    /// Parser scratch space and the parsed tape, reused across messages: parsing allocates
    /// nothing per message once they have grown to the largest payload.
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    rows: usize,
    /// Payloads decoded ahead by `prepare`, in order, and the halves that hold their rows.
    ahead: Vec<DecodedAhead>,
    ahead_next: usize,
    halves: Vec<JsonDecoder>,
    /// Chunks still to decode on the caller's thread alone, after two threads did not overlap.
    sequential_chunks: u32,
}

/// Chunks smaller than this are decoded on the caller's thread as they come.
const PARALLEL_MIN_MESSAGES: usize = 128;

/// Chunks decoded on one thread after a two-thread chunk whose halves did not overlap, before
/// two threads are tried again.
const SEQUENTIAL_CHUNKS_AFTER_NO_OVERLAP: u32 = 64;

/// A two-thread chunk whose wall time exceeds this share of its two halves' times did not
/// overlap (perfect overlap is about one half: each half took half the work).
const NO_OVERLAP_SHARE: f64 = 0.8;

/// One payload decoded ahead: where it was (address and length identify it) and its row in a
/// half, or why it failed.
struct DecodedAhead {
    address: usize,
    len: usize,
    outcome: std::result::Result<(usize, usize), String>,
}

impl JsonDecoder {
    pub fn new(columns: Vec<ColumnSpec>) -> Result<Self> {
        if columns.is_empty() {
            return Err(Error::Config(
                "the json format needs at least one declared column".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for c in &columns {
            if !names.insert(c.name.as_str()) {
                return Err(Error::Config(format!("column '{}' is declared twice", c.name)));
            }
        }
        Ok(JsonDecoder {
            columns: columns.into_iter().map(ColumnBuilder::new).collect(),
            scratch: Vec::new(),
            buffers: Buffers::default(),
            tape: Some(Tape::null()),
            rows: 0,
            ahead: Vec::new(),
            ahead_next: 0,
            halves: Vec::new(),
            sequential_chunks: 0,
        })
    }

    /// Decodes the payloads into this (half) decoder, recording each one's outcome.
    fn decode_all(&mut self, half: usize, payloads: &[Option<&[u8]>], out: &mut Vec<DecodedAhead>) {
        for value in payloads {
            let rows = self.rows;
            let outcome = self.decode(None, *value).map(|()| (half, rows));
            let (address, len) = value.map_or((0, 0), |v| (v.as_ptr() as usize, v.len()));
            out.push(DecodedAhead {
                address,
                len,
                outcome,
            });
        }
    }

    /// The outcome decoded ahead for this payload, if it was prepared.
    fn take_ahead(&mut self, value: &[u8]) -> Option<std::result::Result<(usize, usize), String>> {
        let (address, len) = (value.as_ptr() as usize, value.len());
        // In order, but the caller may have skipped some prepared payloads.
        let found = self.ahead[self.ahead_next..]
            .iter()
            .position(|a| a.address == address && a.len == len)?;
        let at = self.ahead_next + found;
        self.ahead_next = at + 1;
        Some(std::mem::replace(&mut self.ahead[at].outcome, Err(String::new())))
    }

    /// The reference path: parse onto the tape, then append the declared fields.
    fn decode_with_tape(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        self.scratch.clear();
        self.scratch.extend_from_slice(value);
        let mut tape = self.tape.take().unwrap_or_else(Tape::null).reset();
        let result = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape)
            .map_err(|e| format!("malformed JSON: {e}"))
            .and_then(|()| append_object(&mut self.columns, tape.as_value()));
        self.tape = Some(tape.reset());
        result
    }

    /// Appends the row of one payload: decoded ahead, by the fast path, or from the tape. On an
    /// error part of the row may have been appended; `settle` removes it.
    fn append_row(&mut self, value: &[u8]) -> std::result::Result<(), String> {
        if let Some(outcome) = self.take_ahead(value) {
            let (half, row) = outcome?;
            for (c, from) in self.columns.iter_mut().zip(&self.halves[half].columns) {
                c.append_row_from(from, row)?;
            }
            return Ok(());
        }
        if fast::decode_row(&mut self.columns, value).is_ok() {
            return Ok(());
        }
        // Declined: undo whatever part of the row the fast path wrote, then take the tape path.
        self.discard_partial_row();
        self.decode_with_tape(value)
    }

    /// Counts the row just appended, or removes what part of a failed one was appended, so a
    /// message adds exactly one row or none.
    fn settle(&mut self, appended: std::result::Result<(), String>) -> std::result::Result<(), String> {
        match appended {
            Ok(()) => self.rows += 1,
            Err(_) => self.discard_partial_row(),
        }
        appended
    }

    fn discard_partial_row(&mut self) {
        for c in &mut self.columns {
            c.truncate(self.rows);
        }
    }
}

fn append_object(columns: &mut [ColumnBuilder], parsed: Value<'_, '_>) -> std::result::Result<(), String> {
    let Some(object) = parsed.as_object() else {
        return Err(format!("expected a JSON object, got {}", kind(&parsed)));
    };
    for col in columns {
        match object.get(col.spec.name.as_str()) {
            Some(v) if v.value_type() != ValueType::Null => {
                append(col, &v).map_err(|e| format!("field '{}': {e}", col.spec.name))?
            }
            _ => col.push_null()?,
        }
    }
    Ok(())
}

pub(in crate::format) fn kind(v: &Value<'_, '_>) -> &'static str {
    match v.value_type() {
        ValueType::Null => "null",
        ValueType::Bool => "boolean",
        ValueType::String => "string",
        ValueType::Array => "array",
        ValueType::Object => "object",
        _ => "number",
    }
}

pub(in crate::format) fn push_scalar(
    col: &mut ColumnBuilder,
    v: &Value<'_, '_>,
) -> std::result::Result<(), String> {
    let ty = col.spec.ty;
    match v.value_type() {
        ValueType::I64 => col.values.push_num(Num::I(v.as_i64().expect("i64")), ty),
        ValueType::U64 => col.values.push_num(Num::U(v.as_u64().expect("u64")), ty),
        ValueType::F64 => col.values.push_num(Num::F(v.as_f64().expect("f64")), ty),
        ValueType::Bool => col.values.push_bool(v.as_bool().expect("bool"), ty),
        ValueType::String if ty == crate::format::columns::ScalarType::Binary => {
            col.values.push_bytes(v.as_str().expect("str").as_bytes(), ty)
        }
        ValueType::String => col.values.push_str(v.as_str().expect("str"), ty),
        _ => Err(format!("expected {}, got {}", ty.name(), kind(v))),
    }
}

pub(in crate::format) fn append(
    col: &mut ColumnBuilder,
    v: &Value<'_, '_>,
) -> std::result::Result<(), String> {
    match col.spec.shape {
        Shape::Scalar => push_scalar(col, v)?,
        Shape::Fixed(_) | Shape::Variable => {
            let Some(items) = v.as_array() else {
                return Err(format!(
                    "expected an array of {}, got {}",
                    col.spec.ty.name(),
                    kind(v)
                ));
            };
            for (i, item) in items.iter().enumerate() {
                push_scalar(col, &item).map_err(|e| format!("element {i}: {e}"))?;
            }
        }
    }
    col.end_row()
}

impl Decoder for JsonDecoder {
    fn fields(&self) -> Vec<FieldRef> {
        self.columns.iter().map(|c| c.field()).collect()
    }

    fn decode(&mut self, _key: Option<&[u8]>, value: Option<&[u8]>) -> std::result::Result<(), String> {
        let value = require_value(value)?;
        let appended = self.append_row(value);
        self.settle(appended)
    }

    /// Splits the chunk in two: this thread decodes the first half while a scoped thread
    /// decodes the second, each into a decoder of its own; `decode` then copies the rows over
    /// in the caller's order (a copy costs a fraction of a parse). When the two halves did not
    /// run at the same time (no free core), the next chunks are decoded one message at a time.
    fn decodes_ahead(&self) -> bool {
        true
    }

    fn prepare(&mut self, payloads: &[Option<&[u8]>]) {
        self.ahead.clear();
        self.ahead_next = 0;
        for half in &mut self.halves {
            for c in &mut half.columns {
                c.truncate(0);
            }
            half.rows = 0;
        }
        if payloads.len() < PARALLEL_MIN_MESSAGES {
            return;
        }
        if self.sequential_chunks > 0 {
            self.sequential_chunks -= 1;
            return;
        }
        if self.halves.is_empty() {
            let specs: Vec<ColumnSpec> = self.columns.iter().map(|c| c.spec.clone()).collect();
            for _ in 0..2 {
                self.halves
                    .push(JsonDecoder::new(specs.clone()).expect("the same columns were accepted"));
            }
        }
        let (first, second) = payloads.split_at(payloads.len() / 2);
        let (h0, h1) = self.halves.split_at_mut(1);
        let mut second_outcomes = Vec::with_capacity(second.len());
        let started = Instant::now();
        let (mut first_took, mut second_took) = (Duration::ZERO, Duration::ZERO);
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("kafka-ml-decode".into())
                .spawn_scoped(scope, || {
                    let t = Instant::now();
                    h1[0].decode_all(1, second, &mut second_outcomes);
                    t.elapsed()
                })
                .expect("the system can start a thread");
            let t = Instant::now();
            h0[0].decode_all(0, first, &mut self.ahead);
            first_took = t.elapsed();
            second_took = helper.join().expect("decoding does not panic");
        });
        // Where the other cores are busy (a broker on the same machine, other readers), the
        // helper runs only once this thread waits for it: the chunk then costs both halves plus a
        // thread start and the row copies. Decode on this thread alone for a while, then retry.
        let both = (first_took + second_took).as_secs_f64();
        if started.elapsed().as_secs_f64() > NO_OVERLAP_SHARE * both {
            self.sequential_chunks = SEQUENTIAL_CHUNKS_AFTER_NO_OVERLAP;
        }
        self.ahead.append(&mut second_outcomes);
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        self.rows = 0;
        self.columns.iter_mut().map(|c| c.finish()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::test_rng::Rng;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Int64Type};
    use arrow_array::Array;

    fn decoder() -> JsonDecoder {
        JsonDecoder::new(vec![
            ColumnSpec::parse("id", "int64").unwrap(),
            ColumnSpec::parse("x", "float32[3]").unwrap(),
            ColumnSpec::parse("note", "string?").unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn decodes_declared_fields() {
        let mut d = decoder();
        d.decode(
            None,
            Some(br#"{"id": 7, "x": [1, 2.5, 3], "note": "hi", "extra": true}"#),
        )
        .unwrap();
        d.decode(None, Some(br#"{"id": 8, "x": [0, 0, 0]}"#)).unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[7, 8]);
        let x = cols[1].as_fixed_size_list();
        assert_eq!(
            x.values().as_primitive::<Float32Type>().values(),
            &[1.0, 2.5, 3.0, 0.0, 0.0, 0.0]
        );
        assert!(cols[2].is_null(1));
    }

    /// A number as feature records carry them, in the spellings writers use.
    fn feature(r: &mut Rng) -> String {
        let unit = (r.next() % 2_000_001) as f64 / 1e6 - 1.0;
        match r.below(6) {
            0 => format!("{}", r.below(1000) as i64 - 500),
            1 => format!("{unit:.7}"),
            2 => format!("{}e{}", r.below(100), r.below(40) as i64 - 20),
            3 => format!("-{}.{}E+{}", r.below(10), r.below(1000), r.below(5)),
            4 => format!("{}", unit as f32),
            _ => format!("{unit:e}"),
        }
    }

    /// Any number, including ones the reference rejects or that fit no column.
    fn number(r: &mut Rng) -> String {
        match r.below(5) {
            0 => format!("{}", r.next() >> r.below(64)),
            1 => r
                .pick(&[
                    "0",
                    "-0",
                    "0.0",
                    "1e400",
                    "9223372036854775808",
                    "-9223372036854775809",
                ])
                .into(),
            2 => format!("{}", f64::from_bits(r.next() & 0x7fef_ffff_ffff_ffff)),
            _ => feature(r),
        }
    }

    fn value(r: &mut Rng, depth: usize) -> String {
        match r.below(if depth > 2 { 5 } else { 7 }) {
            0 => number(r),
            1 => r.pick(&["true", "false", "null"]).into(),
            2 => r
                .pick(&[
                    r#""plain""#,
                    r#""tab\there""#,
                    r#""\u00e9t\u00e9""#,
                    r#""caf\u00e9 ☕""#,
                    r#""""#,
                ])
                .into(),
            3 | 4 => {
                let n = r.below(5);
                let items: Vec<String> = (0..n).map(|_| number(r)).collect();
                format!("[{}]", items.join(", "))
            }
            5 => format!("[{}, {}]", value(r, depth + 1), value(r, depth + 1)),
            _ => format!(
                r#"{{"k": {}, "k2": {}}}"#,
                value(r, depth + 1),
                value(r, depth + 1)
            ),
        }
    }

    /// A message for `differential_decoder()`'s columns: mostly well-typed, in random key order,
    /// with undeclared fields and random spacing.
    fn message(r: &mut Rng) -> String {
        let odd = |r: &mut Rng| r.below(40) == 0;
        let mut fields = vec![
            (
                "id",
                if odd(r) {
                    value(r, 0)
                } else {
                    format!("{}", r.below(1 << 20))
                },
            ),
            (
                "x",
                if odd(r) {
                    value(r, 0)
                } else {
                    format!("[{}, {}, {}]", feature(r), feature(r), feature(r))
                },
            ),
            (
                "u8",
                if odd(r) {
                    format!("{}", 250 + r.below(10))
                } else {
                    format!("{}", r.below(250))
                },
            ),
            ("f", if odd(r) { value(r, 0) } else { number(r) }),
            (
                "s",
                if odd(r) {
                    value(r, 0)
                } else {
                    r.pick(&[r#""a b""#, r#""é\"x""#, "null"]).into()
                },
            ),
            (
                "b",
                if odd(r) {
                    "1".into()
                } else {
                    r.pick(&["true", "false", "null"]).into()
                },
            ),
            (
                "v",
                if r.below(4) == 0 {
                    value(r, 0)
                } else {
                    format!("[{}, {}]", feature(r), feature(r))
                },
            ),
            ("extra", value(r, 0)),
        ];
        for i in (1..fields.len()).rev() {
            if r.below(3) == 0 {
                fields.swap(i, r.below(i + 1));
            }
        }
        fields.retain(|_| r.below(50) > 0);
        let space = |r: &mut Rng| r.pick(&["", "", " ", "\n  ", "\t"]).to_string();
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}\"{k}\"{}:{}{v}", space(r), space(r), space(r)))
            .collect();
        format!("{}{{{}}}{}", space(r), body.join(","), space(r))
    }

    fn corrupt(r: &mut Rng, msg: &str) -> Vec<u8> {
        let mut b = msg.as_bytes().to_vec();
        for _ in 0..=r.below(2) {
            let at = r.below(b.len() + 1);
            let junks = b"{}[],:\"\\0-.eE+ 9x\x01\xff\xc3";
            let junk = junks[r.below(junks.len())];
            match r.below(3) {
                0 if at < b.len() => {
                    b.remove(at);
                }
                1 if at < b.len() => b[at] = junk,
                _ => b.insert(at, junk),
            }
        }
        b
    }

    fn differential_decoder() -> JsonDecoder {
        JsonDecoder::new(vec![
            ColumnSpec::parse("id", "int64").unwrap(),
            ColumnSpec::parse("x", "float32[3]").unwrap(),
            ColumnSpec::parse("u8", "uint8?").unwrap(),
            ColumnSpec::parse("f", "float64?").unwrap(),
            ColumnSpec::parse("s", "string?").unwrap(),
            ColumnSpec::parse("b", "bool?").unwrap(),
            ColumnSpec::parse("v", "float32[]?").unwrap(),
        ])
        .unwrap()
    }

    #[test]
    fn fast_path_agrees_with_the_tape_decoder() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoder = differential_decoder();
        let mut reference = differential_decoder();
        let mut probe = differential_decoder();
        let (mut fast_rows, mut ok_rows, mut errors) = (0, 0, 0);
        for i in 0..40_000 {
            let msg = message(&mut r);
            let payload = if i % 2 == 0 {
                msg.into_bytes()
            } else {
                corrupt(&mut r, &msg)
            };
            let got = decoder.decode(None, Some(&payload));
            let parsed = reference.decode_with_tape(&payload);
            let want = reference.settle(parsed);
            let text = String::from_utf8_lossy(&payload);
            assert_eq!(got, want, "message {i}: {text}");
            if fast::decode_row(&mut probe.columns, &payload).is_ok() {
                assert!(
                    want.is_ok(),
                    "fast path accepted what the reference rejects: {text}"
                );
                fast_rows += 1;
            }
            for c in &mut probe.columns {
                c.truncate(0);
            }
            if want.is_ok() {
                ok_rows += 1;
            } else {
                errors += 1;
            }
            if i % 1000 == 999 {
                let (got, want) = (decoder.finish(), reference.finish());
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_data(), w.to_data(), "batch ending at message {i}");
                }
            }
        }
        // Both outcomes and both paths are exercised in earnest.
        assert!(
            ok_rows > 8_000 && errors > 8_000,
            "{ok_rows} decoded, {errors} rejected"
        );
        assert!(
            fast_rows > ok_rows / 4 && ok_rows - fast_rows > ok_rows / 4,
            "the fast path took {fast_rows} of {ok_rows} rows"
        );
    }

    #[test]
    fn prepared_chunks_decode_like_one_message_at_a_time() {
        let mut r = Rng(42);
        let payloads: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                let msg = message(&mut r);
                if i % 3 == 0 {
                    corrupt(&mut r, &msg)
                } else {
                    msg.into_bytes()
                }
            })
            .collect();
        let chunk: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
        let (mut ahead, mut plain) = (differential_decoder(), differential_decoder());
        ahead.prepare(&chunk);
        assert_eq!(ahead.ahead.len(), payloads.len());
        // The caller may skip prepared messages (past a bounded read's end, say).
        for (i, p) in payloads.iter().enumerate().filter(|(i, _)| i % 10 != 9) {
            let (got, want) = (ahead.decode(None, Some(p)), plain.decode(None, Some(p)));
            assert_eq!(got, want, "message {i}");
            if i == 500 {
                let (got, want) = (ahead.finish(), plain.finish());
                for (g, w) in got.iter().zip(&want) {
                    assert_eq!(g.to_data(), w.to_data());
                }
            }
        }
        // Every prepared row was taken from the halves, none decoded again.
        assert!(ahead.ahead_next > 990);
        let (got, want) = (ahead.finish(), plain.finish());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.to_data(), w.to_data());
        }
        // Forgetting them: the same bytes decode afresh.
        ahead.prepare(&[]);
        assert!(ahead.take_ahead(&payloads[1]).is_none());
    }

    #[test]
    fn chunks_after_a_chunk_without_overlap_decode_on_one_thread() {
        let mut r = Rng(7);
        let payloads: Vec<Vec<u8>> = (0..300).map(|_| message(&mut r).into_bytes()).collect();
        let chunk: Vec<Option<&[u8]>> = payloads.iter().map(|p| Some(p.as_slice())).collect();
        let (mut ahead, mut plain) = (differential_decoder(), differential_decoder());
        ahead.sequential_chunks = 2; // as after a two-thread chunk whose halves did not overlap
        for round in 0..3 {
            ahead.prepare(&chunk);
            // Two chunks are left to `decode`; the third is split over two threads again.
            assert_eq!(ahead.ahead.len(), if round < 2 { 0 } else { payloads.len() });
            for p in &payloads {
                assert_eq!(ahead.decode(None, Some(p)), plain.decode(None, Some(p)));
            }
            ahead.prepare(&[]);
        }
        let (got, want) = (ahead.finish(), plain.finish());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.to_data(), w.to_data());
        }
    }

    #[test]
    fn bad_messages_name_the_field_and_leave_no_partial_row() {
        let mut d = decoder();
        d.decode(None, Some(br#"{"id": 1, "x": [1, 2, 3]}"#)).unwrap();
        let cases: [(&[u8], &str); 6] = [
            (b"{not json", "malformed JSON"),
            (b"[1, 2]", "expected a JSON object, got array"),
            (
                br#"{"id": "a", "x": [1, 2, 3]}"#,
                "field 'id': expected int64, got string",
            ),
            (br#"{"x": [1, 2, 3]}"#, "field 'id' is null or missing"),
            (
                br#"{"id": 2, "x": [1, 2]}"#,
                "field 'x': expected 3 elements, got 2",
            ),
            (
                br#"{"id": 2, "x": [1, "b", 3]}"#,
                "element 1: expected float32, got string",
            ),
        ];
        for (payload, want) in cases {
            let err = d.decode(None, Some(payload)).unwrap_err();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
        d.decode(None, Some(br#"{"id": 3, "x": [4, 5, 6]}"#)).unwrap();
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[1, 3]);
        assert_eq!(cols[1].as_fixed_size_list().values().len(), 6);
    }
}
