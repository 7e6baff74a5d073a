//! What every kafka-ml client (consumer, producer, admin) shares: the connection settings and the
//! librdkafka configuration built from them, the hooks every client context delegates to (log
//! lines, global errors, failed logins), OAUTHBEARER tokens from the application, and the
//! redaction of secrets from everything the library prints.
//!
//! Secrets and their redaction live in `secrets`, application OAUTHBEARER tokens in `tokens`,
//! the refusal of TLS clients in a child forked while TLS clients were open in `fork`.

pub mod fork;
mod secrets;
mod tokens;

pub use fork::OpenSslClient;
pub use secrets::{is_secret_property, redact, register_secret, SECRET_PROPERTIES};
pub(crate) use tokens::TokenRefresher;
pub use tokens::{OAuthToken, TokenSource};

use crate::error::{resource_kind, Error, KafkaCode, Result};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka_sys::bindings as rd;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The connection settings of a client: librdkafka properties, and an application token
/// source for OAUTHBEARER.
#[derive(Clone, Default)]
pub struct ClientSettings {
    pub properties: Vec<(String, String)>,
    pub token_source: Option<Arc<dyn TokenSource>>,
}

impl ClientSettings {
    pub fn new(properties: Vec<(String, String)>, token_source: Option<Arc<dyn TokenSource>>) -> Self {
        for (k, v) in &properties {
            if is_secret_property(k) {
                register_secret(v);
            }
        }
        ClientSettings {
            properties,
            token_source,
        }
    }

    /// The settings a producer (or another client) of the same application shares with this
    /// consumer: every property but the consumer-only ones, and the same token source. A
    /// deny-list, not an allow-list, so that whatever the user set for the connection (TLS
    /// checks, DNS lookup, API versions, a property this list has never heard of) carries over.
    pub fn shared(&self) -> Self {
        let properties = self
            .properties
            .iter()
            .filter(|(k, _)| !is_consumer_only_property(k))
            .cloned()
            .collect();
        ClientSettings::new(properties, self.token_source.clone())
    }

    /// The value of `key` (the last one given wins, as in librdkafka).
    pub fn get(&self, key: &str) -> Option<&str> {
        config_value(&self.properties, key)
    }

    /// Whether connections use TLS or SASL: only then can a login fail, and only then is the
    /// connection checked before the first request (`await_cluster`).
    pub fn is_secured(&self) -> bool {
        self.get("security.protocol")
            .is_some_and(|p| !p.eq_ignore_ascii_case("plaintext"))
    }
}

impl From<Vec<(String, String)>> for ClientSettings {
    fn from(properties: Vec<(String, String)>) -> Self {
        ClientSettings::new(properties, None)
    }
}

/// Prefixes of the consumer-only librdkafka properties: kept out of the producers and other
/// clients that a consumer's configuration also sets up (dead letters, an inference loop's
/// results, a trainer's model topic); a `group.id` there would, say, make a model topic reader
/// commit to the trainer's group. `kafka_ml.config.shared_client_config` applies the same list.
pub const CONSUMER_ONLY_PROPERTIES: &[&str] = &[
    "group.",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.",
    "auto.commit.",
    "isolation.level",
    "partition.assignment.strategy",
    "fetch.",
    "queued.",
    "check.crcs",
    "enable.partition.eof",
];

/// Whether `key` is a consumer-only property (one of `CONSUMER_ONLY_PROPERTIES` or under it).
pub fn is_consumer_only_property(key: &str) -> bool {
    CONSUMER_ONLY_PROPERTIES.iter().any(|p| key.starts_with(p))
}

impl std::ops::Deref for ClientSettings {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.properties
    }
}

impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("ClientSettings")
            .field("properties", &shown)
            .field("token_source", &self.token_source.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

/// The value of `key` in a user's config (the last one given wins, as in librdkafka).
pub(crate) fn config_value<'a>(config: &'a [(String, String)], key: &str) -> Option<&'a str> {
    config
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A client configuration: the user's properties over kafka-ml's defaults for every client.
pub(crate) fn client_config(settings: &ClientSettings) -> ClientConfig {
    let mut cc = ClientConfig::new();
    // Every line librdkafka logs goes on to Python's `logging`, which filters by level there.
    // rust-rdkafka would otherwise set the client's level from what the `log` crate's logger
    // accepts for target "librdkafka", which kafka-ml's does not name: level 3, so once the client
    // was made only errors came through (no warnings, no `debug=` lines). Debug lines are only
    // made for the contexts `debug` names, so this adds none by itself. (rust-rdkafka sets the
    // level after creating the client, over any `log_level` property: a user's is kept here.)
    let level = match settings
        .get("log_level")
        .and_then(|v| v.trim().parse::<i32>().ok())
    {
        Some(..=0) => RDKafkaLogLevel::Emerg,
        Some(1) => RDKafkaLogLevel::Alert,
        Some(2) => RDKafkaLogLevel::Critical,
        Some(3) => RDKafkaLogLevel::Error,
        Some(4) => RDKafkaLogLevel::Warning,
        Some(5) => RDKafkaLogLevel::Notice,
        Some(6) => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    };
    cc.set_log_level(level);
    // librdkafka replaces its bootstrap connection by one to the broker the first metadata
    // names, which fails the application's metadata request in flight; the retry waits for the
    // next connection slot, half of `reconnect.backoff.ms` (at least 11 ms). With librdkafka's
    // 100 ms default every new client's first metadata request (each dataset open, a producer's
    // first send) took about 55 ms; with 20 ms it takes about 15 ms. This is only the first step
    // of the reconnect backoff, which still doubles up to `reconnect.backoff.max.ms` (10 s).
    cc.set("reconnect.backoff.ms", "20");
    // OpenSSL is linked statically, so its default CA directory is the build machine's, not
    // this one's: "probe" makes librdkafka look in the usual system locations (Debian, RHEL,
    // Alpine, ...) when the user names no CA.
    let names_ca = ["ssl.ca.location", "ssl.ca.pem", "ssl_ca"]
        .iter()
        .any(|k| settings.get(k).is_some());
    if !names_ca {
        cc.set("ssl.ca.location", "probe");
    }
    // The same for librdkafka's HTTPS calls (the OIDC token endpoint), where they are built in.
    if settings.get("https.ca.location").is_none()
        && settings.get("https.ca.pem").is_none()
        && has_builtin_feature("oidc")
    {
        cc.set("https.ca.location", "probe");
    }
    if settings.token_source.is_some() {
        // Token refreshes go to their own queue, served by `TokenRefresher`, so a token is
        // fetched whatever the client is doing (a batch read never serves the main queue).
        cc.set("enable_sasl_queue", "true");
    }
    for (k, v) in settings.iter() {
        cc.set(k, v);
    }
    cc
}

/// What librdkafka was built with (`builtin.features`): `ssl`, `sasl_scram`, `sasl_oauthbearer`,
/// `oidc`, `zstd`, ...
pub fn builtin_features() -> Vec<String> {
    let features = ClientConfig::new()
        .create_native_config()
        .ok()
        .and_then(|c| c.get("builtin.features").ok())
        .unwrap_or_default();
    features
        .split(',')
        // librdkafka's CMake build defines WITH_SASL_CYRUS as 0, and `builtin.features` tests
        // only whether it is defined: it lists GSSAPI, which this build never has.
        .filter(|f| !f.is_empty() && *f != "sasl_gssapi")
        .map(str::to_owned)
        .collect()
}

/// Whether librdkafka was built with `feature` (read once).
fn has_builtin_feature(feature: &str) -> bool {
    static FEATURES: OnceLock<Vec<String>> = OnceLock::new();
    FEATURES
        .get_or_init(builtin_features)
        .iter()
        .any(|f| f == feature)
}

/// Whether a global error means the client cannot log in: a failed SASL authentication or a
/// failed TLS handshake (unknown CA, expired certificate, wrong host name, a client certificate
/// the broker refuses). librdkafka keeps retrying such connections for ever; the library stops at
/// the first one instead. Returns the code to report.
fn login_failure_code(code: RDKafkaErrorCode, reason: &str) -> Option<RDKafkaErrorCode> {
    match code {
        RDKafkaErrorCode::Authentication
        | RDKafkaErrorCode::SaslAuthenticationFailed
        | RDKafkaErrorCode::SSL
        | RDKafkaErrorCode::UnsupportedSASLMechanism
        | RDKafkaErrorCode::IllegalSASLState => Some(code),
        // A broker that requires a client certificate answers a handshake without one (or with
        // one it does not trust) with a TLS alert, which librdkafka reports as a transport error.
        RDKafkaErrorCode::BrokerTransportFailure
            if [
                "alert bad certificate",
                "alert certificate required",
                "alert unknown ca",
            ]
            .iter()
            .any(|alert| reason.contains(alert)) =>
        {
            Some(RDKafkaErrorCode::SSL)
        }
        _ => None,
    }
}

