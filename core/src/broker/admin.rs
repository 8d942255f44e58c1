//! Administration as the broker answers it: a decoded CreateTopics, CreatePartitions,
//! DeleteTopics or AlterUserScramCredentials request becomes the active controller's request, and the
//! controller's answer becomes the Kafka response. The executor carries the request to the
//! controller, waits, and (for a creation) waits until the new topics are served before it
//! answers. DescribeUserScramCredentials is answered from the broker's own metadata image.

use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{CredentialInfo, DescribeUserScramCredentialsResult};
use kafka_protocol::messages::{
    alter_partition_reassignments_response, elect_leaders_response, list_partition_reassignments_response, ElectLeadersRequest,
    ElectLeadersResponse, AlterPartitionReassignmentsRequest,
    AlterPartitionReassignmentsResponse, BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
    create_partitions_response, AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::controller::{
    self, AlterUserScramCredentialResult, ControllerError, CreateTopicResult, DeleteTopicResult, MetadataImage,
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use crate::error::{code, ErrorCode};
use crate::group::OFFSETS_TOPIC;
use crate::ids::NodeId;
use crate::sasl::{Mechanism, ScramCredential};
use crate::topic::{BrokerLayers, TopicConfig};

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Every config of `config`, with its source, as CreateTopics v5+ and DescribeConfigs list them.
pub fn describe_topic_configs(config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    config
        .entries()
        .iter()
        .map(|entry| {
            CreatableTopicConfigs::default()
                .with_name(s(entry.name))
                .with_value(Some(s(entry.value.clone())))
                .with_config_source(entry.source.code())
        })
        .collect()
}

fn requested_configs(topic: &kafka_protocol::messages::create_topics_request::CreatableTopic) -> std::collections::BTreeMap<String, String> {
    topic.configs.iter().map(|c| (c.name.to_string(), c.value.as_deref().unwrap_or_default().to_owned())).collect()
}

/// The controller's CreateTopics for `request`, manual replica assignments included.
pub fn create_topics_request(request: &CreateTopicsRequest) -> controller::CreateTopicsRequest {
    let topics = request
        .topics
        .iter()
        .map(|t| controller::CreatableTopic {
            name: t.name.0.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: requested_configs(t),
            assignments: t.assignments.iter().map(|a| (a.partition_index, a.broker_ids.iter().map(|b| NodeId(b.0)).collect())).collect(),
        })
        .collect();
    controller::CreateTopicsRequest { topics, validate_only: request.validate_only }
}

/// The controller's CreatePartitions for a Kafka CreatePartitions request.
pub fn create_partitions_request(request: &CreatePartitionsRequest) -> controller::CreatePartitionsRequest {
    let topics = request
        .topics
        .iter()
        .map(|t| controller::CreatePartitionsTopic {
            name: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| a.iter().map(|a| a.broker_ids.iter().map(|b| NodeId(b.0)).collect()).collect()),
        })
        .collect();
    controller::CreatePartitionsRequest { topics, validate_only: request.validate_only }
}

/// The controller's reassignments for an AlterPartitionReassignments request, in its order.
pub fn reassignments_request(request: &AlterPartitionReassignmentsRequest, version: i16) -> Vec<controller::ReassignPartition> {
    request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| controller::ReassignPartition {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                target: p.replicas.as_ref().map(|r| r.iter().map(|b| NodeId(b.0)).collect()),
                allow_replication_factor_change: version < 1 || request.allow_replication_factor_change,
            })
        })
        .collect()
}

/// The Kafka response to AlterPartitionReassignments from the controller's per-partition
/// `answer` (`None`: no controller answered, a top-level REQUEST_TIMED_OUT).
pub fn reassignments_response(request: &AlterPartitionReassignmentsRequest, answer: Option<Vec<Option<ControllerError>>>) -> AlterPartitionReassignmentsResponse {
    let Some(answer) = answer else {
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(ErrorCode::RequestTimedOut.code())
            .with_error_message(Some(s("no active controller answered")));
    };
    let mut answers = answer.into_iter();
    let responses = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let (code, message) = answers.next().flatten().map_or((0, None), |e| (e.code().code(), Some(s(e.to_string()))));
                    alter_partition_reassignments_response::ReassignablePartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                        .with_error_message(message)
                })
                .collect();
            alter_partition_reassignments_response::ReassignableTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

