//! The consumer engine end to end against librdkafka's in-process mock cluster: plan, polling,
//! decoding, batching, offsets and error policies, without Python. (Kafka semantics that the
//! mock does not model are tested against a real broker by the pytest suite.)

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, UInt32Type};
use kafka_ml::admin::EmbeddedCluster;
use kafka_ml::consumer::batch::MetaColumn;
use kafka_ml::consumer::{Dataset, DatasetOptions, ErrorPolicy, Next, Position, Source};
use kafka_ml::error::Error;
use kafka_ml::format::columns::{ColumnSpec, ScalarType};
use kafka_ml::format::FormatSpec;
use kafka_ml::producer::{OutgoingMessage, Producer};
use std::time::Duration;

fn options(bootstrap: &str, topic: &str, format: FormatSpec) -> DatasetOptions {
    DatasetOptions {
        config: vec![("bootstrap.servers".into(), bootstrap.into())].into(),
        source: Source::Topics(vec![topic.into()]),
        format,
        metadata: vec![MetaColumn::Offset],
        batch_size: 7,
        max_wait: Duration::from_millis(50),
        start: Position::Earliest,
        end: Some(Position::Latest),
        on_error: ErrorPolicy::Raise,
        queue_bytes: 1 << 20,
        timeout: Duration::from_secs(10),
        commit: true,
    }
}

fn produce(bootstrap: &str, topic: &str, values: &[Vec<u8>]) {
    let producer =
        Producer::new(&vec![("bootstrap.servers".to_string(), bootstrap.to_string())].into()).unwrap();
    for v in values {
        let msg = OutgoingMessage {
            topic,
            key: None,
            value: Some(v),
            partition: Some(0),
            timestamp: None,
            headers: vec![],
        };
        producer.send_one(&msg, Duration::from_secs(10)).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// Reads a whole pass; returns the batches' row counts and the decoded `value` column.
fn read_pass(ds: &Dataset) -> Result<(Vec<usize>, Vec<u32>), Error> {
    let mut reader = ds.reader(None)?;
    let (mut sizes, mut values) = (Vec::new(), Vec::new());
    loop {
        match reader.next(Duration::from_secs(10))? {
            Next::Batch(b) => {
                sizes.push(b.record_batch.num_rows());
                let col = b.record_batch.column(0).as_fixed_size_list();
                values.extend(col.values().as_primitive::<UInt32Type>().values().iter().copied());
            }
            Next::Pending => {}
            Next::End => return Ok((sizes, values)),
        }
    }
}

#[test]
fn bounded_tensor_read_batches_and_replays() {
    let cluster = EmbeddedCluster::new(1).unwrap();
    let bs = cluster.bootstrap_servers();
    cluster.create_topic("tensors", 1, 1).unwrap();
    produce(
        &bs,
        "tensors",
        &(0u32..20).map(|i| i.to_le_bytes().to_vec()).collect::<Vec<_>>(),
    );
    let ds = Dataset::open(options(
        &bs,
        "tensors",
        FormatSpec::Tensor {
            dtype: ScalarType::UInt32,
            shape: vec![1],
        },
    ))
    .unwrap();
    assert_eq!(ds.len(), Some(20));
    let (sizes, values) = read_pass(&ds).unwrap();
    assert_eq!(values, (0..20).collect::<Vec<_>>());
    assert!(
        sizes.iter().all(|s| *s <= 7),
        "batches close at batch_size: {sizes:?}"
    );
    // A second pass reads the same snapshot.
    assert_eq!(read_pass(&ds).unwrap().1, values);
}

#[test]
fn decode_errors_stop_with_position_or_are_skipped() {
    let cluster = EmbeddedCluster::new(1).unwrap();
    let bs = cluster.bootstrap_servers();
    cluster.create_topic("json", 1, 1).unwrap();
    produce(
        &bs,
        "json",
        &[
            br#"{"id": 1}"#.to_vec(),
            b"oops".to_vec(),
            br#"{"id": 3}"#.to_vec(),
        ],
    );
    let json = FormatSpec::Json {
        columns: vec![ColumnSpec::parse("id", "int64").unwrap()],
    };

    let mut reader = Dataset::open(options(&bs, "json", json.clone()))
        .unwrap()
        .reader(None)
        .unwrap();
    let mut ids = Vec::new();
    let err = loop {
        match reader.next(Duration::from_secs(10)) {
            Ok(Next::Batch(b)) => ids.extend(
                b.record_batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            ),
            Ok(Next::Pending) => {}
            Ok(Next::End) => panic!("the bad message must fail the pass"),
            Err(e) => break e,
        }
    };
    assert_eq!(ids, vec![1], "rows before the bad message are handed out");
    match err {
        Error::Decode { position, reason } => {
            assert_eq!(
                (position.topic.as_str(), position.partition, position.offset),
                ("json", 0, 1)
            );
            assert!(reason.contains("malformed JSON"), "{reason}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        reader.positions()[&("json".to_string(), 0)],
        1,
        "resume points at the bad message"
    );

    let mut skip = options(&bs, "json", json);
    skip.on_error = ErrorPolicy::Skip;
    let mut reader = Dataset::open(skip).unwrap().reader(None).unwrap();
    let mut rows = 0;
    loop {
        match reader.next(Duration::from_secs(10)).unwrap() {
            Next::Batch(b) => rows += b.record_batch.num_rows(),
            Next::Pending => {}
            Next::End => break,
        }
    }
    assert_eq!(rows, 2);
    assert_eq!(reader.stats().skipped, 1);
    assert_eq!(reader.positions()[&("json".to_string(), 0)], 3);
}

#[test]
fn unknown_topic_is_reported() {
    let cluster = EmbeddedCluster::new(1).unwrap();
    let opts = options(&cluster.bootstrap_servers(), "missing", FormatSpec::Raw);
    match Dataset::open(opts) {
        Err(Error::UnknownTopic { what, .. }) => assert!(what.contains("missing")),
        Err(other) => panic!("expected UnknownTopic, got {other:?}"),
        Ok(_) => panic!("expected UnknownTopic"),
    }
}
