//! A client of the Schema Registry REST API (Confluent's; Apicurio serves it at
//! `/apis/ccompat/v7`, Karapace and Redpanda at their root).
//!
//! Readers resolve a writer schema by the id every framed value carries; producers look up or
//! register their schema under a subject. Both happen on whichever thread needs them — the
//! reader's poll thread, never holding the GIL — so the client is blocking and shared (`Arc`):
//! each id is fetched once and cached for the client's life (a registry never changes what an
//! id means), and a request that fails for a transient reason (connection refused, timeout,
//! 5xx, 429) is retried a few times before it becomes an error.
//!
//! Credentials (basic auth or a bearer token) are registered as secrets (`client::register_secret`)
//! and so scrubbed from every message; URLs are shown without their user info.

use crate::client::register_secret;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

/// The Confluent wire format: magic byte 0, then the schema id (4 bytes, big-endian).
pub const WIRE_MAGIC: u8 = 0;
/// Bytes of the Confluent header before a value's body (Protobuf adds message indexes after it).
pub const WIRE_HEADER: usize = 5;

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
fn segment(s: &str) -> String {
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

/// The kind of a registered schema (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SchemaType {
    #[default]
    Avro,
    Protobuf,
    Json,
}

impl SchemaType {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_uppercase().as_str() {
            "AVRO" => Ok(SchemaType::Avro),
            "PROTOBUF" => Ok(SchemaType::Protobuf),
            "JSON" => Ok(SchemaType::Json),
            other => Err(Error::Config(format!(
                "unknown schema type '{other}' (expected AVRO, PROTOBUF or JSON)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Protobuf => "PROTOBUF",
            SchemaType::Json => "JSON",
        }
    }
}

/// A schema that references another subject's version (Avro named types, Protobuf imports,
/// JSON Schema `$ref`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaReference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    pub id: u32,
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<SchemaReference>,
    /// The subject version, where the request named one (`latest`, by version, lookup).
    pub version: Option<i32>,
}

#[derive(Deserialize)]
struct SchemaBody {
    #[serde(default)]
    id: Option<u32>,
    schema: String,
    #[serde(rename = "schemaType", default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<SchemaReference>,
    #[serde(default)]
    version: Option<i32>,
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    schema: &'a str,
    #[serde(rename = "schemaType")]
    schema_type: &'static str,
    #[serde(skip_serializing_if = "<[SchemaReference]>::is_empty")]
    references: &'a [SchemaReference],
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

/// The registry's error codes for "no such subject / version / schema" (Confluent's API).
const NOT_FOUND_CODES: [i64; 3] = [40401, 40402, 40403];

/// `(subject, schema type, schema text)`: what a producer's registrations are cached by.
type SchemaKey = (String, SchemaType, String);

/// A shared registry client with its caches.
pub struct SchemaRegistry {
    settings: RegistrySettings,
    agent: Mutex<(u32, ureq::Agent)>,
    tls: TlsConfig,
    by_id: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
    /// Ids, for producers that send many times.
    ids: Mutex<HashMap<SchemaKey, u32>>,
    /// The (id, subject version) pairs `version_for` found.
    versions: Mutex<HashMap<SchemaKey, (u32, i32)>>,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SchemaRegistry({})", self.settings.url)
    }
}

/// Attempts per request; transient failures wait 100 ms, 400 ms, 1.6 s in between.
const ATTEMPTS: u32 = 4;

/// Why the schema of a value cannot be used, by whose fault: the rule every decoder follows, so
/// that a registry that is down never makes a value look bad (and be skipped or dead-lettered).
#[derive(Debug)]
pub enum SchemaFailure {
    /// The id, or a schema it references, is not in the registry, or the schema is unusable:
    /// the value's fault; it follows `on_error`.
    Bad(String),
    /// The registry could not answer: the read stops before the value, skipping nothing.
    Unavailable(Error),
}

impl SchemaFailure {
    /// The same failure, a `Bad` reason prefixed with what it is about.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            SchemaFailure::Bad(reason) => SchemaFailure::Bad(format!("{what}: {reason}")),
            unavailable => unavailable,
        }
    }

    /// The value's decode error; an unavailable registry is also kept in `unavailable`, which the
    /// engine takes (`Decoder::take_unavailable`) to stop the read instead of applying `on_error`.
    pub fn into_decode_error(self, unavailable: &mut Option<Error>) -> String {
        match self {
            SchemaFailure::Bad(reason) => reason,
            SchemaFailure::Unavailable(e) => {
                let reason = e.to_string();
                *unavailable = Some(e);
                reason
            }
        }
    }
}

