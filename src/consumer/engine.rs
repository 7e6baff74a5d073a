//! The consumer thread: polls librdkafka (one message at a time for group members, or through the
//! batch consume API for assigned readers that never commit), decodes straight into Arrow
//! columns, applies the error policy, closes batches at `batch_size` rows or `max_wait`, and
//! hands them to the reader through the byte-bounded queue.

use super::base::ClosingConsumer;
use super::batch::{BatchBuilder, MessageView, PartitionIds};
use super::batch_consume::{BatchQueue, RawMessage};
use super::dead_letter::DeadLetters;
use super::options::ErrorPolicy;
use super::queue::PushError;
use super::shared::{GroupContext, Item, Shared};
use crate::error::{Error, MessagePosition};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The consumer thread.
pub(super) struct Engine {
    pub(super) shared: Arc<Shared>,
    /// Batch reads of the consumer queue, for assigned readers that never commit (declared
    /// before `consumer` so it is released first).
    pub(super) batch_queue: Option<BatchQueue>,
    pub(super) consumer: Arc<ClosingConsumer<GroupContext>>,
    pub(super) builder: BatchBuilder,
    pub(super) batch_size: usize,
    pub(super) max_wait: Duration,
    /// The last look at the consumer's queue found it empty.
    pub(super) drained: bool,
    pub(super) policy: ErrorPolicy,
    pub(super) dead_letter: Option<DeadLetters>,
    pub(super) ids: PartitionIds,
    /// Exclusive end offset per partition id while it is still being read (bounded reads);
    /// `None` once finished.
    pub(super) ends: Vec<Option<i64>>,
    /// Partitions of a bounded read not yet finished.
    pub(super) remaining: usize,
    pub(super) bounded: bool,
    /// Partitions come from the group (subscribe mode).
    pub(super) subscribed: bool,
    /// The user's consumer group, if any (named in authorization errors).
    pub(super) group: Option<String>,
    pub(super) timeout: Duration,
}

/// Why the poll loop stopped.
enum Stop {
    /// The reader closed, or the queue did.
    Closed,
    Failed(Error),
}

/// Messages taken per call of librdkafka's batch consume API.
pub(super) const BATCH_CONSUME: usize = 1024;

/// How many messages are handled between two looks at the clock while messages keep coming.
const CLOCK_EVERY: u32 = 64;

impl Engine {
    pub(super) fn run(mut self) {
        match self.poll_loop() {
            Ok(()) => {
                let _ = self.emit();
            }
            Err(Stop::Failed(e)) => {
                // Hand out what was decoded before the failure, then the failure.
                if self.emit().is_ok() {
                    let _ = self.push(Item::Error(e));
                }
            }
            Err(Stop::Closed) => {}
        }
        self.shared.queue.close();
    }

