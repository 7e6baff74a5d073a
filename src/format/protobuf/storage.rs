//! Column storage for decoded Protobuf values: plain vectors, truncatable (a failed message
//! leaves nothing behind), turned into Arrow arrays when a batch closes.

use super::columns::{map_entries, Node, Ty};
use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, ListArray, MapArray, PrimitiveArray, StringArray, StructArray,
};
use arrow_buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field};
use std::sync::Arc;

#[derive(Debug)]
pub(super) enum Data {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Utf8 {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Binary {
        offsets: Vec<i32>,
        bytes: Vec<u8>,
    },
    Timestamp(Vec<i64>),
    Struct {
        children: Vec<Col>,
        len: usize,
    },
    /// Lists and maps (whose item is the entry struct).
    List {
        offsets: Vec<i32>,
        item: Box<Col>,
    },
}

#[derive(Debug)]
pub(super) struct Col {
    pub(super) field: Field,
    /// Per-row validity, kept for nullable columns only.
    pub(super) validity: Option<Vec<bool>>,
    pub(super) data: Data,
}

pub(super) fn offset(len: usize) -> Result<i32, String> {
    i32::try_from(len).map_err(|_| "batch exceeds 2 GiB in one column; lower batch_size".to_string())
}

impl Col {
    pub(super) fn new(node: &Node) -> Col {
        let element = Col::element(node);
        let (data, field) = if node.list {
            let item = Col {
                field: Field::new("item", element.field.data_type().clone(), false),
                validity: None,
                data: element.data,
            };
            (
                Data::List {
                    offsets: vec![0],
                    item: Box::new(item),
                },
                node.field(),
            )
        } else {
            (element.data, node.field())
        };
        Col {
            validity: node.nullable.then(Vec::new),
            field,
            data,
        }
    }

    /// A column of `node`'s element type (ignoring `list`).
    fn element(node: &Node) -> Col {
        let bytes = || (vec![0], Vec::new());
        let data = match &node.ty {
            Ty::Bool => Data::Bool(Vec::new()),
            Ty::I32 => Data::I32(Vec::new()),
            Ty::I64 => Data::I64(Vec::new()),
            Ty::U32 => Data::U32(Vec::new()),
            Ty::U64 => Data::U64(Vec::new()),
            Ty::F32 => Data::F32(Vec::new()),
            Ty::F64 => Data::F64(Vec::new()),
            Ty::Utf8 => {
                let (offsets, bytes) = bytes();
                Data::Utf8 { offsets, bytes }
            }
            Ty::Binary => {
                let (offsets, bytes) = bytes();
                Data::Binary { offsets, bytes }
            }
            Ty::Timestamp => Data::Timestamp(Vec::new()),
            Ty::Struct(children) => Data::Struct {
                children: children.iter().map(Col::new).collect(),
                len: 0,
            },
            Ty::Map(key, value) => {
                let entries = map_entries(key, value);
                Data::List {
                    offsets: vec![0],
                    item: Box::new(Col {
                        field: entries,
                        validity: None,
                        data: Data::Struct {
                            children: vec![Col::new(key), Col::new(value)],
                            len: 0,
                        },
                    }),
                }
            }
        };
        let field = Field::new(
            &node.name,
            Node {
                list: false,
                ..node.clone()
            }
            .data_type(),
            node.nullable,
        );
        Col {
            field,
            validity: None,
            data,
        }
    }