impl SchemaRegistry {
    pub fn new(settings: RegistrySettings) -> Result<Self> {
        if let Some(RegistryAuth::Bearer(token)) = &settings.auth {
            register_secret(token);
        }
        if let Some(RegistryAuth::Basic { password, .. }) = &settings.auth {
            register_secret(password);
        }
        let tls = TlsConfig::builder()
            .provider(TlsProvider::NativeTls)
            .root_certs(root_certs(settings.ca_location.as_deref())?)
            .disable_verification(!settings.verify)
            .build();
        let agent = Self::new_agent(&tls, settings.timeout);
        Ok(SchemaRegistry {
            settings,
            agent: Mutex::new((std::process::id(), agent)),
            tls,
            by_id: Mutex::new(HashMap::new()),
            ids: Mutex::new(HashMap::new()),
            versions: Mutex::new(HashMap::new()),
        })
    }

    fn new_agent(tls: &TlsConfig, timeout: Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            .tls_config(tls.clone())
            .timeout_global(Some(timeout))
            // Error statuses are answers to read (the registry's message), not transport errors.
            .http_status_as_error(false)
            .user_agent(concat!("kafka-ml/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent()
    }

    /// The agent of this process. A forked child (a DataLoader worker) inherits the parent's
    /// pooled keep-alive connections: sharing one socket between processes would interleave
    /// their requests, so a child starts an agent (and connections) of its own.
    fn agent(&self) -> ureq::Agent {
        let mut held = lock(&self.agent);
        let pid = std::process::id();
        if held.0 != pid {
            *held = (pid, Self::new_agent(&self.tls, self.settings.timeout));
        }
        held.1.clone()
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// The schema registered under `id` (cached).
    pub fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>> {
        if let Some(found) = lock(&self.by_id).get(&id) {
            return Ok(found.clone());
        }
        let body: SchemaBody = self.get(&format!("/schemas/ids/{id}"), &format!("schema id {id}"))?;
        let schema = Arc::new(registered(id, body)?);
        lock(&self.by_id).insert(id, schema.clone());
        Ok(schema)
    }

    /// The schema of a value's id, a failure sorted by fault: an id the registry does not know
    /// is the value's, any other failure the registry's.
    pub fn value_schema(&self, id: u32) -> std::result::Result<Arc<RegisteredSchema>, SchemaFailure> {
        self.schema_by_id(id).map_err(|e| {
            if e.is_registry_not_found() {
                SchemaFailure::Bad(format!(
                    "unknown schema id {id}: the registry at {} has no such schema",
                    self.url()
                ))
            } else {
                SchemaFailure::Unavailable(e)
            }
        })
    }

    /// A schema that a registered schema references, a failure sorted as in `value_schema`.
    pub fn referenced(
        &self,
        reference: &SchemaReference,
    ) -> std::result::Result<RegisteredSchema, SchemaFailure> {
        self.subject_version(&reference.subject, Some(reference.version))
            .map_err(|e| {
                if e.is_registry_not_found() {
                    SchemaFailure::Bad(format!("reference '{}': {e}", reference.name))
                } else {
                    SchemaFailure::Unavailable(e)
                }
            })
    }

    /// A version of `subject` (`None`: the latest).
    pub fn subject_version(&self, subject: &str, version: Option<i32>) -> Result<RegisteredSchema> {
        let v = version.map_or_else(|| "latest".to_owned(), |v| v.to_string());
        let body: SchemaBody = self.get(
            &format!("/subjects/{}/versions/{v}", segment(subject)),
            &format!("subject '{subject}' version {v}"),
        )?;
        let id = body.id.ok_or_else(|| {
            registry_error(
                format!("subject '{subject}' version {v}: the answer has no id"),
                None,
            )
        })?;
        let schema = registered(id, body)?;
        lock(&self.by_id)
            .entry(id)
            .or_insert_with(|| Arc::new(schema.clone()));
        Ok(schema)
    }

    /// The id of `schema` under `subject`: looked up, and registered first when `auto_register`
    /// (a schema the subject's compatibility rule refuses is an error naming the subject).
    pub fn id_for(
        &self,
        subject: &str,
        schema: &str,
        schema_type: SchemaType,
        references: &[SchemaReference],
        auto_register: bool,
    ) -> Result<u32> {
        let key = (subject.to_owned(), schema_type, schema.to_owned());
        if let Some(id) = lock(&self.ids).get(&key) {
            return Ok(*id);
        }
        let body = RegisterBody {
            schema,
            schema_type: schema_type.name(),
            references,
        };
        let id = if auto_register {
            let answer: IdBody = self.post(
                &format!("/subjects/{}/versions", segment(subject)),
                &body,
                &format!("registering a schema under subject '{subject}'"),
            )?;
            answer.id
        } else {
            let answer: SchemaBody = self.post(
                &format!("/subjects/{}", segment(subject)),
                &body,
                &format!("looking up the schema under subject '{subject}' (auto_register is off)"),
            )?;
            answer.id.ok_or_else(|| {
                registry_error(format!("subject '{subject}': the lookup answer has no id"), None)
            })?
        };
        lock(&self.ids).insert(key, id);
        Ok(id)
    }

    /// `id_for`, and the version the schema has under `subject`: what a reference to it names
    /// (a Protobuf import registered under its own subject). Registering answers only the id, so
    /// the version comes from a lookup (the only request without `auto_register`); both cached.
    pub fn version_for(
        &self,
        subject: &str,
        schema: &str,
        schema_type: SchemaType,
        references: &[SchemaReference],
        auto_register: bool,
    ) -> Result<(u32, i32)> {
        let key = (subject.to_owned(), schema_type, schema.to_owned());
        if let Some(found) = lock(&self.versions).get(&key) {
            return Ok(*found);
        }
        if auto_register {
            self.id_for(subject, schema, schema_type, references, true)?;
        }
        let body = RegisterBody {
            schema,
            schema_type: schema_type.name(),
            references,
        };
        let answer: SchemaBody = self.post(
            &format!("/subjects/{}", segment(subject)),
            &body,
            &format!(
                "looking up the schema under subject '{subject}'{}",
                if auto_register {
                    ""
                } else {
                    " (auto_register is off)"
                }
            ),
        )?;
        let (Some(id), Some(version)) = (answer.id, answer.version) else {
            return Err(registry_error(
                format!("subject '{subject}': the lookup answer has no id or no version"),
                None,
            ));
        };
        lock(&self.versions).insert(key, (id, version));
        Ok((id, version))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        self.call(what, || {
            self.authorize(self.agent().get(&format!("{}{path}", self.settings.url)))
                .call()
        })
    }

    fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        what: &str,
    ) -> Result<T> {
        let json = serde_json::to_vec(body).map_err(|e| Error::Config(format!("{what}: {e}")))?;
        self.call(what, || {
            self.authorize(self.agent().post(&format!("{}{path}", self.settings.url)))
                .content_type("application/vnd.schemaregistry.v1+json")
                .send(&json[..])
        })
    }

    fn authorize<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let req = req.header(
            "Accept",
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        match &self.settings.auth {
            None => req,
            Some(RegistryAuth::Bearer(token)) => req.header("Authorization", format!("Bearer {token}")),
            Some(RegistryAuth::Basic { user, password }) => {
                use base64::Engine;
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                register_secret(&pair);
                req.header("Authorization", format!("Basic {pair}"))
            }
        }
    }

    /// Sends (with retries for transient failures) and reads a JSON answer.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        send: impl Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T> {
        let url = &self.settings.url;
        let mut wait = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            let last = attempt == ATTEMPTS;
            let mut response = match send() {
                Ok(r) => r,
                Err(e) => {
                    if last || !transient(&e) {
                        return Err(transport_error(url, what, &e, attempt));
                    }
                    std::thread::sleep(wait);
                    wait *= 4;
                    continue;
                }
            };
            let status = response.status().as_u16();
            if status < 300 {
                return response.body_mut().read_json::<T>().map_err(|e| {
                    registry_error(
                        format!("{what}: the registry at {url} answered something unexpected: {e}"),
                        Some(status),
                    )
                });
            }
            if (status >= 500 || status == 429) && !last {
                std::thread::sleep(wait);
                wait *= 4;
                continue;
            }
            let body: ErrorBody = response.body_mut().read_json().unwrap_or_default();
            let message = body.message.unwrap_or_else(|| "no message".to_owned());
            let code = body
                .error_code
                .map(|c| format!(", error code {c}"))
                .unwrap_or_default();
            let hint = match status {
                401 => " (check the registry credentials)",
                403 => " (the credentials lack the right for this)",
                409 => " (the subject's compatibility rule refuses this schema)",
                422 => " (the registry finds the schema invalid)",
                _ => "",
            };
            return Err(Error::Registry {
                what: format!("{what}: HTTP {status}{code} from {url}: {message}{hint}"),
                status: Some(status),
                error_code: body.error_code,
            });
        }
        unreachable!("the last attempt returns")
    }
}

