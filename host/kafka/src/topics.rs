//! Topic provisioning: with `kafka.topics.auto_create`, weir creates the topics its
//! Kafka sources name literally and its Kafka sinks write, when they are missing, at
//! start-up through the Kafka admin API (`CreateTopics`), with the Roost Keeper's
//! `defaultPartitions` (3) and the configured `replicationFactor`. A topic that exists is
//! left as it is, whatever its partitions.

use crate::settings::{ClusterConfig, KafkaSettingsError, TopicsConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::time::Duration;

/// Why topics could not be provisioned.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The cluster settings are unusable.
    #[error(transparent)]
    Settings(#[from] KafkaSettingsError),
    /// The admin client could not be made, or the request got no answer.
    #[error("the Kafka admin API did not answer: {0}")]
    Admin(#[source] KafkaError),
    /// The brokers refused to create a topic.
    #[error("topic `{topic}` could not be created: {code}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
}

/// Creates those of `topics` that do not exist on `cluster`; answers the ones created.
pub async fn provision(
    cluster: &ClusterConfig,
    topics: &[String],
    settings: &TopicsConfig,
) -> Result<Vec<String>, ProvisionError> {
    if topics.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> = cluster
        .client_config()?
        .create()
        .map_err(ProvisionError::Admin)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                settings.default_partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(10)))
        .operation_timeout(Some(Duration::from_secs(10)));
    let answers = admin
        .create_topics(&new, &options)
        .await
        .map_err(ProvisionError::Admin)?;
    let mut created = Vec::new();
    for answer in answers {
        match answer {
            Ok(topic) => created.push(topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(ProvisionError::Refused { topic, code }),
        }
    }
    Ok(created)
}
