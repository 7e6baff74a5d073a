//! TLS clients and `fork()`. OpenSSL's process-wide locks (its provider and algorithm stores,
//! taken while a librdkafka thread sets up a TLS connection) are copied into a forked child as
//! they were at the fork, but the threads holding them are not: a child forked mid-handshake
//! waits for ever for such a lock when it creates a TLS client of its own (seen in `SSL_CTX_new`
//! in DataLoader workers). OpenSSL 3 has no fork handlers that could release them, and the
//! handshakes run on librdkafka's threads, which the library cannot pause. So the library keeps
//! count of its open TLS clients, and a child forked while any were open is refused a TLS client
//! of its own with `ForkedProcessError` — a clear error at once instead of a hang some of the
//! time. PLAINTEXT clients never touch OpenSSL and are not affected.

use super::ClientSettings;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};

/// TLS clients of this process that are open now.
static OPEN: AtomicUsize = AtomicUsize::new(0);
/// The most TLS clients an ancestor of this process had open when it forked (0: none, or never
/// forked).
static OPEN_AT_FORK: AtomicUsize = AtomicUsize::new(0);

/// Whether clients with these settings use OpenSSL: TLS connections, or librdkafka's own OIDC
/// token requests (HTTPS through libcurl).
pub fn uses_openssl(settings: &ClientSettings) -> bool {
    let tls = settings
        .get("security.protocol")
        .is_some_and(|p| p.eq_ignore_ascii_case("ssl") || p.eq_ignore_ascii_case("sasl_ssl"));
    let oidc = settings
        .get("sasl.oauthbearer.method")
        .is_some_and(|m| m.eq_ignore_ascii_case("oidc"));
    tls || oidc
}

/// One open TLS client, counted for as long as the client exists: it lives in the client's
/// context, which librdkafka's handle outlives by nothing (rust-rdkafka destroys the handle,
/// joining its threads, before it drops the context).
#[derive(Debug)]
pub struct OpenSslClient(());

impl OpenSslClient {
    /// Counts a client about to be created with `settings` when it uses OpenSSL; refuses it in a
    /// process forked while TLS clients were open.
    pub fn claim(settings: &ClientSettings) -> Result<Option<Self>> {
        if !uses_openssl(settings) {
            return Ok(None);
        }
        refuse_tls_if_forked_with_tls_open()?;
        OPEN.fetch_add(1, Ordering::Relaxed);
        Ok(Some(OpenSslClient(())))
    }
}

impl Drop for OpenSslClient {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Refuses any new use of OpenSSL (a TLS client, an HTTPS registry connection) in a process
/// forked while TLS clients were open.
pub fn refuse_tls_if_forked_with_tls_open() -> Result<()> {
    match OPEN_AT_FORK.load(Ordering::Relaxed) {
        0 => Ok(()),
        open_at_fork => Err(Error::ForkedWithTls { open_at_fork }),
    }
}

/// To be called in a forked child, before it does anything else: notes how many TLS clients
/// the parent had open at the fork.
pub fn note_fork_in_child() {
    OPEN_AT_FORK.fetch_max(OPEN.load(Ordering::Relaxed), Ordering::Relaxed);
}