    fn poll_loop(&mut self) -> Result<(), Stop> {
        // When the open batch must be handed out even if not full (the latency bound).
        let mut deadline: Option<Instant> = None;
        let mut since_clock = 0u32;
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return Err(Stop::Closed);
            }
            if self.bounded && self.remaining == 0 {
                return Ok(());
            }
            let progressed = if self.batch_queue.is_some() {
                since_clock = CLOCK_EVERY; // one clock read per batch call is cheap
                self.poll_batch(deadline)?
            } else {
                self.poll_one(deadline, &mut since_clock)?
            };
            if self.latency_first() {
                // No deadline: the batch closes when full or when nothing more is waiting.
                if self.builder.rows() >= self.batch_size || (self.drained && self.builder.has_progress()) {
                    self.emit()?;
                }
                continue;
            }
            if progressed && deadline.is_none() {
                deadline = Some(Instant::now() + self.max_wait);
            }
            since_clock += 1;
            let due = since_clock >= CLOCK_EVERY && {
                since_clock = 0;
                deadline.is_some_and(|d| Instant::now() >= d)
            };
            if self.builder.rows() >= self.batch_size || (due && self.builder.has_progress()) {
                self.emit()?;
                deadline = None;
            }
        }
    }

    /// `max_wait == 0`: a batch is handed out as soon as no more input is waiting in the
    /// consumer's queue (or when full), so a lone message is not held back for company, while
    /// under load the queue is rarely empty and batches grow towards `batch_size`.
    fn latency_first(&self) -> bool {
        self.max_wait.is_zero()
    }

    /// How long an empty queue may be waited on without missing the batch deadline.
    fn idle_wait(deadline: Option<Instant>) -> Duration {
        const IDLE_POLL: Duration = Duration::from_millis(100);
        deadline.map_or(IDLE_POLL, |d| {
            d.saturating_duration_since(Instant::now()).min(IDLE_POLL)
        })
    }

    /// One message through rust-rdkafka's `poll` (group consumers: serves rebalances and
    /// commit replies). Returns whether the builder gained progress.
    fn poll_one(&mut self, deadline: Option<Instant>, since_clock: &mut u32) -> Result<bool, Stop> {
        // Messages usually wait in librdkafka's queue: take them without a timeout (and
        // without reading the clock); only an empty queue waits.
        let consumer = self.consumer.clone();
        let mut polled = consumer.poll(Duration::ZERO);
        self.drained = polled.is_none();
        if polled.is_none() {
            if self.latency_first() && self.builder.has_progress() {
                return Ok(false); // hand the batch out now rather than wait for more
            }
            polled = consumer.poll(Self::idle_wait(deadline));
            *since_clock = CLOCK_EVERY;
            // What arrived may have company (a whole fetch lands at once): look again first.
            self.drained = false;
        }
        match polled {
            None => Ok(false),
            Some(Ok(msg)) => self.handle(&msg),
            Some(Err(KafkaError::PartitionEOF(_))) => {
                self.check_positions();
                Ok(false)
            }
            Some(Err(e)) => self.handle_error(e, None).map(|()| false),
        }
    }

    /// Up to `BATCH_CONSUME` messages through librdkafka's batch API. A batch closes exactly at
    /// `batch_size` rows even in the middle of what one call returned.
    fn poll_batch(&mut self, deadline: Option<Instant>) -> Result<bool, Stop> {
        // Taken out while its messages (which borrow it) are handled by `&mut self` methods.
        let mut queue = self.batch_queue.take().expect("batch path has a queue");
        let progressed = self.consume_batch(&mut queue, deadline);
        self.batch_queue = Some(queue);
        progressed
    }

    fn consume_batch(&mut self, queue: &mut BatchQueue, deadline: Option<Instant>) -> Result<bool, Stop> {
        let mut messages = queue
            .fill(Duration::ZERO)
            .map_err(|e| Stop::Failed(Error::kafka("consume", e)))?;
        self.drained = messages.is_empty();
        if messages.is_empty() {
            if self.latency_first() && self.builder.has_progress() {
                return Ok(false); // hand the batch out now rather than wait for more
            }
            drop(messages);
            messages = queue
                .fill(Self::idle_wait(deadline))
                .map_err(|e| Stop::Failed(Error::kafka("consume", e)))?;
            self.drained = false;
        }
        // Decoding is most of the work: the decoder may split it over two threads up front.
        let decodes_ahead = self.builder.decodes_ahead();
        if decodes_ahead {
            let payloads: Vec<Option<&[u8]>> = messages
                .iter()
                .filter(|m| m.error().is_none())
                .map(|m| m.payload())
                .collect();
            self.builder.prepare(&payloads);
        }
        let mut progressed = false;
        for msg in &messages {
            match msg.error() {
                None => progressed |= self.handle(msg)?,
                // Not `check_positions`: librdkafka has already moved every partition's
                // position past the whole batch, so a partition whose last messages follow this
                // EOF in the batch would look finished before they are decoded.
                Some(RDKafkaErrorCode::PartitionEOF) => {
                    self.finish_at_eof(msg.topic(), msg.partition(), msg.offset())
                }
                Some(code) => self.handle_error(
                    KafkaError::MessageConsumption(code),
                    Some((msg.topic(), msg.partition())),
                )?,
            }
            if self.builder.rows() >= self.batch_size {
                self.emit()?;
            }
        }
        if decodes_ahead {
            self.builder.prepare(&[]);
        }
        Ok(progressed)
    }

    /// Decodes one message. Returns whether the builder gained progress.
    fn handle(&mut self, msg: &impl IncomingMessage) -> Result<bool, Stop> {
        let id = self.ids.id(msg.topic(), msg.partition());
        let offset = msg.offset();
        if self.bounded {
            match self.ends.get(id).copied().flatten() {
                Some(end) if offset < end => {}
                // Past the snapshot end (fetched in the same batch) or a finished partition.
                _ => {
                    self.finish_partition(id);
                    return Ok(false);
                }
            }
        }
        let view = MessageView {
            topic: msg.topic(),
            partition: msg.partition(),
            offset,
            timestamp: msg.timestamp_ms(),
            key: msg.key(),
            value: msg.payload(),
            headers: if self.builder.wants_headers() {
                msg.header_list()
            } else {
                Vec::new()
            },
        };
        if let Err(reason) = self.builder.append(&view, id) {
            if let Some(e) = self.builder.take_unavailable() {
                // Not the message's fault: stop before its offset, skipping nothing.
                return Err(Stop::Failed(e));
            }
            let position = MessagePosition {
                topic: view.topic.to_string(),
                partition: view.partition,
                offset,
            };
            match &self.policy {
                ErrorPolicy::Raise => return Err(Stop::Failed(Error::Decode { position, reason })),
                ErrorPolicy::Skip => self.builder.advance_past(id, offset, false),
                ErrorPolicy::DeadLetter { .. } => {
                    let view = MessageView {
                        headers: msg.header_list(),
                        ..view
                    };
                    self.dead_letter
                        .as_ref()
                        .expect("dead-letter policy has a producer")
                        .send(&view, &position, &reason, self.timeout)
                        .map_err(Stop::Failed)?;
                    self.builder.advance_past(id, offset, true);
                }
            }
        }
        if self.bounded
            && self
                .ends
                .get(id)
                .copied()
                .flatten()
                .is_some_and(|end| offset + 1 >= end)
        {
            self.finish_partition(id);
        }
        Ok(true)
    }

    fn finish_partition(&mut self, id: usize) {
        if let Some(slot) = self.ends.get_mut(id) {
            if slot.take().is_some() {
                self.remaining -= 1;
                let (topic, partition) = self.ids.name(id);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(topic, *partition);
                // Stop fetching it; the remaining partitions keep the bandwidth.
                let _ = self.consumer.pause(&tpl);
            }
        }
    }

    /// At an EOF of one partition (batch path): the partition's messages before it have all
    /// been handled, and `eof_offset` (its fetch position) has passed any transaction markers
    /// or compacted-away offsets, so an end at or below it is reached.
    fn finish_at_eof(&mut self, topic: &str, partition: i32, eof_offset: i64) {
        if !self.bounded {
            return;
        }
        let id = self.ids.id(topic, partition);
        if self
            .ends
            .get(id)
            .copied()
            .flatten()
            .is_some_and(|end| eof_offset >= end)
        {
            self.finish_partition(id);
        }
    }

    /// At a partition EOF (poll path): finish every partition whose position reached its end
    /// (covers ends that fall on transaction markers or compacted-away offsets, which yield no
    /// message). `poll` hands out one message at a time, so a position is never ahead of what
    /// was handled; and its EOF event names the partition but not the topic.
    fn check_positions(&mut self) {
        if !self.bounded {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let id = self.ids.id(e.topic(), e.partition());
            if let (Offset::Offset(pos), Some(Some(end))) = (e.offset(), self.ends.get(id)) {
                if pos >= *end {
                    self.finish_partition(id);
                }
            }
        }
    }

    /// A consumer error, with the partition it concerns where known.
    fn handle_error(&mut self, e: KafkaError, partition: Option<(&str, i32)>) -> Result<(), Stop> {
        let code = e.rdkafka_error_code();
        let fatal = matches!(e, KafkaError::MessageConsumptionFatal(_))
            || matches!(
                code,
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownPartition
                        | RDKafkaErrorCode::TopicAuthorizationFailed
                        | RDKafkaErrorCode::GroupAuthorizationFailed
                        | RDKafkaErrorCode::Fatal
                        | RDKafkaErrorCode::OffsetOutOfRange
                )
            );
        if fatal {
            let context = match partition {
                Some((topic, p)) => format!("cannot read topic '{topic}' partition {p}"),
                None => "consumer error".to_owned(),
            };
            let err = Error::kafka(context, e);
            let err = match (code, partition, &self.group) {
                (Some(RDKafkaErrorCode::TopicAuthorizationFailed), Some((topic, _)), _) => {
                    err.denied(format!("topic '{topic}'"), "read")
                }
                (Some(RDKafkaErrorCode::GroupAuthorizationFailed), _, Some(group)) => {
                    err.denied(format!("group '{group}'"), "read")
                }
                _ => err,
            };
            return Err(Stop::Failed(err));
        }
        // Transient (broker restart, network blip): librdkafka reconnects by itself.
        log::warn!("transient consumer error: {e}");
        Ok(())
    }

    /// Closes the current batch and queues it. Dead-lettered messages are acknowledged first,
    /// so no offset past them is handed out (or committed) before they are safe.
    fn emit(&mut self) -> Result<(), Stop> {
        if !self.builder.has_progress() {
            return Ok(());
        }
        if let Some(dead_letter) = &self.dead_letter {
            dead_letter.flush(self.timeout).map_err(Stop::Failed)?;
        }
        let batch = self.builder.finish(&self.ids);
        self.push(Item::Batch(batch))
    }

    fn push(&self, item: Item) -> Result<(), Stop> {
        let bytes = match &item {
            Item::Batch(b) => b.record_batch.get_array_memory_size(),
            Item::Error(_) => 0,
        };
        // A group member that stops polling for `max.poll.interval.ms` is evicted, and its
        // partitions are re-read from the last commit by whoever takes them. While a subscribed
        // reader waits for room, it pauses its partitions and keeps polling instead.
        let keep_polling = self.subscribed;
        let mut item = item;
        loop {
            let wait = if keep_polling {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            match self.shared.queue.push(item, bytes, wait) {
                Ok(()) => {
                    self.resume_if_paused();
                    return Ok(());
                }
                Err(PushError::Closed) => return Err(Stop::Closed),
                Err(PushError::Full(back)) => {
                    if self.shared.stop.load(Ordering::Relaxed) {
                        return Err(Stop::Closed);
                    }
                    item = back;
                    if keep_polling {
                        self.poll_while_paused();
                    }
                }
            }
        }
    }

    /// One poll with every assigned partition paused: serves the group (heartbeat deadline,
    /// rebalances, commit replies) without taking data.
    fn poll_while_paused(&self) {
        if !self.shared.paused.swap(true, Ordering::SeqCst) {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.pause(&assignment);
            }
        }
        match self.consumer.poll(Duration::from_millis(100)) {
            // Fetched before the pause took effect: rewind so it is read again after resume.
            Some(Ok(msg)) => {
                let (topic, partition, offset) = (
                    Message::topic(&msg),
                    Message::partition(&msg),
                    Message::offset(&msg),
                );
                let _ = self
                    .consumer
                    .seek(topic, partition, Offset::Offset(offset), self.timeout);
            }
            Some(Err(e)) => log::warn!("consumer error while the reader's queue is full: {e}"),
            None => {}
        }
    }

    fn resume_if_paused(&self) {
        if self.shared.paused.swap(false, Ordering::SeqCst) {
            if let Ok(assignment) = self.consumer.assignment() {
                let _ = self.consumer.resume(&assignment);
            }
        }
    }
}

