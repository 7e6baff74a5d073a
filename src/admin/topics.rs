//! Cluster administration the library needs itself: creating a topic with its configuration
//! (the model topic is created compacted), treating "already exists" as success.

use crate::client::{
    await_cluster, client_config, ClientHooks, ClientSettings, HasHooks, OpenSslClient, TokenRefresher,
};
use crate::consumer::{new_consumer, PlainContext};
use crate::error::{resource_kind, Error, KafkaCode, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What `create_topic` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCreation {
    /// The topic did not exist and now does, with the requested configuration.
    Created,
    /// The topic already existed; its configuration was left as it was.
    AlreadyExists,
}

/// A topic to create: name, layout and topic-level properties (`cleanup.policy`, ...).
/// `replication` -1 takes the cluster's default.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub config: Vec<(String, String)>,
}

/// Starts creating `spec` on the cluster that `config` (librdkafka properties) points at.
///
/// The returned future resolves when the controller has answered; it is runtime-agnostic
/// (librdkafka's admin thread completes it), so the caller drives it however it waits.
pub fn create_topic(
    config: &ClientSettings,
    spec: TopicSpec,
    timeout: Duration,
) -> Result<impl Future<Output = Result<TopicCreation>> + Send + 'static> {
    if spec.name.is_empty() {
        return Err(Error::Config("a topic name cannot be empty".into()));
    }
    // -1 asks for the cluster's `default.replication.factor` (KIP-464).
    if spec.partitions < 1 || (spec.replication < 1 && spec.replication != -1) {
        return Err(Error::Config(format!(
            "topic '{}': partitions must be at least 1 and replication at least 1 (or -1 for the \
             cluster's default), got {} and {}",
            spec.name, spec.partitions, spec.replication
        )));
    }
    // An existing topic needs no admin rights (a reader may lack them) and no controller
    // (librdkafka's mock cluster has none): look it up in the metadata first, with a consumer
    // (whose metadata requests never create topics) that also checks the login.
    let lookup = new_consumer(config, PlainContext::default())?;
    let config = config.clone();
    Ok(async move {
        if topic_exists(lookup, config.clone(), spec.name.clone(), timeout).await? {
            return Ok(TopicCreation::AlreadyExists);
        }
        let admin = AdminHandle::new(&config)?;
        let topic = NewTopic::new(
            &spec.name,
            spec.partitions,
            TopicReplication::Fixed(spec.replication),
        );
        let topic = spec
            .config
            .iter()
            .fold(topic, |t, (k, v)| t.set(k.as_str(), v.as_str()));
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results = admin
            .client
            .create_topics([&topic], &options)
            .await
            .map_err(|e| match e {
                KafkaError::AdminOp(code) => topic_error(&spec.name, code),
                e => Error::kafka(format!("cannot create topic '{}'", spec.name), e),
            })?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(TopicCreation::Created),
            Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(TopicCreation::AlreadyExists),
            Some(Err((_, code))) => Err(topic_error(&spec.name, code)),
            None => Err(Error::Kafka {
                what: format!(
                    "cannot create topic '{}': the cluster returned no result",
                    spec.name
                ),
                kafka: None,
            }),
        }
    })
}

/// Whether the cluster's metadata lists `name`. librdkafka's metadata call blocks, so it runs on
/// its own thread and the answer comes back through a channel, keeping the caller's wait a future.
async fn topic_exists(
    consumer: crate::consumer::ClosingConsumer<PlainContext>,
    config: ClientSettings,
    name: String,
    timeout: Duration,
) -> Result<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let found = await_cluster(&consumer, &config, timeout).and_then(|()| {
            consumer
                .fetch_metadata(Some(&name), timeout)
                .map_err(|e| Error::kafka(format!("cannot look up topic '{name}'"), e))
                .map(|md| {
                    md.topics()
                        .iter()
                        .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty())
                })
        });
        let _ = tx.send(found);
    });
    rx.await.unwrap_or_else(|_| {
        Err(Error::Kafka {
            what: "the topic lookup thread ended without an answer".into(),
            kafka: None,
        })
    })
}

/// An admin client with its token refresher (dropped first).
struct AdminHandle {
    _token_refresher: Option<TokenRefresher>,
    client: Arc<AdminClient<AdminContext>>,
}

#[derive(Default)]
struct AdminContext {
    hooks: ClientHooks,
}
crate::client_context_with_hooks!(AdminContext);

impl AdminHandle {
    fn new(config: &ClientSettings) -> Result<Self> {
        let openssl_client = OpenSslClient::claim(config)?;
        let client: Arc<AdminClient<AdminContext>> = Arc::new(
            client_config(config)
                .create_with_context(AdminContext::default())
                .map_err(|e| Error::kafka("cannot create an admin client", e))?,
        );
        client.inner().context().hooks().keep(openssl_client);
        let token_refresher = TokenRefresher::when_needed(&client, client.inner().native_ptr(), config)?;
        Ok(AdminHandle {
            _token_refresher: token_refresher,
            client,
        })
    }
}

fn topic_error(name: &str, code: RDKafkaErrorCode) -> Error {
    let what = format!("cannot create topic '{name}': {code}");
    let kafka = Some(KafkaCode::from_code(code));
    if let Some(kind) = resource_kind(code) {
        let resource = if kind == "topic" {
            format!("topic '{name}'")
        } else {
            kind.to_owned()
        };
        return Error::Authorization {
            what: format!("{what} (create on {resource})"),
            resource,
            operation: "create".to_owned(),
            kafka,
        };
    }
    match code {
        RDKafkaErrorCode::InvalidConfig
        | RDKafkaErrorCode::InvalidPartitions
        | RDKafkaErrorCode::InvalidReplicationFactor
        | RDKafkaErrorCode::InvalidTopic => Error::Config(what),
        RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut => {
            Error::Timeout { what, kafka }
        }
        _ => Error::Kafka { what, kafka },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::EmbeddedCluster;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn spec(name: &str) -> TopicSpec {
        TopicSpec {
            name: name.into(),
            partitions: 1,
            replication: 1,
            config: vec![("cleanup.policy".into(), "compact".into())],
        }
    }

    #[test]
    fn an_existing_topic_is_found_without_the_admin_api() {
        let cluster = EmbeddedCluster::new(1).unwrap();
        cluster.create_topic("models", 1, 1).unwrap();
        let config = ClientSettings::from(vec![(
            "bootstrap.servers".to_string(),
            cluster.bootstrap_servers(),
        )]);
        let found = block_on(create_topic(&config, spec("models"), Duration::from_secs(10)).unwrap());
        assert_eq!(found.unwrap(), TopicCreation::AlreadyExists);
    }

    #[test]
    fn a_failed_creation_names_the_topic() {
        // The mock cluster has no controller: CreateTopics cannot be answered there.
        let cluster = EmbeddedCluster::new(1).unwrap();
        let config = ClientSettings::from(vec![(
            "bootstrap.servers".to_string(),
            cluster.bootstrap_servers(),
        )]);
        let err = block_on(create_topic(&config, spec("new"), Duration::from_secs(1)).unwrap()).unwrap_err();
        assert!(err.to_string().contains("'new'"), "{err}");
    }

    #[test]
    fn rejects_bad_layout_before_asking_the_cluster() {
        let spec = TopicSpec {
            name: "t".into(),
            partitions: 0,
            replication: 1,
            config: vec![],
        };
        let err = create_topic(&ClientSettings::default(), spec, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}
