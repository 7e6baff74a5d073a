//! Table sends: an Arrow stream in, one message per row out. The rows are collected and
//! concatenated, checked against declared columns (`conform`), encoded in Rust (on a second
//! thread while the first chunks are queued, for large JSON sends), checked against
//! `message.max.bytes`, and queued with their keys and headers.

use super::{Producer, RowBatch, SendTracker};
use crate::error::Error;
use crate::format::columns::ColumnSpec;
use crate::format::{self as encode, EncodeFormat, EncodedRows};
use arrow_array::{Array, ArrayRef, RecordBatch, RecordBatchReader};
use std::sync::Arc;
use std::time::Duration;

/// How long a send waits for room in librdkafka's queue before failing.
pub(crate) const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything one table send needs, owned, so it can run on the runtime's blocking pool.
pub(crate) struct TableSend {
    pub(crate) topic: String,
    pub(crate) reader: Box<dyn RecordBatchReader + Send>,
    pub(crate) format: EncodeFormat,
    pub(crate) columns: Option<Vec<ColumnSpec>>,
    pub(crate) key_column: Option<String>,
    pub(crate) keys: Option<ArrayRef>,
    pub(crate) partition: Option<i32>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
    pub(crate) row_headers: Vec<(String, ArrayRef)>,
    pub(crate) timestamp: Option<i64>,
    pub(crate) timeout: Duration,
}