/// ListPartitionReassignments from this broker's image: every reassignment under way, or
/// those of the partitions named (others are left out, as Kafka does).
pub fn list_reassignments(image: &MetadataImage, request: &ListPartitionReassignmentsRequest) -> ListPartitionReassignmentsResponse {
    let ids = |nodes: Vec<NodeId>| nodes.into_iter().map(|n| BrokerId(n.0)).collect::<Vec<_>>();
    let wanted = |topic: &str, partition: i32| {
        request.topics.as_ref().is_none_or(|topics| {
            topics.iter().any(|t| t.name.0.as_str() == topic && t.partition_indexes.contains(&partition))
        })
    };
    let mut topics: Vec<list_partition_reassignments_response::OngoingTopicReassignment> = Vec::new();
    for (&(topic_id, partition), r) in image.reassignments() {
        let Some(topic) = image.topics().get(&topic_id) else { continue };
        if !wanted(&topic.name, partition) {
            continue;
        }
        let ongoing = list_partition_reassignments_response::OngoingPartitionReassignment::default()
            .with_partition_index(partition)
            .with_replicas(ids(r.replicas()))
            .with_adding_replicas(ids(r.adding()))
            .with_removing_replicas(ids(r.removing()));
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == topic.name => last.partitions.push(ongoing),
            _ => topics.push(
                list_partition_reassignments_response::OngoingTopicReassignment::default()
                    .with_name(TopicName(s(topic.name.clone())))
                    .with_partitions(vec![ongoing]),
            ),
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

/// The controller's ElectLeaders for a Kafka one: election type 0 preferred, 1 unclean.
pub fn elect_leaders_request(request: &ElectLeadersRequest, version: i16) -> Result<controller::ElectLeadersRequest, ErrorCode> {
    let unclean = match if version == 0 { 0 } else { request.election_type } {
        0 => false,
        1 => true,
        _ => return Err(ErrorCode::InvalidRequest),
    };
    let partitions = request
        .topic_partitions
        .as_ref()
        .map(|topics| topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p))).collect());
    Ok(controller::ElectLeadersRequest { unclean, partitions })
}

/// The Kafka response to ElectLeaders: per topic its partitions' outcomes (`answer` `None`:
/// no controller answered, a top-level REQUEST_TIMED_OUT from v1, per partition in v0).
pub fn elect_leaders_response(
    request: &ElectLeadersRequest,
    version: i16,
    answer: Result<Vec<(String, i32, Option<ControllerError>)>, ErrorCode>,
) -> ElectLeadersResponse {
    let results = match answer {
        Ok(results) => results,
        Err(error) => {
            if version >= 1 {
                return ElectLeadersResponse::default().with_error_code(error.code());
            }
            let every = request.topic_partitions.iter().flatten();
            every.flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p, Some(ControllerError::Busy)))).collect()
        }
    };
    let mut topics: Vec<elect_leaders_response::ReplicaElectionResult> = Vec::new();
    for (topic, partition, error) in results {
        let (code, message) = error.map_or((0, None), |e| (e.code().code(), Some(s(e.to_string()))));
        let result = elect_leaders_response::PartitionResult::default().with_partition_id(partition).with_error_code(code).with_error_message(message);
        match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
            Some(t) => t.partition_result.push(result),
            None => topics.push(elect_leaders_response::ReplicaElectionResult::default().with_topic(TopicName(s(topic))).with_partition_result(vec![result])),
        }
    }
    ElectLeadersResponse::default().with_replica_election_results(topics)
}

