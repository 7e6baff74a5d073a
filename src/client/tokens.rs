//! OAUTHBEARER tokens from the application (an IAM-style provider): a thread per client serves
//! librdkafka's token refresh events from the application's `TokenSource`.

use super::{redact, register_secret, ClientSettings};
use crate::error::{Error, Result};
use rdkafka_sys::bindings as rd;
use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An OAUTHBEARER token handed to librdkafka.
pub struct OAuthToken {
    pub token: String,
    /// The principal the token stands for (informational: the broker reads it from the token).
    pub principal: String,
    /// Expiry, in milliseconds since the Unix epoch; librdkafka asks for a new token at 80 % of
    /// the remaining lifetime.
    pub expires_at_ms: i64,
    /// SASL extensions (KIP-342), e.g. `logicalCluster` for some managed services.
    pub extensions: Vec<(String, String)>,
}

/// Where OAUTHBEARER tokens come from when the application supplies them (an IAM-style
/// provider). The argument is `sasl.oauthbearer.config`.
pub trait TokenSource: Send + Sync {
    fn token(&self, oauthbearer_config: Option<&str>) -> std::result::Result<OAuthToken, String>;
}

/// A librdkafka client handle that may move between threads.
struct ClientPtr(*mut rd::rd_kafka_t);

// SAFETY: librdkafka client handles are thread-safe; the token thread holds a strong reference
// (`keep_alive`) to the object owning the handle, so the handle outlives every use there.
unsafe impl Send for ClientPtr {}

/// Serves a client's OAUTHBEARER token refreshes from the application's `TokenSource` on a
/// thread of its own, whatever the client's owner is doing. Dropping it stops the thread within
/// 200 ms; the thread holds the client alive until then (so the client may be destroyed on it).
pub(crate) struct TokenRefresher {
    stop: Arc<AtomicBool>,
}

impl TokenRefresher {
    /// Starts serving `client`'s SASL queue. `native` must be `client`'s own handle, created
    /// from a `client_config` with `enable_sasl_queue`.
    pub(crate) fn start<T: Send + Sync + 'static>(
        client: &Arc<T>,
        native: *mut rd::rd_kafka_t,
        source: Arc<dyn TokenSource>,
    ) -> Result<TokenRefresher> {
        let stop = Arc::new(AtomicBool::new(false));
        let keep_alive = client.clone();
        let handle = ClientPtr(native);
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("kafka-ml-oauth".into())
            .spawn(move || {
                let handle = handle;
                serve_token_refreshes(handle.0, source.as_ref(), &stopped);
                drop(keep_alive);
            })
            .map_err(|e| Error::Config(format!("cannot start the token thread: {e}")))?;
        Ok(TokenRefresher { stop })
    }
}

impl TokenRefresher {
    /// A refresher for `client` (whose handle is `native`) if `settings` carry a token source.
    pub(crate) fn when_needed<T: Send + Sync + 'static>(
        client: &Arc<T>,
        native: *mut rd::rd_kafka_t,
        settings: &ClientSettings,
    ) -> Result<Option<TokenRefresher>> {
        settings
            .token_source
            .as_ref()
            .map(|source| TokenRefresher::start(client, native, source.clone()))
            .transpose()
    }
}

impl Drop for TokenRefresher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_token_refreshes(rk: *mut rd::rd_kafka_t, source: &dyn TokenSource, stop: &AtomicBool) {
    // SAFETY: `rk` is a live client (kept alive by the caller); the queue handle is released
    // below before the caller drops its reference to the client.
    let queue = unsafe { rd::rd_kafka_queue_get_sasl(rk) };
    if queue.is_null() {
        return; // no SASL mechanism with callbacks configured: nothing to serve
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `queue` is a live queue handle; the event, if any, is destroyed below.
        let event = unsafe { rd::rd_kafka_queue_poll(queue, 200) };
        if event.is_null() {
            continue;
        }
        // SAFETY: `event` is a live event until destroyed at the end of this block.
        unsafe {
            if rd::rd_kafka_event_type(event) == rd::RD_KAFKA_EVENT_OAUTHBEARER_TOKEN_REFRESH {
                let config = rd::rd_kafka_event_config_string(event);
                let config = (!config.is_null()).then(|| CStr::from_ptr(config).to_string_lossy());
                set_token(rk, source.token(config.as_deref()));
            }
            rd::rd_kafka_event_destroy(event);
        }
    }
    // SAFETY: releases the handle taken above, once.
    unsafe { rd::rd_kafka_queue_destroy(queue) };
}

/// Hands a token (or the reason there is none) to librdkafka.
fn set_token(rk: *mut rd::rd_kafka_t, token: std::result::Result<OAuthToken, String>) {
    let failure = match token {
        Ok(t) => {
            if !t.token.is_empty() {
                register_secret(&t.token);
            }
            let strings = (
                CString::new(t.token),
                CString::new(t.principal),
                t.extensions
                    .iter()
                    .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                    .map(CString::new)
                    .collect::<std::result::Result<Vec<_>, _>>(),
            );
            match strings {
                (Ok(token), Ok(principal), Ok(extensions)) => {
                    let ext: Vec<*const std::ffi::c_char> = extensions.iter().map(|s| s.as_ptr()).collect();
                    let mut errstr = [0 as std::ffi::c_char; 512];
                    // SAFETY: every pointer is a NUL-terminated string alive for the call;
                    // librdkafka copies them. `ext` has `ext.len()` entries (key, value pairs).
                    let err = unsafe {
                        rd::rd_kafka_oauthbearer_set_token(
                            rk,
                            token.as_ptr(),
                            t.expires_at_ms,
                            principal.as_ptr(),
                            if ext.is_empty() {
                                std::ptr::null_mut()
                            } else {
                                ext.as_ptr().cast_mut()
                            },
                            ext.len(),
                            errstr.as_mut_ptr(),
                            errstr.len(),
                        )
                    };
                    if err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        return;
                    }
                    // SAFETY: librdkafka wrote a NUL-terminated message into `errstr`.
                    let msg = unsafe { CStr::from_ptr(errstr.as_ptr()) }.to_string_lossy();
                    format!("librdkafka refused the token: {msg}")
                }
                _ => "the token, principal or an extension contains a NUL character".to_owned(),
            }
        }
        Err(reason) => reason,
    };
    let failure = redact(&failure).replace('\0', " ");
    log::error!(target: "kafka_ml::librdkafka", "OAUTHBEARER token refresh failed: {failure}");
    let failure = CString::new(failure).expect("NULs were replaced");
    // SAFETY: `rk` is live and the message is NUL-terminated; librdkafka copies it.
    unsafe { rd::rd_kafka_oauthbearer_set_token_failure(rk, failure.as_ptr()) };
}
