//! Declared column types and the growable, truncatable column storage every decoder writes into.
//!
//! Decoders append one message at a time; a message that fails halfway must leave no trace, so
//! columns keep plain `Vec`s (truncatable) and become Arrow arrays only when a batch closes.
//! `Vec<T>` → Arrow `Buffer` is a move, not a copy.

use arrow_array::types::*;
use arrow_array::{
    ArrayRef, ArrowPrimitiveType, BinaryArray, BooleanArray, FixedSizeListArray, ListArray, PrimitiveArray,
    StringArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, FieldRef};
use std::sync::Arc;

/// The element type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Utf8,
    Binary,
}

impl ScalarType {
    pub fn parse(name: &str) -> Option<Self> {
        use ScalarType::*;
        Some(match name {
            "bool" => Bool,
            "int8" => Int8,
            "int16" => Int16,
            "int32" => Int32,
            "int64" | "int" => Int64,
            "uint8" => UInt8,
            "uint16" => UInt16,
            "uint32" => UInt32,
            "uint64" => UInt64,
            "float32" => Float32,
            "float64" | "float" => Float64,
            "string" | "str" | "utf8" => Utf8,
            "binary" | "bytes" => Binary,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use ScalarType::*;
        match self {
            Bool => "bool",
            Int8 => "int8",
            Int16 => "int16",
            Int32 => "int32",
            Int64 => "int64",
            UInt8 => "uint8",
            UInt16 => "uint16",
            UInt32 => "uint32",
            UInt64 => "uint64",
            Float32 => "float32",
            Float64 => "float64",
            Utf8 => "string",
            Binary => "binary",
        }
    }

    pub fn data_type(self) -> DataType {
        use ScalarType::*;
        match self {
            Bool => DataType::Boolean,
            Int8 => DataType::Int8,
            Int16 => DataType::Int16,
            Int32 => DataType::Int32,
            Int64 => DataType::Int64,
            UInt8 => DataType::UInt8,
            UInt16 => DataType::UInt16,
            UInt32 => DataType::UInt32,
            UInt64 => DataType::UInt64,
            Float32 => DataType::Float32,
            Float64 => DataType::Float64,
            Utf8 => DataType::Utf8,
            Binary => DataType::Binary,
        }
    }

    /// Bytes of one element for fixed-width numeric types.
    pub fn byte_width(self) -> Option<usize> {
        use ScalarType::*;
        match self {
            Int8 | UInt8 => Some(1),
            Int16 | UInt16 => Some(2),
            Int32 | UInt32 | Float32 => Some(4),
            Int64 | UInt64 | Float64 => Some(8),
            Bool | Utf8 | Binary => None,
        }
    }

    pub fn is_integer(self) -> bool {
        self.byte_width().is_some() && !matches!(self, ScalarType::Float32 | ScalarType::Float64)
    }
}

/// Scalar, fixed-length list (`float32[16]`) or variable-length list (`float32[]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Scalar,
    Fixed(usize),
    Variable,
}

/// One declared column: `("x", "float32[16]")`, `("label", "int64")`, `("note", "string?")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ScalarType,
    pub shape: Shape,
    pub nullable: bool,
}

