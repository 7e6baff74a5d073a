//! Builds Arrow `RecordBatch`es from Kafka messages: decoded payload columns plus the metadata
//! columns the user asked for, and the offsets each batch covers.

use crate::error::{Error, Result};
use crate::format::Decoder;
use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, MapBuilder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A metadata column: where and when each message was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaColumn {
    Topic,
    Partition,
    Offset,
    Timestamp,
    Key,
    Headers,
}

impl MetaColumn {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "topic" => MetaColumn::Topic,
            "partition" => MetaColumn::Partition,
            "offset" => MetaColumn::Offset,
            "timestamp" => MetaColumn::Timestamp,
            "key" => MetaColumn::Key,
            "headers" => MetaColumn::Headers,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MetaColumn::Topic => "topic",
            MetaColumn::Partition => "partition",
            MetaColumn::Offset => "offset",
            MetaColumn::Timestamp => "timestamp",
            MetaColumn::Key => "key",
            MetaColumn::Headers => "headers",
        }
    }

    fn field(self) -> Field {
        match self {
            MetaColumn::Topic => Field::new("topic", DataType::Utf8, false),
            MetaColumn::Partition => Field::new("partition", DataType::Int32, false),
            MetaColumn::Offset => Field::new("offset", DataType::Int64, false),
            MetaColumn::Timestamp => Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            MetaColumn::Key => Field::new("key", DataType::Binary, true),
            MetaColumn::Headers => {
                let entries = MapBuilder::new(None, StringBuilder::new(), BinaryBuilder::new()).finish();
                Field::new("headers", entries.data_type().clone(), false)
            }
        }
    }
}

enum MetaBuilder {
    Topic(StringBuilder),
    Partition(Int32Builder),
    Offset(Int64Builder),
    Timestamp(TimestampMillisecondBuilder),
    Key(BinaryBuilder),
    // Boxed: by far the largest builder, and only some datasets ask for headers.
    Headers(Box<MapBuilder<StringBuilder, BinaryBuilder>>),
}

impl MetaBuilder {
    fn new(col: MetaColumn) -> Self {
        match col {
            MetaColumn::Topic => MetaBuilder::Topic(StringBuilder::new()),
            MetaColumn::Partition => MetaBuilder::Partition(Int32Builder::new()),
            MetaColumn::Offset => MetaBuilder::Offset(Int64Builder::new()),
            MetaColumn::Timestamp => MetaBuilder::Timestamp(TimestampMillisecondBuilder::new()),
            MetaColumn::Key => MetaBuilder::Key(BinaryBuilder::new()),
            MetaColumn::Headers => MetaBuilder::Headers(Box::new(MapBuilder::new(
                None,
                StringBuilder::new(),
                BinaryBuilder::new(),
            ))),
        }
    }

    fn append(&mut self, m: &MessageView<'_>) {
        match self {
            MetaBuilder::Topic(b) => b.append_value(m.topic),
            MetaBuilder::Partition(b) => b.append_value(m.partition),
            MetaBuilder::Offset(b) => b.append_value(m.offset),
            MetaBuilder::Timestamp(b) => b.append_option(m.timestamp),
            MetaBuilder::Key(b) => b.append_option(m.key),
            MetaBuilder::Headers(b) => {
                for (k, v) in &m.headers {
                    b.keys().append_value(k);
                    b.values().append_option(*v);
                }
                b.append(true).expect("keys and values were appended together");
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            MetaBuilder::Topic(b) => Arc::new(b.finish()),
            MetaBuilder::Partition(b) => Arc::new(b.finish()),
            MetaBuilder::Offset(b) => Arc::new(b.finish()),
            MetaBuilder::Timestamp(b) => Arc::new(b.finish()),
            MetaBuilder::Key(b) => Arc::new(b.finish()),
            MetaBuilder::Headers(b) => Arc::new(b.finish()),
        }
    }
}

/// What the batch builder needs of one message, independent of librdkafka's types.
#[derive(Debug, Clone)]
pub struct MessageView<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// The next offset to read, per (topic, partition).
pub type OffsetMap = BTreeMap<(String, i32), i64>;

/// Small integer ids for (topic, partition) pairs, so the per-message path compares and indexes
/// instead of allocating and hashing strings. Messages arrive in runs from one partition, so the
/// last id is checked first.
#[derive(Debug, Default)]
pub struct PartitionIds {
    names: Vec<(String, i32)>,
    last: usize,
}

impl PartitionIds {
    pub fn id(&mut self, topic: &str, partition: i32) -> usize {
        if let Some((t, p)) = self.names.get(self.last) {
            if *p == partition && t == topic {
                return self.last;
            }
        }
        let id = match self.names.iter().position(|(t, p)| *p == partition && t == topic) {
            Some(i) => i,
            None => {
                self.names.push((topic.to_string(), partition));
                self.names.len() - 1
            }
        };
        self.last = id;
        id
    }