/// What the engine reads of a message, from either consume path.
trait IncomingMessage {
    fn topic(&self) -> &str;
    fn partition(&self) -> i32;
    fn offset(&self) -> i64;
    fn timestamp_ms(&self) -> Option<i64>;
    fn key(&self) -> Option<&[u8]>;
    fn payload(&self) -> Option<&[u8]>;
    fn header_list(&self) -> Vec<(&str, Option<&[u8]>)>;
}

impl IncomingMessage for rdkafka::message::BorrowedMessage<'_> {
    fn topic(&self) -> &str {
        Message::topic(self)
    }
    fn partition(&self) -> i32 {
        Message::partition(self)
    }
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        Message::timestamp(self).to_millis()
    }
    fn key(&self) -> Option<&[u8]> {
        Message::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        Message::payload(self)
    }
    fn header_list(&self) -> Vec<(&str, Option<&[u8]>)> {
        Message::headers(self)
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default()
    }
}

impl IncomingMessage for RawMessage<'_> {
    fn topic(&self) -> &str {
        RawMessage::topic(self)
    }
    fn partition(&self) -> i32 {
        RawMessage::partition(self)
    }
    fn offset(&self) -> i64 {
        RawMessage::offset(self)
    }
    fn timestamp_ms(&self) -> Option<i64> {
        RawMessage::timestamp(self)
    }
    fn key(&self) -> Option<&[u8]> {
        RawMessage::key(self)
    }
    fn payload(&self) -> Option<&[u8]> {
        RawMessage::payload(self)
    }
    fn header_list(&self) -> Vec<(&str, Option<&[u8]>)> {
        RawMessage::headers(self)
    }
}
