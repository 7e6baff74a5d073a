//! The shared registry client: blocking requests with retries of transient failures, and caches
//! (schemas by id, ids and versions by subject and schema).

use super::settings::{root_certs, segment, RegistryAuth, RegistrySettings};
use super::{RegisteredSchema, SchemaFailure, SchemaReference, SchemaType};
use crate::client::register_secret;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ureq::tls::{TlsConfig, TlsProvider};

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

    /// An HTTPS registry is not asked in a process forked while TLS clients were open
    /// (`client::fork`): its OpenSSL set-up could hang there.
    fn refuse_https_after_fork(&self) -> Result<()> {
        if self
            .settings
            .url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            crate::client::fork::refuse_tls_if_forked_with_tls_open()?;
        }
        Ok(())
    }

    fn get<T: serde::de::DeserializeOwned>(&self, path: &str, what: &str) -> Result<T> {
        self.refuse_https_after_fork()?;
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
        self.refuse_https_after_fork()?;
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
