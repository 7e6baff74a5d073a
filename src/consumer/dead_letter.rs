//! Dead letters (`on_error="dead_letter"`): a message that cannot be decoded goes, with its raw
//! key, value and headers, the reason and where it came from, to a topic of its own.

use super::batch::MessageView;
use crate::client::ClientSettings;
use crate::error::{MessagePosition, Result};
use crate::headers as names;
use crate::producer::{OutgoingMessage, Producer};
use std::time::Duration;

/// The dead-letter topic and the producer that writes to it.
pub(super) struct DeadLetters {
    producer: Producer,
    topic: String,
}

impl DeadLetters {
    pub(super) fn new(config: &ClientSettings, topic: &str) -> Result<Self> {
        Ok(DeadLetters {
            producer: Producer::new(&config.shared())?,
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
        headers.push((names::ERROR, Some(reason.as_bytes())));
        headers.push((names::SOURCE_TOPIC, Some(position.topic.as_bytes())));
        headers.push((names::SOURCE_PARTITION, Some(partition.as_bytes())));
        headers.push((names::SOURCE_OFFSET, Some(offset.as_bytes())));
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
