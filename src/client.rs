//! The librdkafka configuration every kafka-ml client (consumer, producer, admin) starts from.

use rdkafka::config::ClientConfig;

/// The value of `key` in a user's config (the last one given wins, as in librdkafka).
pub(crate) fn config_value<'a>(config: &'a [(String, String)], key: &str) -> Option<&'a str> {
    config
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A client configuration: the user's properties over kafka-ml's defaults for every client.
pub(crate) fn client_config(config: &[(String, String)]) -> ClientConfig {
    let mut cc = ClientConfig::new();
    // librdkafka replaces its bootstrap connection by one to the broker the first metadata
    // names, which fails the application's metadata request in flight; the retry waits for the
    // next connection slot, half of `reconnect.backoff.ms` (at least 11 ms). With librdkafka's
    // 100 ms default every new client's first metadata request (each dataset open, a producer's
    // first send) took about 55 ms; with 20 ms it takes about 15 ms. This is only the first step
    // of the reconnect backoff, which still doubles up to `reconnect.backoff.max.ms` (10 s).
    cc.set("reconnect.backoff.ms", "20");
    for (k, v) in config {
        cc.set(k, v);
    }
    cc
}