impl ColumnSpec {
    /// Parses a type declaration: `TYPE`, `TYPE[N]`, `TYPE[]`, each optionally followed by `?`
    /// (nullable).
    pub fn parse(name: &str, decl: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "column '{name}': cannot parse type '{decl}' (expected e.g. 'float32', 'int64?', \
                 'float32[16]', 'float64[]', 'string')"
            )
        };
        let decl_trim = decl.trim();
        let (body, nullable) = match decl_trim.strip_suffix('?') {
            Some(b) => (b, true),
            None => (decl_trim, false),
        };
        let (ty_name, shape) = match body.find('[') {
            None => (body, Shape::Scalar),
            Some(i) => {
                let dims = body[i + 1..].strip_suffix(']').ok_or_else(bad)?;
                let shape = if dims.is_empty() {
                    Shape::Variable
                } else {
                    let n: usize = dims.parse().map_err(|_| bad())?;
                    if n == 0 {
                        return Err(bad());
                    }
                    Shape::Fixed(n)
                };
                (&body[..i], shape)
            }
        };
        let ty = ScalarType::parse(ty_name).ok_or_else(bad)?;
        if shape != Shape::Scalar && ty.byte_width().is_none() {
            return Err(format!(
                "column '{name}': lists of {} are not supported",
                ty.name()
            ));
        }
        Ok(ColumnSpec {
            name: name.to_string(),
            ty,
            shape,
            nullable,
        })
    }

    pub fn field(&self) -> Field {
        let item = || Arc::new(Field::new("item", self.ty.data_type(), false));
        let dt = match self.shape {
            Shape::Scalar => self.ty.data_type(),
            Shape::Fixed(n) => DataType::FixedSizeList(item(), n as i32),
            Shape::Variable => DataType::List(item()),
        };
        Field::new(&self.name, dt, self.nullable)
    }
}

/// A number as it came off the wire, before it is narrowed to the column's type.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    I(i64),
    U(u64),
    F(f64),
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::I(v) => write!(f, "{v}"),
            Num::U(v) => write!(f, "{v}"),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

fn narrow<T: num_traits::NumCast + Copy>(n: Num, integer: bool, ty: ScalarType) -> Result<T, String> {
    let out = match n {
        Num::I(v) => T::from(v),
        Num::U(v) => T::from(v),
        Num::F(v) if integer => {
            if v.fract() != 0.0 || !v.is_finite() {
                return Err(format!("expected {}, got non-integer number {v}", ty.name()));
            }
            T::from(v)
        }
        Num::F(v) => T::from(v),
    };
    out.ok_or_else(|| format!("number {n} is out of range for {}", ty.name()))
}

