//! The librdkafka consumer every reader, plan and offsets call starts from: kafka-ml's consumer
//! settings, OAUTHBEARER refreshes, and a drop that closes promptly.

use crate::client::{
    client_config, config_value, ClientHooks, ClientSettings, HasHooks, OpenSslClient, TokenRefresher,
};
use crate::error::{Error, Result};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Consumer context without rebalance handling (planning and assign mode).
#[derive(Default)]
pub(crate) struct PlainContext {
    hooks: ClientHooks,
}
crate::client_context_with_hooks!(PlainContext);
impl ConsumerContext for PlainContext {}

pub(crate) fn new_consumer<C: ConsumerContext + HasHooks + 'static>(
    config: &ClientSettings,
    ctx: C,
) -> Result<ClosingConsumer<C>> {
    let openssl_client = OpenSslClient::claim(config)?;
    let mut cc = client_config(config);
    // Offsets are committed by the reader, only for what the user received.
    cc.set("enable.auto.commit", "false");
    cc.set("enable.auto.offset.store", "false");
    cc.set("enable.partition.eof", "true");
    if config_value(config, "fetch.queue.backoff.ms").is_none() {
        // librdkafka pauses fetching for this long whenever its prefetch queue is above
        // `queued.min.messages`; its 1 s default stalls a consumer that drains the queue faster
        // than that, which a batch decoder does.
        cc.set("fetch.queue.backoff.ms", "10");
    }
    if config_value(config, "auto.offset.reset").is_none() {
        // A training set starts at the beginning unless the user says otherwise.
        cc.set("auto.offset.reset", "earliest");
    }
    if config_value(config, "group.id").is_none() {
        // librdkafka needs a group handle even for explicit assignment. Without a user group
        // nothing is ever committed, so a private name that no one else uses is enough.
        static ANONYMOUS: AtomicU64 = AtomicU64::new(0);
        let n = ANONYMOUS.fetch_add(1, Ordering::Relaxed);
        cc.set(
            "group.id",
            format!("kafka-ml-anonymous-{}-{n}", std::process::id()),
        );
    }
    let consumer: Arc<BaseConsumer<C>> = Arc::new(
        cc.create_with_context(ctx)
            .map_err(|e| Error::kafka("invalid consumer configuration", e))?,
    );
    consumer.context().hooks().keep(openssl_client);
    let token_refresher = TokenRefresher::when_needed(&consumer, consumer.client().native_ptr(), config)?;
    Ok(ClosingConsumer {
        _token_refresher: token_refresher,
        consumer,
    })
}

/// A consumer that closes promptly when dropped.
///
/// rust-rdkafka's `BaseConsumer` drop closes a group consumer by polling in steps of 100 ms until
/// librdkafka reports it closed, and the close seldom posts an event that ends a step early: each
/// drop took 50-150 ms, paid by every `KafkaDataset` when it opens (the planning consumer) and
/// closes. Polling in short steps here returns as soon as the close is done; the inner drop then
/// finds the consumer closed.
pub(crate) struct ClosingConsumer<C: ConsumerContext> {
    /// Serves OAUTHBEARER token refreshes from the application while the consumer lives.
    _token_refresher: Option<TokenRefresher>,
    consumer: Arc<BaseConsumer<C>>,
}

/// How long a drop waits for librdkafka to close a consumer (leave its group) before giving up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

impl<C: ConsumerContext> std::ops::Deref for ClosingConsumer<C> {
    type Target = BaseConsumer<C>;

    fn deref(&self) -> &BaseConsumer<C> {
        &self.consumer
    }
}

impl<C: ConsumerContext> Drop for ClosingConsumer<C> {
    fn drop(&mut self) {
        if self.consumer.close_queue().is_err() {
            return; // the inner drop tries again in its own way
        }
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while !self.consumer.closed() && Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(1));
        }
    }
}