    pub(super) fn len(&self) -> usize {
        match &self.data {
            Data::Bool(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I64(v) | Data::Timestamp(v) => v.len(),
            Data::U32(v) => v.len(),
            Data::U64(v) => v.len(),
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::Utf8 { offsets, .. } | Data::Binary { offsets, .. } | Data::List { offsets, .. } => {
                offsets.len() - 1
            }
            Data::Struct { len, .. } => *len,
        }
    }

    pub(super) fn truncate(&mut self, rows: usize) {
        if let Some(v) = &mut self.validity {
            v.truncate(rows);
        }
        match &mut self.data {
            Data::Bool(v) => v.truncate(rows),
            Data::I32(v) => v.truncate(rows),
            Data::I64(v) | Data::Timestamp(v) => v.truncate(rows),
            Data::U32(v) => v.truncate(rows),
            Data::U64(v) => v.truncate(rows),
            Data::F32(v) => v.truncate(rows),
            Data::F64(v) => v.truncate(rows),
            Data::Utf8 { offsets, bytes } | Data::Binary { offsets, bytes } => {
                offsets.truncate(rows + 1);
                bytes.truncate(*offsets.last().unwrap_or(&0) as usize);
            }
            Data::Struct { children, len } => {
                *len = (*len).min(rows);
                for c in children {
                    c.truncate(rows);
                }
            }
            Data::List { offsets, item } => {
                offsets.truncate(rows + 1);
                item.truncate(*offsets.last().unwrap_or(&0) as usize);
            }
        }
    }

    /// Marks the row just pushed as valid.
    pub(super) fn valid(&mut self) {
        if let Some(v) = &mut self.validity {
            v.push(true);
        }
    }

    /// Appends a zero row (the slot under a null, or a field the writer does not have in a
    /// column that is not nullable).
    fn push_default(&mut self) -> Result<(), String> {
        match &mut self.data {
            Data::Bool(v) => v.push(false),
            Data::I32(v) => v.push(0),
            Data::I64(v) | Data::Timestamp(v) => v.push(0),
            Data::U32(v) => v.push(0),
            Data::U64(v) => v.push(0),
            Data::F32(v) => v.push(0.0),
            Data::F64(v) => v.push(0.0),
            Data::Utf8 { offsets, bytes } | Data::Binary { offsets, bytes } => {
                offsets.push(offset(bytes.len())?)
            }
            Data::Struct { children, len } => {
                for c in children {
                    c.push_default()?;
                }
                *len += 1;
            }
            Data::List { offsets, .. } => offsets.push(*offsets.last().unwrap_or(&0)),
        }
        self.valid();
        Ok(())
    }

    pub(super) fn push_null(&mut self) -> Result<(), String> {
        self.push_default()?;
        if let Some(v) = &mut self.validity {
            *v.last_mut().expect("a row was just pushed") = false;
        }
        Ok(())
    }

    pub(super) fn finish(&mut self) -> ArrayRef {
        let nulls = self
            .validity
            .as_mut()
            .map(|v| NullBuffer::from(std::mem::take(v)))
            .filter(|n| n.null_count() > 0);
        fn prim<T: arrow_array::ArrowPrimitiveType>(
            v: &mut Vec<T::Native>,
            nulls: Option<NullBuffer>,
        ) -> ArrayRef {
            Arc::new(PrimitiveArray::<T>::new(
                ScalarBuffer::from(std::mem::take(v)),
                nulls,
            ))
        }
        use arrow_array::types::*;
        match &mut self.data {
            Data::Bool(v) => Arc::new(BooleanArray::new(std::mem::take(v).into(), nulls)),
            Data::I32(v) => prim::<Int32Type>(v, nulls),
            Data::I64(v) => prim::<Int64Type>(v, nulls),
            Data::U32(v) => prim::<UInt32Type>(v, nulls),
            Data::U64(v) => prim::<UInt64Type>(v, nulls),
            Data::F32(v) => prim::<Float32Type>(v, nulls),
            Data::F64(v) => prim::<Float64Type>(v, nulls),
            Data::Timestamp(v) => Arc::new(
                PrimitiveArray::<TimestampNanosecondType>::new(ScalarBuffer::from(std::mem::take(v)), nulls)
                    .with_timezone("UTC"),
            ),
            Data::Utf8 { offsets, bytes } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let bytes = Buffer::from_vec(std::mem::take(bytes));
                // Strings come from `String`s (valid UTF-8), checked again here: a batch is built
                // once, so the check is cheap beside decoding.
                Arc::new(StringArray::new(offsets, bytes, nulls))
            }
            Data::Binary { offsets, bytes } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                Arc::new(BinaryArray::new(
                    offsets,
                    Buffer::from_vec(std::mem::take(bytes)),
                    nulls,
                ))
            }
            Data::Struct { children, len } => {
                let rows = std::mem::take(len);
                let DataType::Struct(fields) = self.field.data_type().clone() else {
                    unreachable!("struct columns have struct fields")
                };
                let arrays: Vec<ArrayRef> = children.iter_mut().map(Col::finish).collect();
                if arrays.is_empty() {
                    Arc::new(StructArray::new_empty_fields(rows, nulls))
                } else {
                    Arc::new(StructArray::new(fields, arrays, nulls))
                }
            }
            Data::List { offsets, item } => {
                let offsets = OffsetBuffer::new(ScalarBuffer::from(std::mem::replace(offsets, vec![0])));
                let values = item.finish();
                match self.field.data_type() {
                    DataType::Map(entries, sorted) => {
                        let entries_array = values
                            .as_any()
                            .downcast_ref::<StructArray>()
                            .expect("map entries are structs")
                            .clone();
                        Arc::new(MapArray::new(
                            entries.clone(),
                            offsets,
                            entries_array,
                            nulls,
                            *sorted,
                        ))
                    }
                    DataType::List(item_field) => {
                        Arc::new(ListArray::new(item_field.clone(), offsets, values, nulls))
                    }
                    other => unreachable!("list storage for {other}"),
                }
            }
        }
    }
}