/// The Kafka response to CreatePartitions from the controller's `answer` (`None`: no
/// controller answered).
pub fn create_partitions_response(request: &CreatePartitionsRequest, answer: Option<Vec<Option<ControllerError>>>) -> CreatePartitionsResponse {
    let mut answers = answer.map(|a| a.into_iter());
    let results = request
        .topics
        .iter()
        .map(|t| {
            let error = match answers.as_mut().map(|a| a.next()) {
                Some(Some(error)) => error.map(|e| (e.code(), e.to_string())),
                _ => Some((ErrorCode::RequestTimedOut, "no active controller answered".to_owned())),
            };
            let (code, message) = error.map_or((0, None), |(e, m)| (e.code(), Some(s(m))));
            create_partitions_response::CreatePartitionsTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(code)
                .with_error_message(message)
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// The Kafka response to `request` of `version`, from the controller's `answer` (`None`: the
/// request was not forwarded, or no controller answered). `defaults` are the broker's, which
/// v5+ report with each created topic's configs.
pub fn create_topics_response(
    request: &CreateTopicsRequest,
    version: i16,
    answer: Option<Vec<CreateTopicResult>>,
    defaults: &BrokerLayers,
) -> CreateTopicsResponse {
    let results = match answer {
        Some(results) => results
            .into_iter()
            .map(|r| match r.error {
                Some(e) => failed_topic(r.name, e.code(), e.to_string()),
                None => {
                    let mut result = CreatableTopicResult::default().with_name(s(r.name.clone()).into());
                    if version >= 5 {
                        let configs = request.topics.iter().find(|t| t.name.0.as_str() == r.name).map(requested_configs);
                        let described =
                            TopicConfig::new(defaults, configs.unwrap_or_default()).map(|c| describe_topic_configs(&c)).unwrap_or_default();
                        result = result
                            .with_num_partitions(r.num_partitions)
                            .with_replication_factor(r.replication_factor)
                            .with_configs(Some(described));
                    }
                    if version >= 7 {
                        result = result.with_topic_id(uuid::Uuid::from_bytes(r.topic_id));
                    }
                    result
                }
            })
            .collect(),
        None => request
            .topics
            .iter()
            .map(|t| failed_topic(t.name.0.to_string(), ErrorCode::RequestTimedOut, "no active controller answered".into()))
            .collect(),
    };
    CreateTopicsResponse::default().with_topics(results)
}

fn failed_topic(name: String, error: ErrorCode, message: String) -> CreatableTopicResult {
    tracing::debug!(topic = %name, %message, "create topic refused");
    CreatableTopicResult::default().with_name(s(name).into()).with_error_code(error.code()).with_error_message(Some(s(message)))
}

/// The topics a DeleteTopics request of `version` names, in order: by name, or (v6+) by id
/// looked up in `image` (`None`: an id no topic has).
pub fn delete_topics_names(image: &MetadataImage, request: DeleteTopicsRequest, version: i16) -> Vec<Option<String>> {
    if version >= 6 {
        request
            .topics
            .into_iter()
            .map(|t| {
                t.name.map(|n| n.0.to_string()).or_else(|| {
                    image.topics().values().find(|i| i.id == *t.topic_id.as_bytes()).map(|i| i.name.clone())
                })
            })
            .collect()
    } else {
        request.topic_names.into_iter().map(|n| Some(n.0.to_string())).collect()
    }
}

/// What the controller is asked to delete: the named topics but `__consumer_offsets`, whose
/// records are the groups (it cannot be deleted, as in Kafka).
/// A name no topic can have is not forwarded: it is unknown here already, and an arbitrarily
/// long one (flexible versions allow them) would not fit the controller request's strings.
pub fn deletable(names: &[Option<String>]) -> Vec<String> {
    names
        .iter()
        .flatten()
        .filter(|n| n.as_str() != OFFSETS_TOPIC && crate::topic::validate_topic_name(n).is_ok())
        .cloned()
        .collect()
}

/// The Kafka response for `names` ([`delete_topics_names`]) from the controller's `answer`
/// (`None`: no controller answered, REQUEST_TIMED_OUT for each).
pub fn delete_topics_response(names: Vec<Option<String>>, version: i16, answer: Option<Vec<DeleteTopicResult>>) -> DeleteTopicsResponse {
    let results = answer.unwrap_or_default();
    let responses = names
        .into_iter()
        .map(|name| match name {
            None => DeletableTopicResult::default().with_error_code(ErrorCode::UnknownTopicId.code()),
            Some(name) => {
                let found = results.iter().find(|r| r.name == name);
                let error = match found {
                    _ if name == OFFSETS_TOPIC => Some(ErrorCode::InvalidTopicException),
                    _ if crate::topic::validate_topic_name(&name).is_err() => Some(ErrorCode::UnknownTopicOrPartition),
                    Some(r) => r.error.as_ref().map(|e| e.code()),
                    None => Some(ErrorCode::RequestTimedOut),
                };
                let topic_id = match found {
                    Some(r) if version >= 6 => uuid::Uuid::from_bytes(r.topic_id),
                    _ => uuid::Uuid::nil(),
                };
                DeletableTopicResult::default().with_name(Some(s(name).into())).with_topic_id(topic_id).with_error_code(code(error))
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}

// ---- SCRAM credentials (KIP-554) ----

/// The longest user name taken. Kafka's generated readers refuse a longer string, and the
/// controller RPC and the metadata log give strings 16-bit lengths.
pub const MAX_SCRAM_USER_BYTES: usize = i16::MAX as usize;
/// The most credential bytes one AlterUserScramCredentials may forward (thousands of users):
/// far below the controller listener's frame and the metadata log's entry limits, which a
/// request up to `socket.request.max.bytes` could otherwise exceed.
pub const MAX_SCRAM_ALTERATION_BYTES: usize = 1 << 20;

/// The request's users, each once, in the order they first appear (deletions, then
/// upsertions): the order of the results.
fn scram_users(request: &AlterUserScramCredentialsRequest) -> Vec<String> {
    let names = request.deletions.iter().map(|d| &d.name).chain(request.upsertions.iter().map(|u| &u.name));
    let mut seen = std::collections::BTreeSet::new();
    names.filter(|n| seen.insert(n.as_str())).map(|n| n.to_string()).collect()
}

/// The controller's AlterUserScramCredentials for `request`, each upsertion's salted password
/// turned into the credential to store here, so it travels no further. `Err`: the request is
/// refused whole, with a result for each of its users.
pub fn alter_user_scram_credentials_request(
    request: &AlterUserScramCredentialsRequest,
) -> Result<controller::AlterUserScramCredentialsRequest, Vec<AlterUserScramCredentialResult>> {
    let refuse = |error: ControllerError| {
        scram_users(request).into_iter().map(|user| AlterUserScramCredentialResult { user, error: Some(error.clone()) }).collect()
    };
    let names = request.deletions.iter().map(|d| &d.name).chain(request.upsertions.iter().map(|u| &u.name));
    if names.clone().any(|n| n.len() > MAX_SCRAM_USER_BYTES) {
        return Err(refuse(ControllerError::UnacceptableCredential(format!(
            "Username must not be longer than {MAX_SCRAM_USER_BYTES} bytes"
        ))));
    }
    let deletions: Vec<ScramCredentialDeletion> = request
        .deletions
        .iter()
        .map(|d| ScramCredentialDeletion { name: d.name.to_string(), mechanism: d.mechanism })
        .collect();
    let upsertions: Vec<ScramCredentialUpsertion> = request
        .upsertions
        .iter()
        .map(|u| {
            let credential = match Mechanism::from_scram_type(u.mechanism) {
                // Kafka's ScramFormatter: StoredKey = H(HMAC(salted, "Client Key")), ServerKey =
                // HMAC(salted, "Server Key"). No PBKDF2 here: the client salted the password.
                Some(mechanism) => ScramCredential::from_salted_password(mechanism, &u.salt, &u.salted_password, u.iterations),
                None => ScramCredential { salt: u.salt.to_vec(), stored_key: Vec::new(), server_key: Vec::new(), iterations: u.iterations },
            };
            ScramCredentialUpsertion { name: u.name.to_string(), mechanism: u.mechanism, credential }
        })
        .collect();
    let bytes: usize = deletions.iter().map(|d| d.name.len() + 8).sum::<usize>()
        + upsertions
            .iter()
            .map(|u| u.name.len() + u.credential.salt.len() + u.credential.stored_key.len() + u.credential.server_key.len() + 24)
            .sum::<usize>();
    if bytes > MAX_SCRAM_ALTERATION_BYTES {
        return Err(refuse(ControllerError::PolicyViolation(format!(
            "the request alters {bytes} bytes of credentials; at most {MAX_SCRAM_ALTERATION_BYTES} are taken at once"
        ))));
    }
    Ok(controller::AlterUserScramCredentialsRequest { deletions, upsertions })
}

/// The Kafka response to `request` from the `answer` (`None`: no controller answered,
/// REQUEST_TIMED_OUT for each user).
pub fn alter_user_scram_credentials_response(
    request: &AlterUserScramCredentialsRequest,
    answer: Option<Vec<AlterUserScramCredentialResult>>,
) -> AlterUserScramCredentialsResponse {
    let answered: std::collections::BTreeMap<String, Option<ControllerError>> =
        answer.unwrap_or_default().into_iter().map(|r| (r.user, r.error)).collect();
    let results = scram_users(request)
        .into_iter()
        .map(|user| {
            let (error, message) = match answered.get(&user) {
                Some(None) => (None, None),
                Some(Some(e)) => (Some(e.code()), Some(e.to_string())),
                None => (Some(ErrorCode::RequestTimedOut), Some("no active controller answered".to_owned())),
            };
            AlterUserScramCredentialsResult::default()
                .with_user(s(user))
                .with_error_code(code(error))
                .with_error_message(message.map(s))
        })
        .collect();
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// Whether `image` shows the alterations the controller accepted (`answer`): the broker
/// answers once its own image does, so a describe to it right after sees the change.
pub fn scram_alterations_applied(
    image: &MetadataImage,
    request: &controller::AlterUserScramCredentialsRequest,
    answer: &[AlterUserScramCredentialResult],
) -> bool {
    let accepted: std::collections::BTreeSet<&str> = answer.iter().filter(|r| r.error.is_none()).map(|r| r.user.as_str()).collect();
    let accepted = |name: &str| accepted.contains(name);
    let deleted = request.deletions.iter().filter(|d| accepted(&d.name)).all(|d| {
        Mechanism::from_scram_type(d.mechanism).is_none_or(|m| image.scram_credential(m, &d.name).is_none())
    });
    let upserted = request.upsertions.iter().filter(|u| accepted(&u.name)).all(|u| {
        Mechanism::from_scram_type(u.mechanism).is_none_or(|m| image.scram_credential(m, &u.name) == Some(&u.credential))
    });
    deleted && upserted
}

/// DescribeUserScramCredentials from `image`, as Kafka's `ScramImage.describe`: no user list
/// (or an empty one) describes every user with a credential; a user named twice gets
/// DUPLICATE_RESOURCE, one without a credential RESOURCE_NOT_FOUND. Only mechanisms and
/// iterations leave the broker.
pub fn describe_user_scram_credentials(
    image: &MetadataImage,
    request: &DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    // Each user once, in request order, with whether it was named more than once.
    let mut users: Vec<(String, bool)> = Vec::new();
    match request.users.as_deref() {
        None | Some([]) => {
            let mut all: Vec<&str> = image.scram_credentials().map(|(user, _, _)| user).collect();
            all.dedup();
            users.extend(all.into_iter().map(|u| (u.to_owned(), false)));
        }
        Some(named) => {
            let mut index: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
            for name in named.iter().map(|u| u.name.as_str()) {
                match index.get(name) {
                    Some(&i) => users[i].1 = true,
                    None => {
                        index.insert(name, users.len());
                        users.push((name.to_owned(), false));
                    }
                }
            }
        }
    }
    let results = users
        .into_iter()
        .map(|(user, twice)| {
            let result = DescribeUserScramCredentialsResult::default().with_user(s(user.clone()));
            if twice {
                return result.with_error_code(ErrorCode::DuplicateResource.code()).with_error_message(Some(s(format!(
                    "Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
                ))));
            }
            let infos: Vec<CredentialInfo> = image
                .scram_credentials_of(&user)
                .filter_map(|(mechanism, credential)| {
                    let info = CredentialInfo::default().with_iterations(credential.iterations);
                    mechanism.scram_type().map(|t| info.with_mechanism(t))
                })
                .collect();
            if infos.is_empty() {
                return result.with_error_code(ErrorCode::ResourceNotFound.code()).with_error_message(Some(s(format!(
                    "Attempt to describe a user credential that does not exist: {user}"
                ))));
            }
            result.with_credential_infos(infos)
        })
        .collect();
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TopicName;

    #[test]
    fn a_name_no_topic_can_have_is_unknown_and_not_forwarded() {
        let long = "t".repeat(70_000);
        let names = vec![Some(long.clone()), Some("orders".to_owned())];
        assert_eq!(deletable(&names), ["orders"]);
        let response = delete_topics_response(names, 6, Some(Vec::new()));
        assert_eq!(response.responses[0].error_code, ErrorCode::UnknownTopicOrPartition.code());
    }

    #[test]
    fn deleting_the_offsets_topic_is_refused_and_unknown_ids_are_reported() {
        let request = DeleteTopicsRequest::default().with_topic_names(vec![
            TopicName(s("t")),
            TopicName(s(OFFSETS_TOPIC)),
        ]);
        let names = delete_topics_names(&MetadataImage::default(), request, 5);
        assert_eq!(deletable(&names), vec!["t".to_owned()]);
        let answer = vec![DeleteTopicResult { name: "t".into(), error: None, topic_id: [7; 16] }];
        let response = delete_topics_response(names, 5, Some(answer));
        let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![0, ErrorCode::InvalidTopicException.code()]);
        let timed_out = delete_topics_response(vec![Some("t".into()), None], 6, None);
        let codes: Vec<i16> = timed_out.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, vec![ErrorCode::RequestTimedOut.code(), ErrorCode::UnknownTopicId.code()]);
    }

    #[test]
    fn manual_assignments_reach_the_controller_and_partitions_are_answered_in_order() {
        use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
        use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
        let topic = CreatableTopic::default().with_name(TopicName(s("t"))).with_num_partitions(-1).with_replication_factor(-1).with_assignments(vec![
            CreatableReplicaAssignment::default().with_partition_index(1).with_broker_ids(vec![BrokerId(2), BrokerId(3)]),
            CreatableReplicaAssignment::default().with_partition_index(0).with_broker_ids(vec![BrokerId(1), BrokerId(2)]),
        ]);
        let forwarded = create_topics_request(&CreateTopicsRequest::default().with_topics(vec![topic]));
        assert_eq!(forwarded.topics[0].assignments, vec![(1, vec![NodeId(2), NodeId(3)]), (0, vec![NodeId(1), NodeId(2)])]);

        let request = CreatePartitionsRequest::default().with_topics(vec![
            CreatePartitionsTopic::default().with_name(TopicName(s("a"))).with_count(3),
            CreatePartitionsTopic::default()
                .with_name(TopicName(s("b")))
                .with_count(2)
                .with_assignments(Some(vec![CreatePartitionsAssignment::default().with_broker_ids(vec![BrokerId(3)])])),
        ]);
        let forwarded = create_partitions_request(&request);
        assert_eq!(forwarded.topics[1].assignments, Some(vec![vec![NodeId(3)]]));
        let response = create_partitions_response(&request, Some(vec![None, Some(ControllerError::InvalidPartitions("no".into()))]));
        let codes: Vec<i16> = response.results.iter().map(|r| r.error_code).collect();
        assert_eq!(codes, [0, ErrorCode::InvalidPartitions.code()]);
        let unanswered = create_partitions_response(&request, None);
        assert!(unanswered.results.iter().all(|r| r.error_code == ErrorCode::RequestTimedOut.code()));
    }

    mod scram {
        use super::*;
        use kafka_protocol::messages::alter_user_scram_credentials_request::{ScramCredentialDeletion, ScramCredentialUpsertion};
        use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;

        fn image_with(credentials: &[(&str, Mechanism, i32)]) -> MetadataImage {
            let mut image = MetadataImage::default();
            for (i, (name, mechanism, iterations)) in credentials.iter().enumerate() {
                let credential = ScramCredential { salt: vec![i as u8; 16], stored_key: vec![1; 32], server_key: vec![2; 32], iterations: *iterations };
                image
                    .apply(&controller::MetadataRecord::UserScramCredential { name: (*name).into(), mechanism: *mechanism, credential })
                    .unwrap();
            }
            image
        }

        /// User, error code, error message, (mechanism, iterations) of each credential.
        type Described = (String, i16, Option<String>, Vec<(i8, i32)>);

        fn describe(image: &MetadataImage, users: Option<&[&str]>) -> Vec<Described> {
            let users = users.map(|u| u.iter().map(|n| UserName::default().with_name(s(*n))).collect());
            let request = DescribeUserScramCredentialsRequest::default().with_users(users);
            let response = describe_user_scram_credentials(image, &request);
            assert_eq!(response.error_code, 0);
            response
                .results
                .into_iter()
                .map(|r| {
                    let infos = r.credential_infos.iter().map(|i| (i.mechanism, i.iterations)).collect();
                    (r.user.to_string(), r.error_code, r.error_message.map(|m| m.to_string()), infos)
                })
                .collect()
        }

        // Guards KRaft's ScramImage.describe: every user with a credential when none is named,
        // mechanism and iterations only, and per-user errors for unknown and repeated users.
        #[test]
        fn scram_describe_lists_mechanisms_and_iterations_with_kafkas_errors() {
            let image = image_with(&[
                ("bob", Mechanism::ScramSha512, 8192),
                ("alice", Mechanism::ScramSha512, 4096),
                ("alice", Mechanism::ScramSha256, 16_384),
            ]);
            // An empty message where all is well: the field's default, which Kafka leaves too.
            let fine = Some(String::new());
            let all = vec![
                ("alice".to_owned(), 0, fine.clone(), vec![(1, 16_384), (2, 4096)]),
                ("bob".to_owned(), 0, fine.clone(), vec![(2, 8192)]),
            ];
            assert_eq!(describe(&image, None), all);
            assert_eq!(describe(&image, Some(&[])), all);
            assert_eq!(describe(&MetadataImage::default(), None), vec![]);
            let named = describe(&image, Some(&["bob", "carol", "alice", "bob"]));
            assert_eq!(
                named,
                vec![
                    (
                        "bob".to_owned(),
                        ErrorCode::DuplicateResource.code(),
                        Some("Cannot describe SCRAM credentials for the same user twice in a single request: bob".to_owned()),
                        vec![]
                    ),
                    (
                        "carol".to_owned(),
                        ErrorCode::ResourceNotFound.code(),
                        Some("Attempt to describe a user credential that does not exist: carol".to_owned()),
                        vec![]
                    ),
                    ("alice".to_owned(), 0, fine, vec![(1, 16_384), (2, 4096)]),
                ]
            );
        }

        fn upsertion(name: &str, mechanism: i8, iterations: i32, salted: &[u8]) -> ScramCredentialUpsertion {
            ScramCredentialUpsertion::default()
                .with_name(s(name))
                .with_mechanism(mechanism)
                .with_iterations(iterations)
                .with_salt(bytes::Bytes::from_static(b"0123456789abcdef"))
                .with_salted_password(bytes::Bytes::copy_from_slice(salted))
        }

        // Guards KIP-554's division of labour: the client salts the password, the broker derives
        // StoredKey and ServerKey from it (the same credential a password login is checked
        // against), and the salted password itself is not forwarded.
        #[test]
        fn scram_upsertions_are_forwarded_as_stored_credentials() {
            let salt = b"0123456789abcdef";
            let salted = crate::sasl::salted_password(Mechanism::ScramSha256, "pw", salt, 4096);
            let request = AlterUserScramCredentialsRequest::default()
                .with_deletions(vec![ScramCredentialDeletion::default().with_name(s("old")).with_mechanism(2)])
                .with_upsertions(vec![upsertion("alice", 1, 4096, &salted), upsertion("odd", 7, 4096, &salted)]);
            let forwarded = alter_user_scram_credentials_request(&request).unwrap();
            assert_eq!(forwarded.deletions, vec![controller::ScramCredentialDeletion { name: "old".into(), mechanism: 2 }]);
            let alice = &forwarded.upsertions[0];
            assert_eq!((alice.name.as_str(), alice.mechanism), ("alice", 1));
            assert_eq!(alice.credential, ScramCredential::from_password(Mechanism::ScramSha256, "pw", salt, 4096));
            assert!(forwarded.upsertions.iter().all(|u| u.credential.stored_key != salted && u.credential.server_key != salted));
            // An unknown mechanism goes on without keys, for the controller to refuse as Kafka's.
            let odd = &forwarded.upsertions[1];
            assert_eq!((odd.mechanism, odd.credential.stored_key.len(), odd.credential.iterations), (7, 0, 4096));

            // Users in first-appearance order; a user the controller did not answer timed out.
            let answer = vec![
                AlterUserScramCredentialResult { user: "alice".into(), error: None },
                AlterUserScramCredentialResult {
                    user: "odd".into(),
                    error: Some(ControllerError::UnsupportedSaslMechanism("Unknown SCRAM mechanism".into())),
                },
            ];
            let response = alter_user_scram_credentials_response(&request, Some(answer.clone()));
            let results: Vec<(&str, i16, Option<&str>)> =
                response.results.iter().map(|r| (r.user.as_str(), r.error_code, r.error_message.as_deref())).collect();
            assert_eq!(
                results,
                vec![
                    ("old", ErrorCode::RequestTimedOut.code(), Some("no active controller answered")),
                    ("alice", 0, None),
                    ("odd", ErrorCode::UnsupportedSaslMechanism.code(), Some("Unknown SCRAM mechanism")),
                ]
            );

            // The broker waits for its image to show what was accepted, and only that.
            let mut image = MetadataImage::default();
            assert!(!scram_alterations_applied(&image, &forwarded, &answer));
            let record = controller::MetadataRecord::UserScramCredential {
                name: "alice".into(),
                mechanism: Mechanism::ScramSha256,
                credential: alice.credential.clone(),
            };
            image.apply(&record).unwrap();
            assert!(scram_alterations_applied(&image, &forwarded, &answer));
        }

        // Guards the controller RPC and the metadata log against what a client may send: names
        // longer than their 16-bit string lengths, and more credentials than one entry holds.
        #[test]
        fn scram_alterations_too_large_to_forward_are_refused_for_every_user() {
            let long = "u".repeat(MAX_SCRAM_USER_BYTES + 1);
            let request = AlterUserScramCredentialsRequest::default()
                .with_deletions(vec![ScramCredentialDeletion::default().with_name(s("a")).with_mechanism(1)])
                .with_upsertions(vec![upsertion(&long, 1, 4096, &[0; 32])]);
            let refused = alter_user_scram_credentials_request(&request).unwrap_err();
            let codes: Vec<(usize, Option<ErrorCode>)> = refused.iter().map(|r| (r.user.len(), r.error.as_ref().map(|e| e.code()))).collect();
            assert_eq!(codes, vec![(1, Some(ErrorCode::UnacceptableCredential)), (long.len(), Some(ErrorCode::UnacceptableCredential))]);
            let fits = "u".repeat(MAX_SCRAM_USER_BYTES);
            let many: Vec<ScramCredentialUpsertion> = (0..40).map(|i| upsertion(&format!("{fits}{i}")[i.to_string().len()..], 1, 4096, &[0; 32])).collect();
            let request = AlterUserScramCredentialsRequest::default().with_upsertions(many);
            let refused = alter_user_scram_credentials_request(&request).unwrap_err();
            assert_eq!(refused.len(), 40);
            assert!(refused.iter().all(|r| r.error.as_ref().map(|e| e.code()) == Some(ErrorCode::PolicyViolation)));
            assert!(alter_user_scram_credentials_request(&AlterUserScramCredentialsRequest::default().with_upsertions(vec![upsertion(&fits, 1, 4096, &[0; 32])])).is_ok());
        }
    }
}
