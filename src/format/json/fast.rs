//! Schema-directed single-pass JSON decoding: the fast path of the `json` format.
//!
//! The tape decoder in `json.rs` (simd-json) is the reference: it accepts exactly JSON and
//! names what is wrong with a message. This pass reads the common shape of feature records
//! straight into the column builders: one object whose keys carry no escapes, holding numbers,
//! booleans, nulls, escape-free strings and lists of numbers; undeclared fields are checked and
//! skipped. Each number is parsed once, into its column's type, without a tape, without copying
//! the payload and without a type dispatch per list element.
//!
//! Whatever it does not handle, or finds wrong, it declines. The caller then undoes the partial
//! row and decodes the message with the tape decoder, which either accepts it (a string with
//! escapes, say) or produces the error that names the field. So it never accepts a message the
//! reference rejects, and where both accept they produce the same values: the differential test
//! below checks both on valid and on randomly corrupted messages.
//!
//! Numbers follow the reference's rules: an integer token (no fraction, no exponent) is an
//! `i64` narrowed to the column's type with a range check; any other token is parsed as `f64`
//! (correctly rounded, by the standard library) and then cast to a float column's type, as
//! simd-json's value is. Integer columns given a non-integer token, integers beyond `i64` and
//! `-0` are left to the reference.

use crate::format::columns::{ColumnBuilder, Shape, Values};
use num_traits::NumCast;

/// The message is not decoded here; the reference decoder takes over.
#[derive(Debug)]
pub(super) struct Decline;

type Fast<T> = Result<T, Decline>;

/// Number tokens longer than this go to the reference (the longest shortest-round-trip `f64`,
/// `-2.2250738585072014e-308`, has 24 characters).
const MAX_NUMBER_LEN: usize = 32;

/// 10^0 ..= 10^22: every one is an exact `f64`.
const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// Nesting below which undeclared fields are skipped here (deeper ones go to the reference).
const MAX_SKIP_DEPTH: usize = 32;

/// Appends one row for the JSON object in `input`, or declines. On decline, columns may hold
/// part of the row: the caller truncates them to the rows it had.
pub(super) fn decode_row(columns: &mut [ColumnBuilder], input: &[u8]) -> Fast<()> {
    if columns.len() > 64 {
        return Err(Decline);
    }
    let mut p = Cursor { b: input, i: 0 };
    p.ws();
    p.expect(b'{')?;
    p.ws();
    let mut seen: u64 = 0;
    // Keys usually come in the declared order: try the column after the last one matched first.
    let mut next = 0;
    if p.peek() == Some(b'}') {
        p.i += 1;
    } else {
        loop {
            p.ws();
            let key = p.plain_string()?.as_bytes();
            p.ws();
            p.expect(b':')?;
            p.ws();
            match find_column(columns, key, next) {
                Some(c) => {
                    let bit = 1u64 << c;
                    if seen & bit != 0 {
                        return Err(Decline); // a duplicate key: the reference's rules apply
                    }
                    seen |= bit;
                    next = c + 1;
                    value_into(&mut p, &mut columns[c])?;
                }
                None => p.skip_value(0)?,
            }
            p.ws();
            match p.next_byte()? {
                b',' => continue,
                b'}' => break,
                _ => return Err(Decline),
            }
        }
    }
    p.ws();
    if p.i != input.len() {
        return Err(Decline);
    }
    for (c, col) in columns.iter_mut().enumerate() {
        if seen & (1u64 << c) == 0 {
            col.push_null().map_err(|_| Decline)?;
        }
    }
    Ok(())
}

fn find_column(columns: &[ColumnBuilder], key: &[u8], next: usize) -> Option<usize> {
    match columns.get(next) {
        Some(c) if c.spec.name.as_bytes() == key => Some(next),
        _ => columns.iter().position(|c| c.spec.name.as_bytes() == key),
    }
}

fn value_into(p: &mut Cursor<'_>, col: &mut ColumnBuilder) -> Fast<()> {
    if p.peek() == Some(b'n') {
        p.literal(b"null")?;
        return col.push_null().map_err(|_| Decline);
    }
    match col.spec.shape {
        Shape::Scalar => scalar_into(p, &mut col.values)?,
        Shape::Fixed(_) | Shape::Variable => {
            p.expect(b'[')?;
            p.ws();
            if p.peek() == Some(b']') {
                p.i += 1;
            } else {
                list_into(p, &mut col.values)?;
            }
        }
    }
    // Checks a fixed-length list's element count.
    col.end_row().map_err(|_| Decline)
}

macro_rules! for_numeric_values {
    ($values:expr, $v:ident => $body:expr, _ => $other:expr) => {
        match $values {
            Values::Int8($v) => $body,
            Values::Int16($v) => $body,
            Values::Int32($v) => $body,
            Values::Int64($v) => $body,
            Values::UInt8($v) => $body,
            Values::UInt16($v) => $body,
            Values::UInt32($v) => $body,
            Values::UInt64($v) => $body,
            Values::Float32($v) => $body,
            Values::Float64($v) => $body,
            _ => $other,
        }
    };
}

