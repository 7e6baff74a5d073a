//! How to reach a registry: its URL (user info becomes basic auth, kept out of every URL
//! shown), credentials, the CA certificates to trust, the request timeout.

use crate::client::register_secret;
use crate::error::{Error, Result};
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts};

/// How to reach a registry.
#[derive(Clone)]
pub struct RegistrySettings {
    /// The API's base URL, without user info (e.g. `http://127.0.0.1:8080/apis/ccompat/v7`).
    pub url: String,
    pub auth: Option<RegistryAuth>,
    /// PEM file of the CA certificates that sign the registry's certificate; `None`: the
    /// system's (found the way OpenSSL's own probe finds them).
    pub ca_location: Option<String>,
    /// `false` turns certificate verification off (a test registry with a self-signed cert).
    pub verify: bool,
    /// Per request (connect, send, receive).
    pub timeout: Duration,
}

#[derive(Clone)]
pub enum RegistryAuth {
    Basic { user: String, password: String },
    Bearer(String),
}

impl RegistrySettings {
    /// Settings for `url`; user info in the URL (`https://user:secret@host/...`) becomes basic
    /// auth and is kept out of the URL shown anywhere.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = url.trim_end_matches('/');
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            Error::Config(format!(
                "schema registry URL '{}' has no scheme (http:// or https://)",
                strip_user_info(url)
            ))
        })?;
        if scheme != "http" && scheme != "https" {
            return Err(Error::Config(format!(
                "schema registry URL '{}': scheme must be http or https",
                strip_user_info(url)
            )));
        }
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let (auth, host) = match authority.rsplit_once('@') {
            Some((info, host)) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let decode = |s: &str| {
                    percent_decode(s).map_err(|_| {
                        Error::Config(
                            "schema registry URL: its user info is not valid percent-encoding".into(),
                        )
                    })
                };
                let password = decode(password)?;
                register_secret(&password);
                (
                    Some(RegistryAuth::Basic {
                        user: decode(user)?,
                        password,
                    }),
                    host,
                )
            }
            None => (None, authority),
        };
        if host.is_empty() {
            return Err(Error::Config(format!(
                "schema registry URL '{}' has no host",
                strip_user_info(url)
            )));
        }
        Ok(RegistrySettings {
            url: format!("{scheme}://{host}{path}"),
            auth,
            ca_location: None,
            verify: true,
            timeout: Duration::from_secs(10),
        })
    }
}

/// `url` without `user:password@`.
fn strip_user_info(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://{host}{}", &rest[end..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn percent_decode(s: &str) -> std::result::Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// Percent-encodes a path segment (subjects may hold `.`, `-`, `:` and more).
pub(super) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CA certificates to trust: the given PEM file, or the system's.
pub(super) fn root_certs(ca_location: Option<&str>) -> Result<RootCerts> {
    let path = match ca_location {
        Some(p) => std::path::PathBuf::from(p),
        // The static OpenSSL looks in its build directory by default: find the system's bundle.
        None => match openssl_probe::probe().cert_file {
            Some(p) => p,
            None => return Ok(RootCerts::PlatformVerifier),
        },
    };
    let pem = std::fs::read(&path).map_err(|e| {
        Error::Config(format!(
            "cannot read the registry CA file '{}': {e}",
            path.display()
        ))
    })?;
    let certs = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<std::result::Result<Vec<Certificate<'static>>, _>>()
        .map_err(|e| {
            Error::Config(format!(
                "the registry CA file '{}' is not valid PEM: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "the registry CA file '{}' holds no certificate",
            path.display()
        )));
    }
    Ok(RootCerts::new_with_certs(&certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_becomes_basic_auth_and_leaves_the_url() {
        let s = RegistrySettings::from_url("https://ml%40corp:p%3Ass@reg.example:8081/api/").unwrap();
        assert_eq!(s.url, "https://reg.example:8081/api");
        match s.auth {
            Some(RegistryAuth::Basic { user, password }) => {
                assert_eq!(user, "ml@corp");
                assert_eq!(password, "p:ss");
            }
            _ => panic!("expected basic auth"),
        }
        assert!(RegistrySettings::from_url("reg.example:8081").is_err());
        assert!(RegistrySettings::from_url("ftp://reg.example").is_err());
        assert_eq!(strip_user_info("http://a:b@h:1/x"), "http://h:1/x");
    }

    #[test]
    fn subjects_are_percent_encoded() {
        assert_eq!(segment("orders-value"), "orders-value");
        assert_eq!(segment("com.acme/Order v2"), "com.acme%2FOrder%20v2");
    }
}
