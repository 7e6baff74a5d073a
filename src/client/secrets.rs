//! Secrets: the librdkafka properties whose values are secret, and the scrubbing of every
//! secret value this process has configured from all the library prints.

use arc_swap::ArcSwapOption;
use std::borrow::Cow;
use std::sync::Arc;

/// librdkafka properties whose values are secrets (librdkafka's CONFIGURATION.md marks them
/// sensitive). Their values never appear in an error, a log record or a `Debug` output.
pub const SECRET_PROPERTIES: &[&str] = &[
    "sasl.password",
    "sasl.oauthbearer.client.secret",
    "sasl.oauthbearer.client.credentials.client.secret",
    "sasl.oauthbearer.config",
    "sasl.oauthbearer.assertion.private.key.passphrase",
    "sasl.oauthbearer.assertion.private.key.pem",
    "ssl.key.password",
    "ssl.key.pem",
    "ssl_key",
    "ssl.keystore.password",
    "ssl.truststore.password",
];

/// Whether `key` names a secret property.
pub fn is_secret_property(key: &str) -> bool {
    SECRET_PROPERTIES.contains(&key)
}

/// Every secret value this process has configured a client with. Error messages and log lines
/// are scrubbed of them wherever they come from (librdkafka echoes property values in some
/// configuration errors; a broker may echo a user name or token in a failure reason).
///
/// Lock-free (readers and writers), not an `RwLock`: librdkafka's threads scrub every log line,
/// and a process forked while one of them held a lock (a DataLoader worker) would inherit it
/// held by a thread that does not exist there, and hang at its first client.
static SECRETS: ArcSwapOption<Vec<String>> = ArcSwapOption::const_empty();

/// Values shorter than this are not scrubbed from text: replacing every "ab" in a message would
/// garble it while hiding nothing (such a secret is no secret).
const MIN_REDACTED_LEN: usize = 4;

/// Remembers `value` as a secret to scrub from all output of the library.
pub fn register_secret(value: &str) {
    let known = |all: &Option<Arc<Vec<String>>>| all.iter().flat_map(|a| a.iter()).any(|s| s == value);
    if value.len() < MIN_REDACTED_LEN || known(&SECRETS.load()) {
        return;
    }
    SECRETS.rcu(|all| {
        let mut all = all.as_deref().cloned().unwrap_or_default();
        if !all.iter().any(|s| s == value) {
            all.push(value.to_owned());
            // Longest first, so a secret containing another is replaced whole.
            all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        Some(Arc::new(all))
    });
}

/// `text` with every registered secret replaced by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Some(all) = SECRETS.load_full() else {
        return Cow::Borrowed(text);
    };
    if !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for s in all.iter() {
        out = out.replace(s.as_str(), "***");
    }
    Cow::Owned(out)
}