/// What every client context delegates to: log lines go to the `log` crate (and from there to
/// Python's `logging`, logger `kafka_ml.librdkafka`) with secrets scrubbed, and the first login
/// failure is kept so that whoever waits on the cluster fails with it at once.
#[derive(Default)]
pub struct ClientHooks {
    login_failure: Mutex<Option<(RDKafkaErrorCode, String)>>,
    /// The first authorization error reported as a global error (a group or transactional id
    /// denied while looking up its coordinator): librdkafka retries such a lookup until the
    /// request times out.
    denial: Mutex<Option<(RDKafkaErrorCode, String)>>,
    /// The count of this client among the open TLS clients (`fork`), for as long as the
    /// context, and so the librdkafka handle, exists.
    openssl_client: OnceLock<OpenSslClient>,
}

impl ClientHooks {
    /// Keeps the client's place among the open TLS clients until the client is gone.
    pub(crate) fn keep(&self, openssl_client: Option<OpenSslClient>) {
        if let Some(slot) = openssl_client {
            let _ = self.openssl_client.set(slot);
        }
    }

    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let level = match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => log::Level::Error,
            RDKafkaLogLevel::Warning => log::Level::Warn,
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => log::Level::Info,
            RDKafkaLogLevel::Debug => log::Level::Debug,
        };
        log::log!(target: "kafka_ml::librdkafka", level, "{facility}: {}", redact(message));
    }

    pub fn error(&self, error: KafkaError, reason: &str) {
        let reason = redact(reason);
        match error
            .rdkafka_error_code()
            .and_then(|code| login_failure_code(code, &reason))
        {
            Some(code) => {
                let mut slot = self.login_failure.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some((code, reason.clone().into_owned()));
                }
                // librdkafka's own FAIL log line has said it already, at error level.
                log::debug!(target: "kafka_ml::librdkafka", "login failed: {reason}");
            }
            // Not an error: a partition read to its end (`enable.partition.eof`).
            None if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
            None => {
                if let Some(code) = error.rdkafka_error_code().filter(|c| resource_kind(*c).is_some()) {
                    let mut slot = self.denial.lock().unwrap_or_else(|p| p.into_inner());
                    if slot.is_none() {
                        *slot = Some((code, reason.clone().into_owned()));
                    }
                }
                log::warn!(target: "kafka_ml::librdkafka", "{error}: {reason}")
            }
        }
    }

    /// The first failed login, or else the first authorization error, as the error to raise.
    pub fn failure(&self) -> Option<Error> {
        self.login_failure().or_else(|| {
            let slot = self.denial.lock().unwrap_or_else(|p| p.into_inner());
            slot.as_ref().map(|(code, reason)| Error::Authorization {
                what: reason.clone(),
                resource: resource_kind(*code).unwrap_or_default().to_owned(),
                operation: String::new(),
                kafka: Some(KafkaCode::from_code(*code)),
            })
        })
    }

    /// The first failed login, as the error to raise.
    pub fn login_failure(&self) -> Option<Error> {
        let slot = self.login_failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|(code, reason)| login_error(*code, reason))
    }
}

fn login_error(code: RDKafkaErrorCode, reason: &str) -> Error {
    let kafka = Some(KafkaCode::from_code(code));
    if code == RDKafkaErrorCode::SSL {
        Error::Ssl {
            what: format!("TLS connection to the cluster failed: {reason}"),
            kafka,
        }
    } else {
        Error::Authentication {
            what: format!("the cluster refused the login: {reason}"),
            kafka,
        }
    }
}