    pub fn name(&self, id: usize) -> &(String, i32) {
        &self.names[id]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// A finished batch: its rows and the offsets it moves each partition to.
#[derive(Debug, Clone)]
pub struct KafkaBatch {
    pub record_batch: RecordBatch,
    /// For every partition this batch advanced (with rows, or with skipped/dead-lettered
    /// messages), the offset of the next message after it.
    pub next_offsets: OffsetMap,
    /// Messages that were skipped by the `skip` policy inside this batch's offset range.
    pub skipped: u64,
    /// Messages sent to the dead-letter topic inside this batch's offset range.
    pub dead_lettered: u64,
    /// Tombstones (null values) that the format reads as "no row", inside this batch's range.
    pub tombstones: u64,
}

/// Accumulates messages into a batch: the decoder's columns, then metadata columns.
pub struct BatchBuilder {
    decoder: Box<dyn Decoder>,
    meta: Vec<MetaBuilder>,
    schema: SchemaRef,
    rows: usize,
    /// Next offset per partition id advanced in this batch (`NOT_ADVANCED` where none).
    next_offsets: Vec<i64>,
    /// Ids advanced in this batch, in first-seen order.
    advanced: Vec<usize>,
    skipped: u64,
    dead_lettered: u64,
    tombstones: u64,
    /// The decoder's `skips_tombstones`, asked once.
    skips_tombstones: bool,
}

const NOT_ADVANCED: i64 = -1;

impl BatchBuilder {
    pub fn new(decoder: Box<dyn Decoder>, meta_columns: &[MetaColumn]) -> Result<Self> {
        let mut fields: Vec<Field> = decoder.fields().iter().map(|f| f.as_ref().clone()).collect();
        for m in meta_columns {
            if fields.iter().any(|f| f.name() == m.name()) {
                return Err(Error::Config(format!(
                    "metadata column '{}' clashes with a payload column of the same name",
                    m.name()
                )));
            }
            fields.push(m.field());
        }
        Ok(BatchBuilder {
            skips_tombstones: decoder.skips_tombstones(),
            decoder,
            meta: meta_columns.iter().map(|m| MetaBuilder::new(*m)).collect(),
            schema: Arc::new(Schema::new(fields)),
            rows: 0,
            next_offsets: Vec::new(),
            advanced: Vec::new(),
            skipped: 0,
            dead_lettered: 0,
            tombstones: 0,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// True when the builder holds rows or offset progress that has not been handed out.
    pub fn has_progress(&self) -> bool {
        !self.advanced.is_empty()
    }

    /// Whether the `headers` column was asked for (collecting headers costs a call per message).
    pub fn wants_headers(&self) -> bool {
        self.meta.iter().any(|m| matches!(m, MetaBuilder::Headers(_)))
    }

    /// Decodes and appends one message of partition `id`; on failure appends nothing and
    /// returns the reason.
    /// A tombstone of a format that skips them appends no row; it is counted and its offset
    /// consumed.
    pub fn append(&mut self, m: &MessageView<'_>, id: usize) -> std::result::Result<(), String> {
        if m.value.is_none() && self.skips_tombstones {
            self.tombstones += 1;
            self.advance(id, m.offset);
            return Ok(());
        }
        self.decoder.decode(m.key, m.value)?;
        for b in &mut self.meta {
            b.append(m);
        }
        self.rows += 1;
        self.advance(id, m.offset);
        Ok(())
    }

    /// The failure outside the message behind the last failed `append` (see
    /// `Decoder::take_unavailable`).
    pub fn take_unavailable(&mut self) -> Option<crate::error::Error> {
        self.decoder.take_unavailable()
    }

    /// Whether the decoder decodes chunks ahead (see `Decoder::prepare`).
    pub fn decodes_ahead(&self) -> bool {
        self.decoder.decodes_ahead()
    }

    /// Lets the decoder decode these payloads ahead (see `Decoder::prepare`).
    pub fn prepare(&mut self, payloads: &[Option<&[u8]>]) {
        self.decoder.prepare(payloads);
    }

    /// Records that a message was consumed without producing a row (skipped or dead-lettered).
    pub fn advance_past(&mut self, id: usize, offset: i64, dead_lettered: bool) {
        if dead_lettered {
            self.dead_lettered += 1;
        } else {
            self.skipped += 1;
        }
        self.advance(id, offset);
    }

    fn advance(&mut self, id: usize, offset: i64) {
        if id >= self.next_offsets.len() {
            self.next_offsets.resize(id + 1, NOT_ADVANCED);
        }
        if self.next_offsets[id] == NOT_ADVANCED {
            self.advanced.push(id);
        }
        self.next_offsets[id] = offset + 1;
    }

    /// Closes the batch: the rows so far become a `RecordBatch`, and the builder starts over.
    /// `ids` names the partition ids used in `append`.
    pub fn finish(&mut self, ids: &PartitionIds) -> KafkaBatch {
        let mut columns = self.decoder.finish();
        columns.extend(self.meta.iter_mut().map(|b| b.finish()));
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(self.rows));
        let record_batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .expect("decoders build columns that match their declared fields");
        self.rows = 0;
        let mut next_offsets = OffsetMap::new();
        for id in self.advanced.drain(..) {
            next_offsets.insert(ids.name(id).clone(), self.next_offsets[id]);
            self.next_offsets[id] = NOT_ADVANCED;
        }
        KafkaBatch {
            record_batch,
            next_offsets,
            skipped: std::mem::take(&mut self.skipped),
            dead_lettered: std::mem::take(&mut self.dead_lettered),
            tombstones: std::mem::take(&mut self.tombstones),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FormatSpec;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;

    #[test]
    fn metadata_columns_and_offsets() {
        let decoder = FormatSpec::Raw.decoder().unwrap();
        assert!(BatchBuilder::new(FormatSpec::Raw.decoder().unwrap(), &[MetaColumn::Key]).is_err());
        let mut b = BatchBuilder::new(
            decoder,
            &[MetaColumn::Topic, MetaColumn::Offset, MetaColumn::Headers],
        )
        .unwrap();
        let msg = |offset| MessageView {
            topic: "t",
            partition: 0,
            offset,
            timestamp: Some(1),
            key: None,
            value: Some(b"v"),
            headers: vec![("h", Some(b"1".as_slice()))],
        };
        let mut ids = PartitionIds::default();
        let id = ids.id("t", 0);
        b.append(&msg(5), id).unwrap();
        b.advance_past(id, 6, false);
        b.append(&msg(7), id).unwrap();
        let batch = b.finish(&ids);
        assert_eq!(batch.record_batch.num_rows(), 2);
        assert_eq!(batch.next_offsets[&("t".to_string(), 0)], 8);
        assert_eq!(batch.skipped, 1);
        let offsets = batch.record_batch.column_by_name("offset").unwrap();
        assert_eq!(
            offsets.as_primitive::<arrow_array::types::Int64Type>().values(),
            &[5, 7]
        );
        assert_eq!(batch.record_batch.column_by_name("headers").unwrap().len(), 2);
        assert!(!b.has_progress());
    }

    #[test]
    fn tombstones_are_counted_by_formats_that_skip_them() {
        let columns = vec![crate::format::columns::ColumnSpec::parse("id", "int64").unwrap()];
        let spec = FormatSpec::Debezium { columns };
        let mut b = BatchBuilder::new(spec.decoder().unwrap(), &[MetaColumn::Offset]).unwrap();
        let mut ids = PartitionIds::default();
        let id = ids.id("t", 0);
        let msg = |offset, value: Option<&'static [u8]>| MessageView {
            topic: "t",
            partition: 0,
            offset,
            timestamp: None,
            key: Some(b"k"),
            value,
            headers: vec![],
        };
        let delete: &[u8] = br#"{"op": "d", "before": {"id": 4}, "source": {"lsn": 9}}"#;
        b.append(&msg(0, Some(delete)), id).unwrap();
        b.append(&msg(1, None), id).unwrap();
        let batch = b.finish(&ids);
        assert_eq!(batch.record_batch.num_rows(), 1);
        assert_eq!(batch.tombstones, 1);
        assert_eq!(batch.next_offsets[&("t".to_string(), 0)], 2);

        // Other formats still refuse a null value (it would be a row with no data).
        let mut json = BatchBuilder::new(
            FormatSpec::Json {
                columns: vec![crate::format::columns::ColumnSpec::parse("id", "int64").unwrap()],
            }
            .decoder()
            .unwrap(),
            &[],
        )
        .unwrap();
        assert!(json.append(&msg(2, None), id).unwrap_err().contains("tombstone"));
    }
}