impl TableSend {
    /// Validates and encodes every row (a bad row anywhere sends nothing), checks sizes and the
    /// topic, then queues one message per row. Row numbers in errors count from the input's
    /// first row.
    pub(crate) fn run(mut self, producer: &Producer) -> Result<Arc<SendTracker>, Error> {
        let schema = self.reader.schema();
        let reader = std::mem::replace(
            &mut self.reader,
            Box::new(arrow_array::RecordBatchIterator::new([], schema.clone())),
        );
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Encode(format!("cannot read the input: {e}")))?;
        let batch = match batches.len() {
            1 => batches.into_iter().next().expect("one batch"),
            _ => arrow_select::concat::concat_batches(&schema, &batches)
                .map_err(|e| Error::Encode(e.to_string()))?,
        };
        let batch = match &self.columns {
            Some(cs) => encode::conform(&batch, cs).map_err(Error::Encode)?,
            None => batch,
        };
        if self.can_encode_while_sending(&batch, producer) {
            return self.send_encoding_while_sending(&batch, producer);
        }
        let values = encode::encode(&batch, &self.format).map_err(Error::Encode)?;
        producer.check_sizes(&values)?;
        let keys = self.encode_keys(&batch)?;
        let row_headers = self
            .row_headers
            .iter()
            .map(|(name, array)| {
                keys_from_array(array, values.len())
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::Encode(format!("header '{name}': {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        producer.check_topic(&self.topic, self.timeout)?;
        let rows = RowBatch {
            topic: &self.topic,
            values: &values,
            keys: keys.as_ref(),
            partition: self.partition,
            timestamp: self.timestamp,
            headers: &self.headers,
            row_headers: &row_headers,
        };
        producer.send_rows(&rows, ENQUEUE_TIMEOUT)
    }
}

/// Rows per chunk when a send encodes while it queues.
const ENCODE_CHUNK: usize = 65_536;

impl TableSend {
    /// The message keys: a column of the batch, or an array with one key per row.
    fn encode_keys(&self, batch: &RecordBatch) -> Result<Option<EncodedRows>, Error> {
        Ok(match (&self.key_column, &self.keys) {
            (Some(name), _) => Some(encode::keys_from_column(batch, name).map_err(Error::Encode)?),
            (None, Some(array)) => Some(keys_from_array(array, batch.num_rows())?),
            (None, None) => None,
        })
    }

    /// A large JSON send of fixed-width columns without headers or timestamps can queue its
    /// first rows while later ones are encoded: every row is checked up front, and no row's
    /// JSON can exceed `message.max.bytes` (bounded by the schema), so nothing is found wrong
    /// once sending has begun.
    fn can_encode_while_sending(&self, batch: &RecordBatch, producer: &Producer) -> bool {
        matches!(self.format, EncodeFormat::Json)
            && batch.num_rows() > ENCODE_CHUNK
            && self.headers.is_empty()
            && self.row_headers.is_empty()
            && self.timestamp.is_none()
            && encode::json_row_bound(batch.schema_ref()).is_some_and(|b| b <= producer.max_message_bytes())
    }

    /// Encodes chunk after chunk on a second thread while this one queues the finished ones.
    fn send_encoding_while_sending(
        &self,
        batch: &RecordBatch,
        producer: &Producer,
    ) -> Result<Arc<SendTracker>, Error> {
        encode::validate_json(batch).map_err(Error::Encode)?;
        let rows = batch.num_rows();
        let keys = self.encode_keys(batch)?;
        producer.check_topic(&self.topic, self.timeout)?;
        std::thread::scope(|scope| {
            // Two chunks ahead at most: memory stays bounded whatever the send's size.
            let (encoded, chunks) = std::sync::mpsc::sync_channel(2);
            std::thread::Builder::new()
                .name("kafka-ml-encode".into())
                .spawn_scoped(scope, move || {
                    for start in (0..rows).step_by(ENCODE_CHUNK) {
                        let len = ENCODE_CHUNK.min(rows - start);
                        let chunk = encode::encode(&batch.slice(start, len), &EncodeFormat::Json)
                            .map_err(Error::Encode);
                        if encoded.send(chunk).is_err() {
                            return; // the send stopped
                        }
                    }
                })
                .map_err(|e| Error::Config(format!("cannot start an encoding thread: {e}")))?;
            producer.send_chunks(
                &self.topic,
                rows,
                keys.as_ref(),
                self.partition,
                chunks.into_iter(),
                ENQUEUE_TIMEOUT,
            )
        })
    }
}

fn keys_from_array(array: &ArrayRef, rows: usize) -> Result<EncodedRows, Error> {
    if array.len() != rows {
        return Err(Error::Encode(format!("{} keys for {rows} rows", array.len())));
    }
    let one =
        RecordBatch::try_from_iter([("key", array.clone())]).map_err(|e| Error::Encode(e.to_string()))?;
    encode::keys_from_column(&one, "key").map_err(Error::Encode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::EmbeddedCluster;
    use arrow_array::{Float64Array, Int64Array, RecordBatchIterator};
    use arrow_schema::{DataType, Field, Schema};

    fn producer(cluster: &EmbeddedCluster) -> Producer {
        Producer::new(&vec![("bootstrap.servers".to_string(), cluster.bootstrap_servers())].into()).unwrap()
    }

    /// A JSON send of `inputs` (one float column `x`, one batch per input) declared as int64.
    fn json_send(inputs: Vec<Vec<f64>>) -> TableSend {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let batches: Vec<_> = inputs
            .into_iter()
            .map(|xs| RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(xs))]))
            .collect();
        TableSend {
            topic: "sends".into(),
            reader: Box::new(RecordBatchIterator::new(batches, schema)),
            format: EncodeFormat::Json,
            columns: Some(vec![ColumnSpec::parse("x", "int64").unwrap()]),
            key_column: None,
            keys: Some(Arc::new(Int64Array::from_iter_values(0..5)) as ArrayRef),
            partition: Some(0),
            headers: vec![("h".into(), Some(b"v".to_vec()))],
            row_headers: Vec::new(),
            timestamp: None,
            timeout: Duration::from_secs(10),
        }
    }

    /// Rows of every input batch are sent, one message per row, and all delivered.
    #[test]
    fn every_row_of_every_input_batch_is_delivered() {
        let cluster = EmbeddedCluster::new(1).unwrap();
        cluster.create_topic("sends", 1, 1).unwrap();
        let producer = producer(&cluster);
        let tracker = json_send(vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0]])
            .run(&producer)
            .unwrap();
        assert_eq!(tracker.rows(), 5);
        assert!(tracker.wait(Duration::from_secs(30)), "reports missing");
        tracker.outcome().unwrap();
        assert_eq!((tracker.delivered(), producer.sent()), (5, 5));
    }

    /// A row that does not conform fails the whole send before anything is queued, named by its
    /// number in the input (counted over every input batch).
    #[test]
    fn a_bad_row_sends_nothing_and_is_named_from_the_first_input_row() {
        let cluster = EmbeddedCluster::new(1).unwrap();
        let producer = producer(&cluster);
        let Err(err) = json_send(vec![vec![1.0, 2.0], vec![3.0, 4.5, 5.0]]).run(&producer) else {
            panic!("a bad row was sent")
        };
        match err {
            Error::Encode(what) => assert!(what.contains("row 3") && what.contains("4.5"), "{what}"),
            other => panic!("expected an encode error, got {other:?}"),
        }
        assert_eq!(producer.sent(), 0);
    }

    /// A large JSON send encodes on a second thread while its first chunks are queued, and
    /// sends every row exactly once.
    #[test]
    fn a_large_json_send_encodes_while_it_sends() {
        let cluster = EmbeddedCluster::new(1).unwrap();
        cluster.create_topic("sends", 1, 1).unwrap();
        let producer = producer(&cluster);
        let rows = ENCODE_CHUNK * 2 + 10;
        let mut send = json_send(vec![(0..rows).map(|i| i as f64).collect()]);
        send.keys = None;
        send.headers = Vec::new();
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        )])
        .unwrap();
        assert!(send.can_encode_while_sending(&batch, &producer));
        let tracker = send.run(&producer).unwrap();
        assert_eq!(tracker.rows(), rows);
        assert!(tracker.wait(Duration::from_secs(60)), "reports missing");
        tracker.outcome().unwrap();
        assert_eq!(producer.sent(), rows as u64);
    }
}
