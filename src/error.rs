//! The one error type of the core. The Python layer maps each variant to one exception class
//! (`src/py/errors.rs`), so every variant says *what* went wrong and *where*.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::fmt;

/// Where a message lives: enough to find it again with any Kafka tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagePosition {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for MessagePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic '{}' partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// librdkafka's view of an error: numeric code, symbolic name, and whether retrying can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaCode {
    pub code: i32,
    pub name: String,
    pub retriable: bool,
    pub fatal: bool,
}

impl KafkaCode {
    pub fn from_code(code: RDKafkaErrorCode) -> Self {
        use RDKafkaErrorCode as C;
        let retriable = matches!(
            code,
            C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::NetworkException
                | C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::NotEnoughReplicas
                | C::QueueFull
        );
        KafkaCode {
            code: code as i32,
            name: rdkafka_err_name(code),
            retriable,
            fatal: code == C::Fatal,
        }
    }
}

/// librdkafka's own symbolic name for a code (`_TRANSPORT`, `UNKNOWN_TOPIC_OR_PART`, ...).
fn rdkafka_err_name(code: RDKafkaErrorCode) -> String {
    let mut descs: *const rdkafka_sys::bindings::rd_kafka_err_desc = std::ptr::null();
    let mut count: usize = 0;
    // SAFETY: librdkafka fills in a pointer to its static table of error descriptions, whose
    // `name` fields are static NUL-terminated strings (or null for unused slots).
    unsafe {
        rdkafka_sys::bindings::rd_kafka_get_err_descs(&mut descs, &mut count);
        std::slice::from_raw_parts(descs, count)
            .iter()
            .find(|d| d.code as i32 == code as i32 && !d.name.is_null())
            .map(|d| std::ffi::CStr::from_ptr(d.name).to_string_lossy().into_owned())
    }
    .unwrap_or_else(|| format!("{code:?}"))
}