fn scalar_into(p: &mut Cursor<'_>, values: &mut Values) -> Fast<()> {
    for_numeric_values!(values, v => v.push(p.number()?), _ => match values {
        Values::Bool(v) => v.push(p.boolean()?),
        Values::Bytes(b) => b.push_str(p.plain_string()?).map_err(|_| Decline)?,
        _ => unreachable!("every numeric variant is matched above"),
    });
    Ok(())
}

/// The elements of a non-empty list after its `[`, through its `]`.
fn list_into(p: &mut Cursor<'_>, values: &mut Values) -> Fast<()> {
    for_numeric_values!(values, v => loop {
        p.ws();
        v.push(p.number()?);
        p.ws();
        match p.next_byte()? {
            b',' => continue,
            b']' => return Ok(()),
            _ => return Err(Decline),
        }
    }, _ => Err(Decline))
}

/// A column element type and the reference's rule for turning a JSON number into it.
trait JsonNumber: NumCast + Copy {
    const INTEGER: bool;
}

macro_rules! json_number {
    ($($t:ty => $integer:expr),* $(,)?) => {
        $(impl JsonNumber for $t {
            const INTEGER: bool = $integer;
        })*
    };
}

json_number!(
    i8 => true, i16 => true, i32 => true, i64 => true,
    u8 => true, u16 => true, u32 => true, u64 => true,
    f32 => false, f64 => false,
);

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next_byte(&mut self) -> Fast<u8> {
        let c = self.peek().ok_or(Decline)?;
        self.i += 1;
        Ok(c)
    }

    fn expect(&mut self, c: u8) -> Fast<()> {
        if self.next_byte()? == c {
            Ok(())
        } else {
            Err(Decline)
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Fast<()> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Decline)
        }
    }

    fn boolean(&mut self) -> Fast<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => Err(Decline),
        }
    }

    /// A string without escapes or control characters.
    fn plain_string(&mut self) -> Fast<&'a str> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.next_byte()? {
                b'"' => break,
                b'\\' | 0..=0x1f => return Err(Decline),
                _ => {}
            }
        }
        std::str::from_utf8(&self.b[start..self.i - 1]).map_err(|_| Decline)
    }

    /// A number by JSON's grammar, `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`,
    /// converted by the reference's rules (see the module docs).
    fn number<T: JsonNumber>(&mut self) -> Fast<T> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let negative = b.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        // Decimal digits of the integer and fraction parts, exact while there are at most 19.
        let mut mantissa: u64 = 0;
        let mut digits = 0usize;
        let mut take_digits = |i: &mut usize| {
            let from = *i;
            // Eight bytes at a time where the payload has them left.
            while let Some(chunk) = b.get(*i..*i + 8) {
                let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
                let n = leading_digits(word);
                if n == 0 {
                    break;
                }
                mantissa = mantissa
                    .wrapping_mul(POWERS_OF_TEN_U64[n])
                    .wrapping_add(digits_value(word, n));
                *i += n;
                if n < 8 {
                    break;
                }
            }
            while let Some(&c @ b'0'..=b'9') = b.get(*i) {
                mantissa = mantissa.wrapping_mul(10).wrapping_add((c - b'0') as u64);
                *i += 1;
            }
            digits += *i - from;
            *i - from
        };
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                take_digits(&mut i);
            }
            _ => return Err(Decline),
        }
        let mut integer = true;
        let mut exponent: i32 = 0;
        if b.get(i) == Some(&b'.') {
            integer = false;
            i += 1;
            let fraction = take_digits(&mut i);
            if fraction == 0 {
                return Err(Decline);
            }
            exponent = -(fraction as i32);
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            integer = false;
            i += 1;
            let sign = match b.get(i) {
                Some(b'-') => {
                    i += 1;
                    -1
                }
                Some(b'+') => {
                    i += 1;
                    1
                }
                _ => 1,
            };
            let from = i;
            let mut e: i32 = 0;
            while let Some(&c @ b'0'..=b'9') = b.get(i) {
                e = e * 10 + (c - b'0') as i32;
                i += 1;
                // The reference rejects some extreme exponents; real ones have a few digits.
                if i - from > 3 {
                    return Err(Decline);
                }
            }
            if i == from {
                return Err(Decline);
            }
            exponent += sign * e;
        }
        // Longer tokens (long decimal expansions, huge integers) are left to the reference.
        if i - start > MAX_NUMBER_LEN {
            return Err(Decline);
        }
        self.i = i;
        let value = if integer {
            // At most 18 digits always fit an i64. Longer integers (u64 in the reference) and
            // "-0" are rare: left to the reference.
            if digits > 18 || (negative && mantissa == 0) {
                return Err(Decline);
            }
            let v = mantissa as i64;
            T::from(if negative { -v } else { v })
        } else if T::INTEGER {
            return Err(Decline);
        } else {
            let v = if digits <= 19 && mantissa <= 1 << 53 && (-22..=22).contains(&exponent) {
                // Clinger's fast path: both operands are exact doubles, so the one rounding of
                // the product or quotient is the correctly rounded value of the decimal.
                let m = mantissa as f64;
                let v = if exponent < 0 {
                    m / POWERS_OF_TEN[(-exponent) as usize]
                } else {
                    m * POWERS_OF_TEN[exponent as usize]
                };
                if negative {
                    -v
                } else {
                    v
                }
            } else {
                // The slow path: checking the short ASCII token again costs nothing beside the parse.
                let text = std::str::from_utf8(&b[start..i]).map_err(|_| Decline)?;
                text.parse::<f64>().map_err(|_| Decline)?
            };
            if !v.is_finite() {
                return Err(Decline);
            }
            T::from(v)
        };
        value.ok_or(Decline)
    }

    /// Checks and steps over any JSON value (undeclared fields).
    fn skip_value(&mut self, depth: usize) -> Fast<()> {
        if depth > MAX_SKIP_DEPTH {
            return Err(Decline);
        }
        match self.peek().ok_or(Decline)? {
            b'"' => self.skip_string(),
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip_string()?;
                    self.ws();
                    self.expect(b':')?;
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next_byte()? {
                        b',' => continue,
                        b'}' => return Ok(()),
                        _ => return Err(Decline),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next_byte()? {
                        b',' => continue,
                        b']' => return Ok(()),
                        _ => return Err(Decline),
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            // Parsed, not just scanned: the reference rejects numbers it cannot represent.
            _ => self.number::<f64>().map(|_| ()),
        }
    }

    /// A string with simple escapes; `\u` escapes (surrogate rules) go to the reference.
    fn skip_string(&mut self) -> Fast<()> {
        self.expect(b'"')?;
        let start = self.i;
        let mut ascii = true;
        loop {
            match self.next_byte()? {
                b'"' => return utf8(&self.b[start..self.i - 1], ascii),
                b'\\' => match self.next_byte()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    _ => return Err(Decline),
                },
                0..=0x1f => return Err(Decline),
                c => ascii &= c < 0x80,
            }
        }
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;

const POWERS_OF_TEN_U64: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the eight bytes of `word` (little-endian: the first byte is the lowest) are
/// ASCII digits before the first that is not.
fn leading_digits(word: u64) -> usize {
    // A digit's high nibble is 3, and stays 3 when 6 is added. A byte of 0xFA or more carries
    // into the next byte, but it is itself a non-digit, and only the first non-digit counts.
    let high = (word & (ONES * 0xF0)) ^ (ONES * 0x30);
    let plus6 = (word.wrapping_add(ONES * 0x06) & (ONES * 0xF0)) ^ (ONES * 0x30);
    let non_digit = high | plus6;
    // The top bit of each byte of `non_digit` that is not zero.
    let flags = (((non_digit & (ONES * 0x7F)) + ONES * 0x7F) | non_digit) & (ONES * 0x80);
    (flags.trailing_zeros() / 8) as usize
}

/// The value of the first `n` (1..=8) bytes of `word`, all ASCII digits: fast_float's SWAR
/// conversion, with the digits moved up so the bytes in front read as leading zeros.
fn digits_value(word: u64, n: usize) -> u64 {
    let shift = 8 * (8 - n as u32);
    let v = (word << shift) - ((ONES * 0x30) << shift);
    let v = v.wrapping_mul(10) + (v >> 8);
    const MASK: u64 = 0x0000_00FF_0000_00FF;
    const MUL1: u64 = 100 + (1_000_000 << 32);
    const MUL2: u64 = 1 + (10_000 << 32);
    ((v & MASK)
        .wrapping_mul(MUL1)
        .wrapping_add(((v >> 16) & MASK).wrapping_mul(MUL2)))
        >> 32
}

/// Outside strings JSON is ASCII (the grammar above enforces it); a string may hold any UTF-8.
fn utf8(s: &[u8], ascii: bool) -> Fast<()> {
    if ascii || std::str::from_utf8(s).is_ok() {
        Ok(())
    } else {
        Err(Decline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 8-byte word over digits and the bytes that border them (including ones that carry
    /// in the SWAR addition), four positions at a time, against a byte-by-byte count.
    #[test]
    fn eight_byte_digit_runs() {
        let alphabet: &[u8] = b"0123456789.,]e-/:\xfa\xff ";
        let mut checked = 0;
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        for bytes in [
                            [*a, *b, *c, *d, b'7', b'8', b'9', b'0'],
                            [b'1', b'2', b'3', b'4', *a, *b, *c, *d],
                        ] {
                            let word = u64::from_le_bytes(bytes);
                            let want = bytes.iter().take_while(|c| c.is_ascii_digit()).count();
                            assert_eq!(leading_digits(word), want, "{bytes:?}");
                            if want > 0 {
                                let text = std::str::from_utf8(&bytes[..want]).unwrap();
                                assert_eq!(digits_value(word, want), text.parse::<u64>().unwrap(), "{text}");
                            }
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 2 * alphabet.len().pow(4));
    }
}