/// `err` with, for a failed certificate check, the reason OpenSSL gives: librdkafka's message
/// says only "certificate verify failed", so the library repeats the handshake once with the same
/// CA settings and reads the verification result.
pub(crate) fn explain(err: Error, settings: &ClientSettings) -> Error {
    match err {
        Error::Ssl { what, kafka } if what.contains("certificate verify failed") => {
            let what = match certificate_problem(settings, &what) {
                Some(problem) => format!("the broker's certificate was rejected: {problem}; {what}"),
                None => what,
            };
            Error::Ssl { what, kafka }
        }
        other => other,
    }
}

/// OpenSSL's verification result for the broker named in a librdkafka handshake error
/// (`ssl://host:port/...` or `sasl_ssl://host:port/...`).
fn certificate_problem(settings: &ClientSettings, reason: &str) -> Option<String> {
    use openssl::ssl::{HandshakeError, SslConnector, SslMethod};
    use openssl::x509::X509VerifyResult;
    use std::net::{TcpStream, ToSocketAddrs};

    let address = reason.split("ssl://").nth(1)?.split('/').next()?;
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    match (settings.get("ssl.ca.location"), settings.get("ssl.ca.pem")) {
        (Some(location), _) if location != "probe" => {
            if std::path::Path::new(location).is_dir() {
                builder.load_verify_locations(None, Some(std::path::Path::new(location)))
            } else {
                builder.set_ca_file(location)
            }
            .ok()?;
        }
        (_, Some(pem)) => {
            for cert in openssl::x509::X509::stack_from_pem(pem.as_bytes()).ok()? {
                builder.cert_store_mut().add_cert(cert).ok()?;
            }
        }
        _ => {
            let probe = openssl_probe::probe();
            builder
                .load_verify_locations(probe.cert_file.as_deref(), probe.cert_dir.as_deref())
                .ok()?;
        }
    }
    let mut connect = builder.build().configure().ok()?;
    if settings.get("ssl.endpoint.identification.algorithm") == Some("none") {
        connect.set_verify_hostname(false);
    }
    let socket = (host, port.parse::<u16>().ok()?).to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    match connect.connect(host, stream) {
        Err(HandshakeError::Failure(mid)) if mid.ssl().verify_result() != X509VerifyResult::OK => {
            Some(mid.ssl().verify_result().error_string().to_owned())
        }
        _ => None,
    }
}

/// A context that delegates to `ClientHooks`.
pub trait HasHooks {
    fn hooks(&self) -> &ClientHooks;
}

/// Implements `ClientContext` for a context with a `hooks: ClientHooks` field: log lines and
/// global errors go to the hooks.
#[macro_export]
#[doc(hidden)]
macro_rules! client_context_with_hooks {
    ($ty:ty) => {
        impl rdkafka::ClientContext for $ty {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
                self.hooks.log(level, fac, message)
            }

            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                self.hooks.error(error, reason)
            }
        }

        impl $crate::client::HasHooks for $ty {
            fn hooks(&self) -> &$crate::client::ClientHooks {
                &self.hooks
            }
        }
    };
}

/// Waits until a secured consumer has a working connection, so a wrong password or an untrusted
/// certificate fails within about a second with what the cluster said, instead of every request
/// timing out. Serves the consumer's queue meanwhile (its error events); the consumer must have
/// nothing assigned yet, or messages would be taken from it.
pub(crate) fn await_cluster<C: ConsumerContext + HasHooks>(
    consumer: &BaseConsumer<C>,
    settings: &ClientSettings,
    timeout: Duration,
) -> Result<()> {
    if !settings.is_secured() {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    loop {
        // Events first: the error event of a failed login arrives before the request fails.
        while consumer.poll(Duration::ZERO).is_some() {}
        if let Some(e) = consumer.context().hooks().login_failure() {
            return Err(explain(e, settings));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                what: format!("no connection to the cluster within {timeout:?}"),
                kafka: Some(KafkaCode::from_code(RDKafkaErrorCode::OperationTimedOut)),
            });
        }
        if metadata_round_trip(
            consumer.client().native_ptr(),
            left.min(Duration::from_millis(100)),
        ) {
            while consumer.poll(Duration::ZERO).is_some() {}
            return match consumer.context().hooks().login_failure() {
                Some(e) => Err(explain(e, settings)),
                None => Ok(()),
            };
        }
    }
}