/// Every failure the core reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting the user gave is wrong (bad librdkafka property, bad schema, bad range...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A message could not be decoded with the declared format.
    #[error("cannot decode message at {position}: {reason}")]
    Decode {
        position: MessagePosition,
        reason: String,
    },

    /// Data to send does not fit the declared format or schema (nothing was sent).
    #[error("cannot encode: {0}")]
    Encode(String),

    /// A topic or partition the user named does not exist on the cluster.
    #[error("unknown topic or partition: {what}")]
    UnknownTopic { what: String, kafka: Option<KafkaCode> },

    /// An operation did not finish in time (unreachable broker, slow metadata, flush timeout).
    #[error("timed out: {what}")]
    Timeout { what: String, kafka: Option<KafkaCode> },

    /// A message could not be delivered (dead-letter topic, producer).
    #[error("delivery failed: {what}")]
    Delivery { what: String, kafka: Option<KafkaCode> },

    /// Any other error reported by librdkafka or the broker.
    #[error("kafka error: {what}")]
    Kafka { what: String, kafka: Option<KafkaCode> },

    /// The cluster refused the client's credentials (wrong password, unknown user, invalid or
    /// expired OAUTHBEARER token).
    #[error("authentication failed: {what}")]
    Authentication { what: String, kafka: Option<KafkaCode> },

    /// The TLS handshake failed (unknown CA, expired certificate, host name mismatch).
    #[error("SSL error: {what}")]
    Ssl { what: String, kafka: Option<KafkaCode> },

    /// An ACL denies `operation` on `resource` (e.g. "topic 'x'", "group 'g'",
    /// "transactional id 't'", "cluster").
    #[error("not authorized: {what}")]
    Authorization {
        what: String,
        resource: String,
        operation: String,
        kafka: Option<KafkaCode>,
    },

    /// The Schema Registry refused a request or could not be reached: `status` is the HTTP
    /// status (none when it did not answer), `error_code` the registry's own code.
    #[error("schema registry: {what}")]
    Registry {
        what: String,
        status: Option<u16>,
        error_code: Option<i64>,
    },

    /// The object was used after `close()`.
    #[error("{0} is closed")]
    Closed(&'static str),

    /// An object that owns threads or a librdkafka client was used in a process forked after it
    /// was made (a DataLoader worker): those threads and connections stayed in the parent.
    #[error(
        "this {what} was created before this process was forked from its parent (a DataLoader \
         worker, multiprocessing's fork start method): its threads and connections exist only in \
         the parent. {remedy}"
    )]
    Forked {
        what: &'static str,
        /// What to do instead.
        remedy: &'static str,
    },

    /// A TLS client asked for in a process forked while its parent had TLS clients open
    /// (`client::fork`): OpenSSL's locks may be held there by threads that do not exist here.
    #[error(
        "cannot open a TLS connection in this process: it was forked (a DataLoader worker, \
         multiprocessing's fork start method) while its parent had {open_at_fork} TLS client(s) \
         open, and OpenSSL's locks may be held by parent threads that do not exist here (a new TLS \
         client or HTTPS connection would hang in its set-up). Start the workers with the 'spawn' or \
         'forkserver' method (DataLoader(..., multiprocessing_context=\"spawn\")), or close the \
         parent's TLS clients before the fork"
    )]
    ForkedWithTls { open_at_fork: usize },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a librdkafka error with a sentence of context, choosing the variant by its code.
    pub fn kafka(context: impl fmt::Display, err: KafkaError) -> Self {
        let code = err.rdkafka_error_code();
        let mut kafka = code.map(KafkaCode::from_code);
        // librdkafka echoes property values in some configuration errors.
        let mut what = crate::client::redact(&format!("{context}: {err}")).into_owned();
        if let KafkaError::Transaction(txn) = &err {
            // Transactional errors say themselves whether a retry or an abort is needed.
            if let Some(k) = kafka.as_mut() {
                k.retriable = txn.is_retriable();
                k.fatal = txn.is_fatal();
            }
            if txn.txn_requires_abort() {
                what.push_str(" (the transaction must be aborted)");
            }
        }
        use RDKafkaErrorCode as C;
        match (&err, code) {
            (KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_), _) => Error::Config(what),
            (_, Some(C::UnknownTopicOrPartition | C::UnknownPartition | C::UnknownTopic)) => {
                Error::UnknownTopic { what, kafka }
            }
            (
                _,
                Some(
                    C::OperationTimedOut | C::RequestTimedOut | C::AllBrokersDown | C::BrokerTransportFailure,
                ),
            ) => Error::Timeout { what, kafka },
            (_, Some(code)) if resource_kind(code).is_some() => Error::Authorization {
                what,
                resource: resource_kind(code).unwrap_or_default().to_owned(),
                operation: String::new(),
                kafka,
            },
            (_, Some(C::Authentication | C::SaslAuthenticationFailed)) => {
                Error::Authentication { what, kafka }
            }
            (_, Some(C::SSL)) => Error::Ssl { what, kafka },
            (KafkaError::MessageProduction(_) | KafkaError::Flush(_), _) => Error::Delivery { what, kafka },
            _ => Error::Kafka { what, kafka },
        }
    }

    /// librdkafka's code for this error, where there is one.
    pub fn kafka_code(&self) -> Option<&KafkaCode> {
        match self {
            Error::UnknownTopic { kafka, .. }
            | Error::Timeout { kafka, .. }
            | Error::Delivery { kafka, .. }
            | Error::Kafka { kafka, .. }
            | Error::Authentication { kafka, .. }
            | Error::Ssl { kafka, .. }
            | Error::Authorization { kafka, .. } => kafka.as_ref(),
            _ => None,
        }
    }

    /// Names the resource and operation of an authorization error (others are unchanged): the
    /// broker's code says only which kind of resource was denied.
    pub fn denied(self, resource: impl Into<String>, operation: impl Into<String>) -> Self {
        match self {
            Error::Authorization { what, kafka, .. } => {
                let (resource, operation) = (resource.into(), operation.into());
                Error::Authorization {
                    what: format!("{what} ({operation} on {resource})"),
                    resource,
                    operation,
                    kafka,
                }
            }
            other => other,
        }
    }
}

/// The kind of resource an authorization error code is about.
pub fn resource_kind(code: RDKafkaErrorCode) -> Option<&'static str> {
    use RDKafkaErrorCode as C;
    match code {
        C::TopicAuthorizationFailed => Some("topic"),
        C::GroupAuthorizationFailed => Some("group"),
        C::ClusterAuthorizationFailed => Some("cluster"),
        C::TransactionalIdAuthorizationFailed => Some("transactional id"),
        C::DelegationTokenAuthorizationFailed => Some("delegation token"),
        _ => None,
    }
}