macro_rules! numeric_storage {
    ($($variant:ident => $arrow:ty),* $(,)?) => {
        /// Element storage of one column, typed by its declared element type.
        #[derive(Debug)]
        pub enum Values {
            $($variant(Vec<<$arrow as ArrowPrimitiveType>::Native>),)*
            Bool(Vec<bool>),
            /// Strings and byte strings.
            Bytes(ByteValues),
        }

        impl Values {
            fn new(ty: ScalarType) -> Self {
                match ty {
                    $(ScalarType::$variant => Values::$variant(Vec::new()),)*
                    ScalarType::Bool => Values::Bool(Vec::new()),
                    ScalarType::Utf8 => Values::Bytes(ByteValues::new(true)),
                    ScalarType::Binary => Values::Bytes(ByteValues::new(false)),
                }
            }

            pub fn len(&self) -> usize {
                match self {
                    $(Values::$variant(v) => v.len(),)*
                    Values::Bool(v) => v.len(),
                    Values::Bytes(b) => b.len(),
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            fn truncate(&mut self, len: usize) {
                match self {
                    $(Values::$variant(v) => v.truncate(len),)*
                    Values::Bool(v) => v.truncate(len),
                    Values::Bytes(b) => b.truncate(len),
                }
            }

            /// Appends a number, narrowed to the element type with a range check.
            pub fn push_num(&mut self, n: Num, ty: ScalarType) -> Result<(), String> {
                let integer = ty.is_integer();
                match self {
                    $(Values::$variant(v) => v.push(narrow(n, integer, ty)?),)*
                    _ => return Err(format!("expected {}, got number {n}", ty.name())),
                }
                Ok(())
            }

            /// Appends elements `range` of `other`, a column of the same type.
            fn extend_from(&mut self, other: &Values, range: std::ops::Range<usize>) -> Result<(), String> {
                match (self, other) {
                    $((Values::$variant(v), Values::$variant(o)) => v.extend_from_slice(&o[range]),)*
                    (Values::Bool(v), Values::Bool(o)) => v.extend_from_slice(&o[range]),
                    (Values::Bytes(b), Values::Bytes(o)) => return b.extend_from(o, range),
                    _ => unreachable!("rows are copied between columns of the same type"),
                }
                Ok(())
            }

            /// Appends the type's zero value (the slot under a null).
            fn push_default(&mut self) {
                match self {
                    $(Values::$variant(v) => v.push(Default::default()),)*
                    Values::Bool(v) => v.push(false),
                    Values::Bytes(b) => b.push_empty(),
                }
            }

            /// Appends raw little-endian elements (the `tensor` format).
            pub fn extend_le_bytes(&mut self, bytes: &[u8]) {
                match self {
                    $(Values::$variant(v) => {
                        type N = <$arrow as ArrowPrimitiveType>::Native;
                        const W: usize = std::mem::size_of::<N>();
                        let count = bytes.len() / W;
                        debug_assert_eq!(count * W, bytes.len());
                        v.reserve(count);
                        // SAFETY: `reserve` made room for `count` elements; every bit pattern is
                        // a valid number of this type, and the target is little-endian (checked
                        // at compile time in `format::tensor`), so a byte copy is the decode.
                        unsafe {
                            std::ptr::copy_nonoverlapping(bytes.as_ptr(), v.as_mut_ptr().add(v.len()).cast::<u8>(), count * W);
                            v.set_len(v.len() + count);
                        }
                    })*
                    Values::Bool(v) => v.extend(bytes.iter().map(|b| *b != 0)),
                    Values::Bytes(_) => unreachable!("tensor elements are fixed-width"),
                }
            }

            fn finish(&mut self, ty: ScalarType, nulls: Option<NullBuffer>) -> ArrayRef {
                let taken = std::mem::replace(self, Values::new(ty));
                match taken {
                    $(Values::$variant(v) => Arc::new(PrimitiveArray::<$arrow>::new(ScalarBuffer::from(v), nulls)),)*
                    Values::Bool(v) => Arc::new(BooleanArray::new(BooleanBuffer::from(v), nulls)),
                    Values::Bytes(b) => b.finish(nulls),
                }
            }
        }
    };
}

numeric_storage!(
    Int8 => Int8Type, Int16 => Int16Type, Int32 => Int32Type, Int64 => Int64Type,
    UInt8 => UInt8Type, UInt16 => UInt16Type, UInt32 => UInt32Type, UInt64 => UInt64Type,
    Float32 => Float32Type, Float64 => Float64Type,
);

impl Values {
    pub fn push_bool(&mut self, b: bool, ty: ScalarType) -> Result<(), String> {
        match self {
            Values::Bool(v) => v.push(b),
            _ => return Err(format!("expected {}, got boolean", ty.name())),
        }
        Ok(())
    }

    pub fn push_str(&mut self, s: &str, ty: ScalarType) -> Result<(), String> {
        match self {
            Values::Bytes(b) => b.push_str(s),
            _ => Err(format!("expected {}, got string", ty.name())),
        }
    }

    pub fn push_bytes(&mut self, bytes: &[u8], ty: ScalarType) -> Result<(), String> {
        match self {
            Values::Bytes(b) if !b.utf8 => b.push(bytes),
            _ => Err(format!("expected {}, got bytes", ty.name())),
        }
    }
}

/// The elements of a string or binary column: offsets into one data buffer.
///
/// The fields are private so that a string column's data is valid UTF-8 and its offsets are
/// ascending and within the data, whatever safe code does with it: `finish` builds the Arrow
/// array without validating it again, which is sound only while that holds.
///
/// ```compile_fail,E0451
/// // Safe code outside this module cannot write bytes of its own into a string column.
/// let _ = kafka_ml::format::columns::ByteValues { offsets: vec![0, 1], data: vec![0xff], utf8: true };
/// ```
#[derive(Debug)]
pub struct ByteValues {
    offsets: Vec<i32>,
    data: Vec<u8>,
    /// A `string` column (every element valid UTF-8), not `binary`.
    utf8: bool,
}

impl ByteValues {
    fn new(utf8: bool) -> Self {
        ByteValues {
            offsets: vec![0],
            data: Vec::new(),
            utf8,
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends a string (to a `string` or a `binary` column).
    pub fn push_str(&mut self, s: &str) -> Result<(), String> {
        self.push(s.as_bytes())
    }

    /// Appends bytes whose UTF-8 validity the caller has checked (or a `binary` column's).
    fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        let end = offset_i32(self.data.len() + bytes.len())?;
        self.data.extend_from_slice(bytes);
        self.offsets.push(end);
        Ok(())
    }

    fn push_empty(&mut self) {
        self.offsets.push(*self.offsets.last().unwrap_or(&0));
    }

    fn truncate(&mut self, len: usize) {
        self.offsets.truncate(len + 1);
        self.data.truncate(*self.offsets.last().unwrap_or(&0) as usize);
    }

    /// Appends elements `range` of `other`, a column of the same type.
    fn extend_from(&mut self, other: &ByteValues, range: std::ops::Range<usize>) -> Result<(), String> {
        assert_eq!(
            self.utf8, other.utf8,
            "rows are copied between columns of the same type"
        );
        let o = &other.offsets;
        for i in range {
            self.push(&other.data[o[i] as usize..o[i + 1] as usize])?;
        }
        Ok(())
    }

    fn finish(self, nulls: Option<NullBuffer>) -> ArrayRef {
        // A row whose value was pushed but never ended would misalign the two: a bug, caught
        // here rather than left to the unchecked construction below.
        assert!(
            nulls.as_ref().is_none_or(|n| n.len() == self.len()),
            "{} null flags for {} strings",
            nulls.as_ref().map_or(0, NullBuffer::len),
            self.len()
        );
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        let data = Buffer::from_vec(self.data);
        if self.utf8 {
            // SAFETY: what `try_new` would check holds. The offsets start at 0, ascend and end
            // within `data`: `push` and `truncate`, the only writers, keep them so (an `i32` end
            // is checked before anything is appended). Each element of a string column came
            // from a `&str` (`push_str`) or from another string column (`extend_from`), so it is
            // valid UTF-8 and starts on a character boundary. The null flags count the elements
            // (asserted above). The fields are private: no other code writes them.
            Arc::new(unsafe { StringArray::new_unchecked(offsets, data, nulls) })
        } else {
            Arc::new(BinaryArray::new(offsets, data, nulls))
        }
    }
}

fn offset_i32(len: usize) -> Result<i32, String> {
    i32::try_from(len).map_err(|_| "batch exceeds 2 GiB of string data; lower batch_size".to_string())
}

/// One column being filled: its elements, per-row validity and (for lists) row lengths.
#[derive(Debug)]
pub struct ColumnBuilder {
    pub spec: ColumnSpec,
    pub values: Values,
    /// Per-row validity, kept only for nullable columns.
    validity: Vec<bool>,
    /// Element offsets of variable-length list rows.
    list_offsets: Vec<i32>,
    rows: usize,
}

impl ColumnBuilder {
    pub fn new(spec: ColumnSpec) -> Self {
        let values = Values::new(spec.ty);
        ColumnBuilder {
            spec,
            values,
            validity: Vec::new(),
            list_offsets: vec![0],
            rows: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Marks the end of a non-null row whose elements were pushed into `values`.
    /// For lists, checks the element count against the declared width.
    pub fn end_row(&mut self) -> Result<(), String> {
        let elements = self.values.len();
        match self.spec.shape {
            Shape::Scalar => {}
            Shape::Fixed(n) => {
                let got = elements - self.rows * n;
                if got != n {
                    return Err(format!("expected {n} elements, got {got}"));
                }
            }
            Shape::Variable => self.list_offsets.push(offset_i32(elements)?),
        }
        if self.spec.nullable {
            self.validity.push(true);
        }
        self.rows += 1;
        Ok(())
    }

    /// Appends a null row, or fails if the column is not nullable.
    pub fn push_null(&mut self) -> Result<(), String> {
        if !self.spec.nullable {
            return Err(format!(
                "field '{}' is null or missing but not nullable",
                self.spec.name
            ));
        }
        match self.spec.shape {
            Shape::Scalar => self.values.push_default(),
            Shape::Fixed(n) => (0..n).for_each(|_| self.values.push_default()),
            Shape::Variable => self.list_offsets.push(offset_i32(self.values.len())?),
        }
        self.validity.push(false);
        self.rows += 1;
        Ok(())
    }

    /// Appends row `row` of `other`, a column built from the same spec (rows decoded elsewhere).
    pub fn append_row_from(&mut self, other: &ColumnBuilder, row: usize) -> Result<(), String> {
        debug_assert_eq!(self.spec, other.spec);
        let elements = match self.spec.shape {
            Shape::Scalar => row..row + 1,
            Shape::Fixed(n) => row * n..(row + 1) * n,
            Shape::Variable => other.list_offsets[row] as usize..other.list_offsets[row + 1] as usize,
        };
        self.values.extend_from(&other.values, elements)?;
        if self.spec.shape == Shape::Variable {
            self.list_offsets.push(offset_i32(self.values.len())?);
        }
        if self.spec.nullable {
            self.validity.push(other.validity[row]);
        }
        self.rows += 1;
        Ok(())
    }

    /// Drops everything after the first `rows` rows (undo of a half-decoded message).
    pub fn truncate(&mut self, rows: usize) {
        if rows >= self.rows {
            // A failed append may have pushed elements without ending its row.
            self.truncate_elements_to_rows();
            return;
        }
        self.rows = rows;
        self.validity.truncate(rows);
        self.list_offsets.truncate(rows + 1);
        self.truncate_elements_to_rows();
    }

    fn truncate_elements_to_rows(&mut self) {
        let elements = match self.spec.shape {
            Shape::Scalar => self.rows,
            Shape::Fixed(n) => self.rows * n,
            Shape::Variable => *self.list_offsets.last().unwrap_or(&0) as usize,
        };
        self.values.truncate(elements);
    }

    pub fn field(&self) -> FieldRef {
        Arc::new(self.spec.field())
    }

    /// Turns the rows so far into an Arrow array and starts over.
    pub fn finish(&mut self) -> ArrayRef {
        let nulls = if self.spec.nullable {
            let validity = std::mem::take(&mut self.validity);
            Some(NullBuffer::from(validity)).filter(|n| n.null_count() > 0)
        } else {
            None
        };
        self.rows = 0;
        match self.spec.shape {
            Shape::Scalar => self.values.finish(self.spec.ty, nulls),
            Shape::Fixed(n) => {
                let values = self.values.finish(self.spec.ty, None);
                let item = Arc::new(Field::new("item", self.spec.ty.data_type(), false));
                Arc::new(FixedSizeListArray::new(item, n as i32, values, nulls))
            }
            Shape::Variable => {
                let values = self.values.finish(self.spec.ty, None);
                let offsets = std::mem::replace(&mut self.list_offsets, vec![0]);
                let item = Arc::new(Field::new("item", self.spec.ty.data_type(), false));
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    #[test]
    fn parses_declarations() {
        let c = ColumnSpec::parse("x", "float32[16]").unwrap();
        assert_eq!(
            (c.ty, c.shape, c.nullable),
            (ScalarType::Float32, Shape::Fixed(16), false)
        );
        let c = ColumnSpec::parse("y", "int64?").unwrap();
        assert_eq!(
            (c.ty, c.shape, c.nullable),
            (ScalarType::Int64, Shape::Scalar, true)
        );
        let c = ColumnSpec::parse("z", "float64[]").unwrap();
        assert_eq!(c.shape, Shape::Variable);
        assert!(ColumnSpec::parse("w", "float33")
            .unwrap_err()
            .contains("column 'w'"));
        assert!(ColumnSpec::parse("w", "string[4]").is_err());
        assert!(ColumnSpec::parse("w", "int8[0]").is_err());
    }

    #[test]
    fn narrowing_checks_range_and_integrality() {
        let mut v = Values::new(ScalarType::UInt8);
        assert!(v.push_num(Num::I(255), ScalarType::UInt8).is_ok());
        assert!(v
            .push_num(Num::I(256), ScalarType::UInt8)
            .unwrap_err()
            .contains("out of range"));
        assert!(v
            .push_num(Num::F(1.5), ScalarType::UInt8)
            .unwrap_err()
            .contains("non-integer"));
        assert!(v.push_num(Num::F(2.0), ScalarType::UInt8).is_ok());
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn truncate_undoes_a_half_written_row() {
        let mut c = ColumnBuilder::new(ColumnSpec::parse("x", "float32[2]").unwrap());
        c.values.push_num(Num::F(1.0), ScalarType::Float32).unwrap();
        c.values.push_num(Num::F(2.0), ScalarType::Float32).unwrap();
        c.end_row().unwrap();
        c.values.push_num(Num::F(3.0), ScalarType::Float32).unwrap();
        assert!(c.end_row().unwrap_err().contains("expected 2 elements, got 1"));
        c.truncate(1);
        let arr = c.finish();
        let list = arr.as_fixed_size_list();
        assert_eq!(list.len(), 1);
        assert_eq!(list.values().as_primitive::<Float32Type>().values(), &[1.0, 2.0]);
    }

    /// Strings reach a column through `push_str`, rows copied between columns and truncation;
    /// whatever the path, the array built without validation passes Arrow's full validation.
    #[test]
    fn string_columns_stay_valid_on_every_path() {
        let spec = ColumnSpec::parse("s", "string?").unwrap();
        let mut decoded = ColumnBuilder::new(spec.clone());
        for s in ["héllo", "", "日本"] {
            decoded.values.push_str(s, ScalarType::Utf8).unwrap();
            decoded.end_row().unwrap();
        }
        decoded.push_null().unwrap();
        let mut c = ColumnBuilder::new(spec);
        for row in [2, 0, 3, 1] {
            c.append_row_from(&decoded, row).unwrap();
        }
        c.values.push_str("half a row", ScalarType::Utf8).unwrap();
        c.truncate(4);
        // Bytes are refused by a string column: they could be any bytes.
        assert!(c
            .values
            .push_bytes(b"\xff", ScalarType::Utf8)
            .unwrap_err()
            .contains("expected string"));
        let arr = c.finish();
        arr.to_data().validate_full().unwrap();
        let s = arr.as_string::<i32>();
        assert_eq!(
            (s.value(0), s.value(1), s.is_null(2), s.value(3)),
            ("日本", "héllo", true, "")
        );
    }

    #[test]
    #[should_panic(expected = "null flags for")]
    fn a_value_without_its_row_is_caught_before_the_array_is_built() {
        let mut c = ColumnBuilder::new(ColumnSpec::parse("s", "string?").unwrap());
        c.push_null().unwrap();
        c.values.push_str("no end_row", ScalarType::Utf8).unwrap();
        c.finish();
    }

    #[test]
    fn nullable_strings_round_trip() {
        let mut c = ColumnBuilder::new(ColumnSpec::parse("s", "string?").unwrap());
        c.values.push_str("ab", ScalarType::Utf8).unwrap();
        c.end_row().unwrap();
        c.push_null().unwrap();
        c.values.push_str("c", ScalarType::Utf8).unwrap();
        c.end_row().unwrap();
        let arr = c.finish();
        let s = arr.as_string::<i32>();
        assert_eq!(s.len(), 3);
        assert_eq!(s.value(0), "ab");
        assert!(s.is_null(1));
        assert_eq!(s.value(2), "c");
    }
}