impl Error {
    /// Whether a registry error says the schema, subject or version does not exist (a value
    /// naming an unknown id is bad data; a registry that cannot answer is not).
    pub fn is_registry_not_found(&self) -> bool {
        matches!(self, Error::Registry { status: Some(404), error_code, .. }
            if error_code.is_none_or(|c| NOT_FOUND_CODES.contains(&c)))
    }
}

fn registered(id: u32, body: SchemaBody) -> Result<RegisteredSchema> {
    Ok(RegisteredSchema {
        id,
        schema: body.schema,
        schema_type: body
            .schema_type
            .as_deref()
            .map(SchemaType::parse)
            .transpose()?
            .unwrap_or_default(),
        references: body.references,
        version: body.version,
    })
}

fn registry_error(what: String, status: Option<u16>) -> Error {
    Error::Registry {
        what,
        status,
        error_code: None,
    }
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
    )
}

fn transport_error(url: &str, what: &str, e: &ureq::Error, attempts: u32) -> Error {
    let tries = if attempts > 1 {
        format!(" (tried {attempts} times)")
    } else {
        String::new()
    };
    match e {
        ureq::Error::Tls(_) | ureq::Error::NativeTls(_) => Error::Registry {
            what: format!("{what}: TLS with the registry at {url} failed: {e}"),
            status: None,
            error_code: None,
        },
        _ => Error::Registry {
            what: format!("{what}: cannot reach the schema registry at {url}{tries}: {e}"),
            status: None,
            error_code: None,
        },
    }
}

/// The CA certificates to trust: the given PEM file, or the system's.
fn root_certs(ca_location: Option<&str>) -> Result<RootCerts> {
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    #[test]
    fn an_unreachable_registry_is_not_a_missing_schema() {
        let mut settings = RegistrySettings::from_url("http://127.0.0.1:9").unwrap();
        settings.timeout = Duration::from_millis(500);
        let registry = SchemaRegistry::new(settings).unwrap();
        let err = registry.schema_by_id(1).unwrap_err();
        assert!(!err.is_registry_not_found());
        let text = err.to_string();
        assert!(
            text.contains("cannot reach the schema registry at http://127.0.0.1:9"),
            "{text}"
        );
        assert!(text.contains("schema id 1"), "{text}");
    }
}
