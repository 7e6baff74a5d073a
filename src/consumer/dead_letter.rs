//! Dead letters (`on_error="dead_letter"`): a message that cannot be decoded goes, with its raw
//! key, value and headers, the reason and where it came from, to a topic of its own.

use super::batch::MessageView;
use crate::client::ClientSettings;
use crate::error::{MessagePosition, Result};
use crate::producer::{OutgoingMessage, Producer};
use std::time::Duration;

/// The dead-letter topic and the producer that writes to it.
pub(super) struct DeadLetters {
    producer: Producer,
    topic: String,
}

impl DeadLetters {
    pub(super) fn new(config: &ClientSettings, topic: &str) -> Result<Self> {
        // The dead-letter producer shares the connection settings, not consumer ones.
        let producer_config = config.with_properties(
            config
                .iter()
                .filter(|(k, _)| is_common_property(k))
                .cloned()
                .collect(),
        );
        Ok(DeadLetters {
            producer: Producer::new(&producer_config)?,
            topic: topic.to_owned(),
        })
    }

    /// Queues the message with the reason and its source position as headers.
    pub(super) fn send(
        &self,
        m: &MessageView<'_>,
        position: &MessagePosition,
        reason: &str,
        timeout: Duration,
    ) -> Result<()> {
        let partition = position.partition.to_string();
        let offset = position.offset.to_string();
        let mut headers = m.headers.clone();
        headers.push(("kafka_ml.error", Some(reason.as_bytes())));
        headers.push(("kafka_ml.source.topic", Some(position.topic.as_bytes())));
        headers.push(("kafka_ml.source.partition", Some(partition.as_bytes())));
        headers.push(("kafka_ml.source.offset", Some(offset.as_bytes())));
        self.producer.send_one(
            &OutgoingMessage {
                topic: &self.topic,
                key: m.key,
                value: m.value,
                partition: None,
                timestamp: m.timestamp,
                headers,
            },
            timeout,
        )?;
        Ok(())
    }

    /// Waits until every dead letter sent so far is acknowledged.
    pub(super) fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout)
    }
}

/// librdkafka properties that make sense for a producer too (connection and security).
fn is_common_property(key: &str) -> bool {
    key == "bootstrap.servers"
        || key == "metadata.broker.list"
        || key == "client.id"
        || key.starts_with("security.")
        || key.starts_with("ssl.")
        || key.starts_with("sasl.")
        || key.starts_with("socket.")
        || key.starts_with("broker.")
        || key == "debug"
}