/// One metadata request for the brokers only (no topic), which a broker answers once the client
/// is connected and logged in. (`fetch_cluster_id` does not send one: it waits for the cluster id
/// from the client's own first metadata request, and only wakes on a broker state change, so it
/// took a second on TLS listeners.)
fn metadata_round_trip(client: *mut rd::rd_kafka_t, timeout: Duration) -> bool {
    let mut metadata: *const rd::rd_kafka_metadata = std::ptr::null();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `client` is a live handle (borrowed from its owner for this call); with
    // `all_topics` 0 and no topic handle only locally known topics (none here) are asked for.
    let err = unsafe { rd::rd_kafka_metadata(client, 0, std::ptr::null_mut(), &mut metadata, timeout_ms) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return false;
    }
    // SAFETY: librdkafka allocated `metadata` for this call; it is released once.
    unsafe { rd::rd_kafka_metadata_destroy(metadata) };
    true
}

/// Runs a blocking consumer request (`request(slice)`) in slices until it succeeds, serving the
/// consumer's events in between, so that a failed login or an authorization error reported as a
/// global error (librdkafka retries both until the request times out) ends the wait at once.
/// Only for consumers with nothing assigned (serving events would take messages otherwise).
pub(crate) fn until_answered<C: ConsumerContext + HasHooks, T>(
    consumer: &BaseConsumer<C>,
    settings: &ClientSettings,
    timeout: Duration,
    mut request: impl FnMut(Duration) -> std::result::Result<T, KafkaError>,
) -> std::result::Result<T, RequestError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match request(left.min(Duration::from_millis(200))) {
            Ok(answer) => return Ok(answer),
            Err(e) if is_timeout(&e) && !left.is_zero() => {
                while consumer.poll(Duration::ZERO).is_some() {}
                if let Some(failure) = consumer.context().hooks().failure() {
                    return Err(RequestError::Failed(explain(failure, settings)));
                }
            }
            Err(e) => return Err(RequestError::Kafka(e)),
        }
    }
}

/// Why `until_answered` gave up.
pub(crate) enum RequestError {
    /// The request's own error (its timeout included), for the caller to put in context.
    Kafka(KafkaError),
    /// A failed login or a denial the client reported meanwhile.
    Failed(Error),
}

impl RequestError {
    pub(crate) fn into_error(self, context: impl fmt::Display) -> Error {
        match self {
            RequestError::Kafka(e) => Error::kafka(context, e),
            RequestError::Failed(e) => e,
        }
    }
}

fn is_timeout(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_and_short_values_are_not() {
        let settings = ClientSettings::from(vec![
            ("sasl.password".to_owned(), "hunter2-secret".to_owned()),
            ("ssl.key.password".to_owned(), "ab".to_owned()),
            ("sasl.username".to_owned(), "alice".to_owned()),
        ]);
        assert_eq!(
            redact("bad password hunter2-secret for alice"),
            "bad password *** for alice"
        );
        assert_eq!(redact("ab cd"), "ab cd");
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("hunter2-secret") && shown.contains("alice"),
            "{shown}"
        );
    }

    #[test]
    fn a_derived_producer_keeps_every_setting_but_the_consumer_only_ones() {
        let consumer = ClientSettings::new(
            [
                ("bootstrap.servers", "127.0.0.1:9092"),
                ("group.id", "trainer"),
                ("group.instance.id", "a"),
                ("enable.auto.commit", "false"),
                ("fetch.wait.max.ms", "5"),
                ("isolation.level", "read_committed"),
                ("security.protocol", "SASL_SSL"),
                ("enable.ssl.certificate.verification", "false"),
                ("client.dns.lookup", "use_all_dns_ips"),
                ("linger.ms", "1"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .to_vec(),
            None,
        );
        let producer = consumer.shared();
        let kept: Vec<&str> = producer.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kept,
            [
                "bootstrap.servers",
                "security.protocol",
                "enable.ssl.certificate.verification",
                "client.dns.lookup",
                "linger.ms"
            ]
        );
    }

    #[test]
    fn librdkafka_has_tls_and_sasl() {
        let features = builtin_features();
        for f in ["ssl", "sasl_plain", "sasl_scram", "sasl_oauthbearer"] {
            assert!(features.iter().any(|x| x == f), "{f} missing from {features:?}");
        }
    }
}
