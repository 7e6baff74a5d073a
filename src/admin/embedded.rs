//! An in-process Kafka cluster: librdkafka's mock cluster, for demos and notebooks with nothing
//! installed. It speaks the Kafka protocol on a loopback port, so any client can use it; tests of
//! Kafka semantics use a real broker instead.

use crate::error::{Error, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

pub struct EmbeddedCluster {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedCluster {
    pub fn new(brokers: i32) -> Result<Self> {
        if brokers < 1 {
            return Err(Error::Config(format!(
                "an embedded cluster needs at least one broker, got {brokers}"
            )));
        }
        let cluster =
            MockCluster::new(brokers).map_err(|e| Error::kafka("cannot start the embedded cluster", e))?;
        Ok(EmbeddedCluster { cluster })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, name: &str, partitions: i32, replication: i32) -> Result<()> {
        self.cluster
            .create_topic(name, partitions, replication)
            .map_err(|e| Error::kafka(format!("cannot create topic '{name}'"), e))
    }
}
