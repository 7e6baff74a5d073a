//! Avro rows: through the write plan compiled once per send (`write_plan`) where it covers the
//! schema, otherwise value by value through apache-avro, which names the column and row of a
//! value the schema does not take.

use super::write_plan::WritePlan;
use crate::format::encode::{column_error, EncodedRows, RowsBuilder, SAMPLE_ROWS};
use apache_avro::types::Value as AvroValue;
use apache_avro::Schema as AvroSchema;
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_cast::cast::{cast_with_options, CastOptions};
use arrow_schema::DataType;

pub(in crate::format) fn encode(
    batch: &RecordBatch,
    schema: &AvroSchema,
    schema_id: Option<u32>,
) -> Result<EncodedRows, String> {
    let AvroSchema::Record(record) = schema else {
        return Err("the Avro schema must be a record".into());
    };
    let columns: Vec<(&str, &ArrayRef)> = record
        .fields
        .iter()
        .map(|f| {
            batch
                .column_by_name(&f.name)
                .map(|c| (f.name.as_str(), c))
                .ok_or_else(|| format!("Avro field '{}' has no column", f.name))
        })
        .collect::<Result<_, _>>()?;
    let mut out = RowsBuilder::default();
    let mut framed = Vec::new();
    let header = |framed: &mut Vec<u8>| {
        framed.clear();
        if let Some(id) = schema_id {
            framed.push(crate::registry::WIRE_MAGIC);
            framed.extend_from_slice(&id.to_be_bytes());
        }
    };
    if let Some(plan) = WritePlan::compile(batch, schema) {
        header(&mut framed);
        for row in 0..batch.num_rows() {
            if row == SAMPLE_ROWS {
                out.reserve_like_so_far(batch.num_rows() - row);
            }
            let written: Result<(), std::convert::Infallible> = out.push_with(|data| {
                data.extend_from_slice(&framed);
                plan.write_row(row, data);
                Ok(())
            });
            let Ok(()) = written;
        }
        return Ok(out.finish(None));
    }
    for row in 0..batch.num_rows() {
        let fields = columns
            .iter()
            .zip(&record.fields)
            .map(|((name, column), field)| {
                avro_value(column, row, &field.schema)
                    .map(|v| (name.to_string(), v))
                    .map_err(|e| column_error(name, row, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let datum = apache_avro::to_avro_datum(schema, AvroValue::Record(fields))
            .map_err(|e| format!("row {row} does not match the Avro schema: {e}"))?;
        match schema_id {
            Some(id) => {
                framed.clear();
                framed.push(0);
                framed.extend_from_slice(&id.to_be_bytes());
                framed.extend_from_slice(&datum);
                out.push(&framed);
            }
            None => out.push(&datum),
        }
    }
    Ok(out.finish(None))
}

/// One Arrow cell as an Avro value for a field of `schema` (a `["null", T]` union wraps it).
fn avro_value(column: &ArrayRef, row: usize, schema: &AvroSchema) -> Result<AvroValue, String> {
    if let AvroSchema::Union(u) = schema {
        let null_at = u.variants().iter().position(|s| matches!(s, AvroSchema::Null));
        let (idx, inner) = u
            .variants()
            .iter()
            .enumerate()
            .find(|(_, s)| !matches!(s, AvroSchema::Null))
            .ok_or("a union of only null")?;
        return Ok(if column.is_null(row) {
            AvroValue::Union(
                null_at.ok_or("null in a field whose union has no null")? as u32,
                Box::new(AvroValue::Null),
            )
        } else {
            AvroValue::Union(idx as u32, Box::new(avro_value(column, row, inner)?))
        });
    }
    if column.is_null(row) {
        return Err("null in a field that is not nullable".into());
    }
    let items = |values: ArrayRef, item_schema: &AvroSchema| -> Result<AvroValue, String> {
        (0..values.len())
            .map(|i| avro_value(&values, i, item_schema))
            .collect::<Result<Vec<_>, _>>()
            .map(AvroValue::Array)
    };
    Ok(match (column.data_type(), schema) {
        (DataType::FixedSizeList(_, _), AvroSchema::Array(a)) => {
            items(column.as_fixed_size_list().value(row), &a.items)?
        }
        (DataType::List(_), AvroSchema::Array(a)) => items(column.as_list::<i32>().value(row), &a.items)?,
        // A nested record from a struct column: each record field from the struct field of its name.
        (DataType::Struct(_), AvroSchema::Record(r)) => {
            let s = column.as_struct();
            AvroValue::Record(
                r.fields
                    .iter()
                    .map(|f| {
                        let child = s
                            .column_by_name(&f.name)
                            .ok_or_else(|| format!("the struct has no field '{}'", f.name))?;
                        avro_value(child, row, &f.schema)
                            .map(|v| (f.name.clone(), v))
                            .map_err(|e| format!("field '{}': {e}", f.name))
                    })
                    .collect::<Result<_, String>>()?,
            )
        }
        (DataType::Boolean, _) => AvroValue::Boolean(column.as_boolean().value(row)),
        (DataType::Utf8, _) => AvroValue::String(column.as_string::<i32>().value(row).to_string()),
        (DataType::LargeUtf8, _) => AvroValue::String(column.as_string::<i64>().value(row).to_string()),
        (DataType::Binary, _) => AvroValue::Bytes(column.as_binary::<i32>().value(row).to_vec()),
        (DataType::Float32, AvroSchema::Double) => {
            AvroValue::Double(f64::from(column.as_primitive::<Float32Type>().value(row)))
        }
        (DataType::Float32, _) => AvroValue::Float(column.as_primitive::<Float32Type>().value(row)),
        (DataType::Float64, AvroSchema::Float) => {
            AvroValue::Float(column.as_primitive::<Float64Type>().value(row) as f32)
        }
        (DataType::Float64, _) => AvroValue::Double(column.as_primitive::<Float64Type>().value(row)),
        (dt, AvroSchema::Double) if dt.is_integer() => AvroValue::Double(integer(column, row)? as f64),
        (dt, AvroSchema::Float) if dt.is_integer() => AvroValue::Float(integer(column, row)? as f32),
        (dt, AvroSchema::Int) if dt.is_integer() => AvroValue::Int(
            i32::try_from(integer(column, row)?)
                .map_err(|_| "value out of range for Avro int".to_string())?,
        ),
        (dt, _) if dt.is_integer() => AvroValue::Long(integer(column, row)?),
        (dt, s) => return Err(format!("{dt} cannot be written as Avro {s:?}")),
    })
}

fn integer(column: &ArrayRef, row: usize) -> Result<i64, String> {
    let as_i64 = cast_with_options(
        &column.slice(row, 1),
        &DataType::Int64,
        &CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(as_i64.as_primitive::<Int64Type>().value(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode::{encode, EncodeFormat};
    use arrow_array::{Float64Array, Int64Array};
    use std::sync::Arc;

    /// Every row of `batch`, written by the compiled plan, has the bytes apache-avro writes for
    /// the same values (the general path's `avro_value`).
    fn assert_plan_writes_apache_avro_bytes(batch: &RecordBatch, schema: &AvroSchema, what: &str) {
        let plan = WritePlan::compile(batch, schema).unwrap_or_else(|| panic!("a plan for {what}"));
        let AvroSchema::Record(record) = schema else {
            unreachable!()
        };
        for row in 0..batch.num_rows() {
            let mut fast = Vec::new();
            plan.write_row(row, &mut fast);
            let fields = record
                .fields
                .iter()
                .map(|f| {
                    let column = batch.column_by_name(&f.name).unwrap();
                    (f.name.clone(), avro_value(column, row, &f.schema).unwrap())
                })
                .collect();
            let general = apache_avro::to_avro_datum(schema, AvroValue::Record(fields)).unwrap();
            assert_eq!(fast, general, "{what}, row {row}");
        }
    }

    /// Struct columns are written as nested records (and lists of structs as arrays of records),
    /// and read back by the Avro decoder into the same columns.
    #[test]
    fn struct_columns_write_nested_avro_records() {
        use crate::format::{AvroDecoder, Decoder};
        use arrow_array::{Int32Array, ListArray, StringArray, StructArray};
        use arrow_buffer::{NullBuffer, OffsetBuffer};
        use arrow_schema::Field;
        use arrow_schema::Fields;
        let schema_text = r#"{"type": "record", "name": "r", "fields": [
            {"name": "id", "type": "long"},
            {"name": "meta", "type": ["null", {"type": "record", "name": "Meta", "fields": [
                {"name": "source", "type": "string"},
                {"name": "at", "type": {"type": "record", "name": "At", "fields": [
                    {"name": "lat", "type": "double"}]}}]}]},
            {"name": "boxes", "type": {"type": "array", "items": {"type": "record", "name": "Box",
                "fields": [{"name": "w", "type": "int"}]}}}]}"#;
        let schema = AvroSchema::parse_str(schema_text).unwrap();
        let at_fields = Fields::from(vec![Field::new("lat", DataType::Float64, false)]);
        let at = StructArray::new(
            at_fields.clone(),
            vec![Arc::new(Float64Array::from(vec![0.5, 0.0, 2.5]))],
            None,
        );
        let meta_fields = Fields::from(vec![
            Field::new("source", DataType::Utf8, false),
            Field::new("at", DataType::Struct(at_fields), false),
            Field::new("ignored", DataType::Int32, true),
        ]);
        let meta = StructArray::new(
            meta_fields,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
                Arc::new(at),
                Arc::new(Int32Array::from(vec![None, None, Some(1)])),
            ],
            Some(NullBuffer::from(vec![true, false, true])),
        );
        let box_fields = Fields::from(vec![Field::new("w", DataType::Int32, false)]);
        let boxes = ListArray::new(
            Arc::new(Field::new("item", DataType::Struct(box_fields.clone()), false)),
            OffsetBuffer::from_lengths([2, 0, 1]),
            Arc::new(StructArray::new(
                box_fields,
                vec![Arc::new(Int32Array::from(vec![1, 2, 3]))],
                None,
            )),
            None,
        );
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![7, 8, 9])) as ArrayRef),
            ("meta", Arc::new(meta) as ArrayRef),
            ("boxes", Arc::new(boxes) as ArrayRef),
        ])
        .unwrap();
        // The compiled writer gives apache-avro's bytes.
        assert_plan_writes_apache_avro_bytes(&batch, &schema, "nested records");
        let rows = encode(
            &batch,
            &EncodeFormat::Avro {
                schema: schema.clone(),
                schema_id: None,
            },
        )
        .unwrap();
        let mut d = AvroDecoder::new(schema_text, &[], &[], None).unwrap();
        for i in 0..3 {
            d.decode(None, rows.row(i)).unwrap();
        }
        let cols = d.finish();
        assert_eq!(cols[0].as_primitive::<Int64Type>().values(), &[7, 8, 9]);
        let meta = cols[1].as_struct();
        assert_eq!(
            (meta.is_valid(0), meta.is_null(1), meta.is_valid(2)),
            (true, true, true)
        );
        assert_eq!(meta.column(0).as_string::<i32>().value(2), "c");
        let lat = meta
            .column(1)
            .as_struct()
            .column(0)
            .as_primitive::<Float64Type>()
            .clone();
        assert_eq!((lat.value(0), lat.value(2)), (0.5, 2.5));
        let boxes = cols[2].as_list::<i32>();
        assert_eq!(boxes.value_offsets(), &[0, 2, 2, 3]);
        assert_eq!(
            boxes
                .values()
                .as_struct()
                .column(0)
                .as_primitive::<Int32Type>()
                .values(),
            &[1, 2, 3]
        );
        // A record field the struct lacks names the column, the row and the field.
        let bad =
            AvroSchema::parse_str(&schema_text.replace(r#""name": "lat""#, r#""name": "lon""#)).unwrap();
        let err = encode(
            &batch,
            &EncodeFormat::Avro {
                schema: bad,
                schema_id: None,
            },
        )
        .unwrap_err();
        assert!(
            err.contains("column 'meta' row 0: field 'at': the struct has no field 'lon'"),
            "{err}"
        );
        // A null inside a struct that is not null, in a field that is not nullable: the general
        // path names it. (Nulls under a null struct are never written.)
        let meta = batch.column(1).as_struct();
        let source = Arc::new(StringArray::from(vec![Some("a"), None, None])) as ArrayRef;
        let mut children = meta.columns().to_vec();
        children[0] = source;
        let mut fields = meta
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>();
        fields[0] = fields[0].clone().with_nullable(true);
        let meta = StructArray::new(Fields::from(fields), children, meta.nulls().cloned());
        let shown = RecordBatch::try_from_iter([
            ("id", batch.column(0).clone()),
            ("meta", Arc::new(meta) as ArrayRef),
            ("boxes", batch.column(2).clone()),
        ])
        .unwrap();
        assert!(WritePlan::compile(&shown, &schema).is_none());
        let err = encode(
            &shown,
            &EncodeFormat::Avro {
                schema,
                schema_id: None,
            },
        )
        .unwrap_err();
        assert!(
            err.contains("column 'meta' row 2: field 'source': null in a field that is not nullable"),
            "{err}"
        );
    }

    /// The compiled Avro writer gives byte for byte what apache-avro writes from values.
    #[test]
    fn avro_plans_write_like_apache_avro() {
        use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, Int64Builder, ListBuilder};
        use arrow_array::{BinaryArray, BooleanArray, Float32Array, Int32Array, StringArray};
        let schema = AvroSchema::parse_str(
            r#"{"type": "record", "name": "r", "fields": [
                {"name": "id", "type": "long"},
                {"name": "small", "type": "int"},
                {"name": "f", "type": "float"},
                {"name": "d", "type": "double"},
                {"name": "wide", "type": "double"},
                {"name": "ok", "type": "boolean"},
                {"name": "tag", "type": ["null", "string"]},
                {"name": "late", "type": ["long", "null"]},
                {"name": "blob", "type": "bytes"},
                {"name": "x", "type": {"type": "array", "items": "float"}},
                {"name": "ids", "type": {"type": "array", "items": "long"}}]}"#,
        )
        .unwrap();
        let n = 300;
        let mut x = FixedSizeListBuilder::new(Float32Builder::new(), 3);
        let mut ids = ListBuilder::new(Int64Builder::new());
        for i in 0..n {
            x.values().append_slice(&[i as f32, -0.5, 1e-3 * i as f32]);
            x.append(true);
            for k in 0..(i % 4) {
                ids.values().append_value(k * 1_000_000_007 - i);
            }
            ids.append(true);
        }
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 7919 - 1_000_000))) as ArrayRef,
            ),
            (
                "small",
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i - 150))) as ArrayRef,
            ),
            (
                "f",
                Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64 / 3.0))) as ArrayRef,
            ),
            (
                "d",
                Arc::new(Float32Array::from_iter_values((0..n).map(|i| i as f32 * 0.25))) as ArrayRef,
            ),
            (
                "wide",
                Arc::new(Int32Array::from_iter_values(0..n as i32)) as ArrayRef,
            ),
            (
                "ok",
                Arc::new(BooleanArray::from_iter((0..n).map(|i| Some(i % 3 == 0)))) as ArrayRef,
            ),
            (
                "tag",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 5 != 0).then(|| format!("t{i}é"))),
                )) as ArrayRef,
            ),
            (
                "late",
                Arc::new(Int64Array::from_iter(
                    (0..n).map(|i| (i % 2 == 0).then_some(i << 40)),
                )) as ArrayRef,
            ),
            (
                "blob",
                Arc::new(BinaryArray::from_iter_values(
                    (0..n).map(|i| vec![i as u8; (i % 3) as usize]),
                )) as ArrayRef,
            ),
            ("x", Arc::new(x.finish()) as ArrayRef),
            ("ids", Arc::new(ids.finish()) as ArrayRef),
        ])
        .unwrap();
        assert_plan_writes_apache_avro_bytes(&batch, &schema, "flat records");
        // A value out of range keeps the general path, which names column and row.
        let too_big =
            RecordBatch::try_from_iter([("small", Arc::new(Int64Array::from(vec![1, 1 << 40])) as ArrayRef)])
                .unwrap();
        let int_schema = AvroSchema::parse_str(
            r#"{"type": "record", "name": "r", "fields": [{"name": "small", "type": "int"}]}"#,
        )
        .unwrap();
        assert!(WritePlan::compile(&too_big, &int_schema).is_none());
        let err = encode(
            &too_big,
            &EncodeFormat::Avro {
                schema: int_schema,
                schema_id: None,
            },
        )
        .unwrap_err();
        assert!(err.contains("column 'small' row 1"), "{err}");
    }
}
