//! Which ACL each request needs, after Kafka's `KafkaApis`: the operation and resource per
//! API, the error a refusal gets, and the answer that carries it. The decision itself is
//! `crate::acl::authorize`. With no authorizer configured nothing here runs.
//!
//! Produce, Fetch, Metadata and CreateTopics are decided per topic, as in Kafka: the topics
//! a principal may not touch get TOPIC_AUTHORIZATION_FAILED, the others are served. Every
//! other API is decided for the request as a whole: one resource refused refuses the request,
//! each of its items answered with the error (Kafka answers the allowed items of a
//! DescribeGroups or DeleteTopics naming several; odradek refuses them all).

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::acl::{self, Acls, AuthorizerConfig, Operation, ResourceType, CLUSTER_NAME};
use crate::wire::{encode_response, Request, RequestError};
use crate::ErrorCode;

/// One connection's standing: who it is, from where, against which ACLs.
pub struct Access<'a> {
    pub acls: &'a Acls,
    pub config: &'a AuthorizerConfig,
    pub principal: &'a str,
    pub host: &'a str,
}

impl Access<'_> {
    pub fn allows(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        acl::authorize(self.acls, self.config, self.principal, self.host, operation, resource_type, name)
    }

    pub fn topic(&self, operation: Operation, name: &str) -> bool {
        self.allows(operation, ResourceType::Topic, name)
    }

    pub fn cluster(&self, operation: Operation) -> bool {
        self.allows(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// CREATE on the cluster, or on the topic itself (Kafka accepts either).
    pub fn may_create_topic(&self, name: &str) -> bool {
        self.cluster(Operation::Create) || self.topic(Operation::Create, name)
    }
}

/// Decides a request that is authorized as a whole: `Some(answer)` carrying the refusal, to be
/// sent instead of serving it; `None` to serve it. Produce, Fetch, Metadata and CreateTopics
/// are not decided here (see the module's doc).
pub fn refuse(request: &Request, access: &Access) -> Result<Option<Bytes>, RequestError> {
    use Operation::*;
    let (version, id) = (request.version(), request.correlation_id());
    let group = |op: Operation, name: &StrBytes| access.allows(op, ResourceType::Group, name.as_str());
    let txn_id = |name: &StrBytes| access.allows(Write, ResourceType::TransactionalId, name.as_str());
    let refused = |allowed: bool, code: ErrorCode| (!allowed).then_some(code);
    let api = request.api_key;
    macro_rules! answer {
        ($response:expr) => {
            encode_response(api, version, id, &$response).map(Some)
        };
    }
    let code = |c: ErrorCode| c.code();
    match api {
        ApiKey::JoinGroup => {
            let r: JoinGroupRequest = request.decode()?;
            match refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(JoinGroupResponse::default().with_error_code(code(e)).with_generation_id(-1)),
                None => Ok(None),
            }
        }
        ApiKey::SyncGroup => {
            let r: SyncGroupRequest = request.decode()?;
            match refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(SyncGroupResponse::default().with_error_code(code(e))),
                None => Ok(None),
            }
        }
        ApiKey::Heartbeat => {
            let r: HeartbeatRequest = request.decode()?;
            match refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(HeartbeatResponse::default().with_error_code(code(e))),
                None => Ok(None),
            }
        }
        ApiKey::LeaveGroup => {
            let r: LeaveGroupRequest = request.decode()?;
            match refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(LeaveGroupResponse::default().with_error_code(code(e))),
                None => Ok(None),
            }
        }
        ApiKey::OffsetCommit => {
            let r: OffsetCommitRequest = request.decode()?;
            let error = refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed).or_else(|| {
                refused(r.topics.iter().all(|t| access.topic(Read, t.name.as_str())), ErrorCode::TopicAuthorizationFailed)
            });
            match error {
                Some(e) => answer!(OffsetCommitResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        offset_commit_response::OffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code(e))
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::TxnOffsetCommit => {
            let r: TxnOffsetCommitRequest = request.decode()?;
            let error = refused(txn_id(&r.transactional_id), ErrorCode::TransactionalIdAuthorizationFailed)
                .or_else(|| refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed))
                .or_else(|| refused(r.topics.iter().all(|t| access.topic(Read, t.name.as_str())), ErrorCode::TopicAuthorizationFailed));
            match error {
                Some(e) => answer!(TxnOffsetCommitResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            txn_offset_commit_response::TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        txn_offset_commit_response::TxnOffsetCommitResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code(e))
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::OffsetFetch => {
            let r: OffsetFetchRequest = request.decode()?;
            let topics_allowed = r.topics.as_ref().is_none_or(|ts| ts.iter().all(|t| access.topic(Describe, t.name.as_str())));
            let error = refused(group(Describe, &r.group_id), ErrorCode::GroupAuthorizationFailed)
                .or_else(|| refused(topics_allowed, ErrorCode::TopicAuthorizationFailed));
            match error {
                // v2+ carries a top-level error; before that only partitions do.
                Some(e) => answer!(OffsetFetchResponse::default().with_error_code(code(e)).with_topics(
                    r.topics
                        .iter()
                        .flatten()
                        .map(|t| {
                            offset_fetch_response::OffsetFetchResponseTopic::default().with_name(t.name.clone()).with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&p| {
                                        offset_fetch_response::OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_error_code(code(e))
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::OffsetDelete => {
            let r: OffsetDeleteRequest = request.decode()?;
            match refused(group(Delete, &r.group_id), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(OffsetDeleteResponse::default().with_error_code(code(e))),
                None => Ok(None),
            }
        }
        ApiKey::DescribeGroups => {
            let r: DescribeGroupsRequest = request.decode()?;
            match refused(r.groups.iter().all(|g| group(Describe, g)), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(DescribeGroupsResponse::default().with_groups(
                    r.groups
                        .iter()
                        .map(|g| describe_groups_response::DescribedGroup::default().with_group_id(g.clone()).with_error_code(code(e)))
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::DeleteGroups => {
            let r: DeleteGroupsRequest = request.decode()?;
            match refused(r.groups_names.iter().all(|g| group(Delete, g)), ErrorCode::GroupAuthorizationFailed) {
                Some(e) => answer!(DeleteGroupsResponse::default().with_results(
                    r.groups_names
                        .iter()
                        .map(|g| delete_groups_response::DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(code(e)))
                        .collect()
                )),
                None => Ok(None),
            }
        }
        // Kafka lists the groups a principal may describe; odradek lists them only to one that
        // may describe the cluster.
        ApiKey::ListGroups => match refused(access.cluster(Describe), ErrorCode::ClusterAuthorizationFailed) {
            Some(e) => answer!(ListGroupsResponse::default().with_error_code(code(e))),
            None => Ok(None),
        },
        ApiKey::FindCoordinator => {
            let r: FindCoordinatorRequest = request.decode()?;
            let (resource, error) = match r.key_type {
                1 => (ResourceType::TransactionalId, ErrorCode::TransactionalIdAuthorizationFailed),
                _ => (ResourceType::Group, ErrorCode::GroupAuthorizationFailed),
            };
            let keys: Vec<&StrBytes> = if version >= 4 { r.coordinator_keys.iter().collect() } else { vec![&r.key] };
            match refused(keys.iter().all(|k| access.allows(Describe, resource, k.as_str())), error) {
                Some(e) if version >= 4 => answer!(FindCoordinatorResponse::default().with_coordinators(
                    keys.iter()
                        .map(|k| {
                            find_coordinator_response::Coordinator::default()
                                .with_key((*k).clone())
                                .with_node_id((-1).into())
                                .with_port(-1)
                                .with_error_code(code(e))
                        })
                        .collect()
                )),
                Some(e) => answer!(FindCoordinatorResponse::default().with_error_code(code(e)).with_node_id((-1).into()).with_port(-1)),
                None => Ok(None),
            }
        }
        ApiKey::InitProducerId => {
            let r: InitProducerIdRequest = request.decode()?;
            let error = match r.transactional_id.as_ref().filter(|_| crate::broker::txn::is_transactional_init(&r)) {
                Some(txn) => refused(txn_id(txn), ErrorCode::TransactionalIdAuthorizationFailed),
                // An idempotent producer needs IDEMPOTENT_WRITE on the cluster, or WRITE on
                // some topic (KIP-679).
                None => refused(
                    access.cluster(IdempotentWrite)
                        || acl::authorize_any(access.acls, access.config, access.principal, access.host, Write, ResourceType::Topic),
                    ErrorCode::ClusterAuthorizationFailed,
                ),
            };
            match error {
                Some(e) => answer!(InitProducerIdResponse::default().with_error_code(code(e)).with_producer_id((-1).into()).with_producer_epoch(-1)),
                None => Ok(None),
            }
        }
        ApiKey::AddPartitionsToTxn => {
            let r: AddPartitionsToTxnRequest = request.decode()?;
            if version >= 4 {
                // Between brokers only (KIP-890 verification).
                return match refused(access.cluster(ClusterAction), ErrorCode::ClusterAuthorizationFailed) {
                    Some(e) => answer!(AddPartitionsToTxnResponse::default().with_error_code(code(e))),
                    None => Ok(None),
                };
            }
            let error = refused(txn_id(&r.v3_and_below_transactional_id), ErrorCode::TransactionalIdAuthorizationFailed).or_else(|| {
                refused(r.v3_and_below_topics.iter().all(|t| access.topic(Write, t.name.as_str())), ErrorCode::TopicAuthorizationFailed)
            });
            match error {
                Some(e) => answer!(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
                    r.v3_and_below_topics
                        .iter()
                        .map(|t| {
                            add_partitions_to_txn_response::AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(
                                t.partitions
                                    .iter()
                                    .map(|&p| {
                                        add_partitions_to_txn_response::AddPartitionsToTxnPartitionResult::default()
                                            .with_partition_index(p)
                                            .with_partition_error_code(code(e))
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::AddOffsetsToTxn => {
            let r: AddOffsetsToTxnRequest = request.decode()?;
            let error = refused(txn_id(&r.transactional_id), ErrorCode::TransactionalIdAuthorizationFailed)
                .or_else(|| refused(group(Read, &r.group_id), ErrorCode::GroupAuthorizationFailed));
            match error {
                Some(e) => answer!(AddOffsetsToTxnResponse::default().with_error_code(code(e))),
                None => Ok(None),
            }
        }
        ApiKey::EndTxn => {
            let r: EndTxnRequest = request.decode()?;
            match refused(txn_id(&r.transactional_id), ErrorCode::TransactionalIdAuthorizationFailed) {
                Some(e) => answer!(EndTxnResponse::default().with_error_code(code(e))),
                None => Ok(None),
            }
        }
        ApiKey::DescribeTransactions => {
            let r: DescribeTransactionsRequest = request.decode()?;
            let allowed = r.transactional_ids.iter().all(|t| access.allows(Describe, ResourceType::TransactionalId, t.as_str()));
            match refused(allowed, ErrorCode::TransactionalIdAuthorizationFailed) {
                Some(e) => answer!(DescribeTransactionsResponse::default().with_transaction_states(
                    r.transactional_ids
                        .iter()
                        .map(|t| {
                            describe_transactions_response::TransactionState::default()
                                .with_transactional_id(t.clone())
                                .with_error_code(code(e))
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::ListTransactions => match refused(access.cluster(Describe), ErrorCode::ClusterAuthorizationFailed) {
            Some(e) => answer!(ListTransactionsResponse::default().with_error_code(code(e))),
            None => Ok(None),
        },
        ApiKey::WriteTxnMarkers => match refused(access.cluster(ClusterAction), ErrorCode::ClusterAuthorizationFailed) {
            Some(e) => {
                let r: WriteTxnMarkersRequest = request.decode()?;
                answer!(WriteTxnMarkersResponse::default().with_markers(
                    r.markers
                        .iter()
                        .map(|m| {
                            write_txn_markers_response::WritableTxnMarkerResult::default().with_producer_id(m.producer_id).with_topics(
                                m.topics
                                    .iter()
                                    .map(|t| {
                                        write_txn_markers_response::WritableTxnMarkerTopicResult::default().with_name(t.name.clone()).with_partitions(
                                            t.partition_indexes
                                                .iter()
                                                .map(|&p| {
                                                    write_txn_markers_response::WritableTxnMarkerPartitionResult::default()
                                                        .with_partition_index(p)
                                                        .with_error_code(code(e))
                                                })
                                                .collect(),
                                        )
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                ))
            }
            None => Ok(None),
        },
        ApiKey::ListOffsets => {
            let r: ListOffsetsRequest = request.decode()?;
            let follower = r.replica_id.0 >= 0;
            let allowed = if follower { access.cluster(ClusterAction) } else { r.topics.iter().all(|t| access.topic(Describe, t.name.as_str())) };
            let error = if follower { ErrorCode::ClusterAuthorizationFailed } else { ErrorCode::TopicAuthorizationFailed };
            match refused(allowed, error) {
                Some(e) => answer!(ListOffsetsResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            list_offsets_response::ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        list_offsets_response::ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code(e))
                                            .with_offset(-1)
                                            .with_timestamp(-1)
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::OffsetForLeaderEpoch => {
            let r: OffsetForLeaderEpochRequest = request.decode()?;
            let follower = r.replica_id.0 >= 0;
            let allowed = if follower { access.cluster(ClusterAction) } else { r.topics.iter().all(|t| access.topic(Describe, t.topic.as_str())) };
            let error = if follower { ErrorCode::ClusterAuthorizationFailed } else { ErrorCode::TopicAuthorizationFailed };
            match refused(allowed, error) {
                Some(e) => answer!(OffsetForLeaderEpochResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default().with_topic(t.topic.clone()).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        offset_for_leader_epoch_response::EpochEndOffset::default()
                                            .with_partition(p.partition)
                                            .with_error_code(code(e))
                                            .with_leader_epoch(-1)
                                            .with_end_offset(-1)
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::DescribeProducers => {
            let r: DescribeProducersRequest = request.decode()?;
            match refused(r.topics.iter().all(|t| access.topic(Read, t.name.as_str())), ErrorCode::TopicAuthorizationFailed) {
                Some(e) => answer!(DescribeProducersResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            describe_producers_response::TopicResponse::default().with_name(t.name.clone()).with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&p| describe_producers_response::PartitionResponse::default().with_partition_index(p).with_error_code(code(e)))
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        // DELETE on each topic (Kafka's `KafkaApis.handleDeleteRecordsRequest`).
        ApiKey::DeleteRecords => {
            let r: DeleteRecordsRequest = request.decode()?;
            match refused(r.topics.iter().all(|t| access.topic(Delete, t.name.as_str())), ErrorCode::TopicAuthorizationFailed) {
                Some(e) => answer!(DeleteRecordsResponse::default().with_topics(
                    r.topics
                        .iter()
                        .map(|t| {
                            delete_records_response::DeleteRecordsTopicResult::default().with_name(t.name.clone()).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        delete_records_response::DeleteRecordsPartitionResult::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code(e))
                                            .with_low_watermark(-1)
                                    })
                                    .collect(),
                            )
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        // ALTER on each topic (Kafka's `ControllerApis.createPartitions`).
        ApiKey::CreatePartitions => {
            let r: CreatePartitionsRequest = request.decode()?;
            if r.topics.iter().all(|t| access.topic(Alter, t.name.as_str())) {
                return Ok(None);
            }
            answer!(CreatePartitionsResponse::default().with_results(
                r.topics
                    .iter()
                    .map(|t| {
                        let allowed = access.topic(Alter, t.name.as_str());
                        create_partitions_response::CreatePartitionsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(if allowed { code(ErrorCode::InvalidRequest) } else { code(ErrorCode::TopicAuthorizationFailed) })
                    })
                    .collect()
            ))
        }
        ApiKey::DeleteTopics => {
            let r: DeleteTopicsRequest = request.decode()?;
            // By name (v0–5) or in `topics` (v6, by name or id; an id's name is not known here,
            // so deleting by id needs DELETE on the cluster's topics through a name).
            let names: Vec<Option<StrBytes>> = if version >= 6 {
                r.topics.iter().map(|t| t.name.as_ref().map(|n| n.0.clone())).collect()
            } else {
                r.topic_names.iter().map(|n| Some(n.0.clone())).collect()
            };
            let allowed = names.iter().all(|n| n.as_ref().is_some_and(|n| access.topic(Delete, n.as_str())));
            match refused(allowed, ErrorCode::TopicAuthorizationFailed) {
                Some(e) => answer!(DeleteTopicsResponse::default().with_responses(
                    names
                        .into_iter()
                        .map(|n| delete_topics_response::DeletableTopicResult::default().with_name(n.map(TopicName)).with_error_code(code(e)))
                        .collect()
                )),
                None => Ok(None),
            }
        }
        ApiKey::DescribeConfigs => {
            let r: DescribeConfigsRequest = request.decode()?;
            let allowed = r.resources.iter().all(|res| match res.resource_type {
                2 => access.topic(DescribeConfigs, res.resource_name.as_str()),
                _ => access.cluster(DescribeConfigs),
            });
            match refused(allowed, ErrorCode::TopicAuthorizationFailed) {
                Some(_) => answer!(DescribeConfigsResponse::default().with_results(
                    r.resources
                        .iter()
                        .map(|res| {
                            let e = if res.resource_type == 2 { ErrorCode::TopicAuthorizationFailed } else { ErrorCode::ClusterAuthorizationFailed };
                            describe_configs_response::DescribeConfigsResult::default()
                                .with_resource_type(res.resource_type)
                                .with_resource_name(res.resource_name.clone())
                                .with_error_code(code(e))
                        })
                        .collect()
                )),
                None => Ok(None),
            }
        }
        // ALTER_CONFIGS on each topic, on the cluster for brokers (Kafka's `authorizeAlterResource`).
        ApiKey::IncrementalAlterConfigs | ApiKey::AlterConfigs => {
            let resources: Vec<(i8, StrBytes)> = if api == ApiKey::AlterConfigs {
                let r: AlterConfigsRequest = request.decode()?;
                r.resources.into_iter().map(|res| (res.resource_type, res.resource_name)).collect()
            } else {
                let r: IncrementalAlterConfigsRequest = request.decode()?;
                r.resources.into_iter().map(|res| (res.resource_type, res.resource_name)).collect()
            };
            let refusal = |resource_type: i8, name: &str| match resource_type {
                2 if !access.topic(AlterConfigs, name) => Some(ErrorCode::TopicAuthorizationFailed),
                2 => None,
                _ if !access.cluster(AlterConfigs) => Some(ErrorCode::ClusterAuthorizationFailed),
                _ => None,
            };
            if resources.iter().all(|(t, n)| refusal(*t, n.as_str()).is_none()) {
                return Ok(None);
            }
            let error = |t: i8, n: &StrBytes| code(refusal(t, n.as_str()).unwrap_or(ErrorCode::ClusterAuthorizationFailed));
            if api == ApiKey::AlterConfigs {
                answer!(AlterConfigsResponse::default().with_responses(
                    resources
                        .iter()
                        .map(|(t, n)| alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(*t)
                            .with_resource_name(n.clone())
                            .with_error_code(error(*t, n)))
                        .collect()
                ))
            } else {
                answer!(IncrementalAlterConfigsResponse::default().with_responses(
                    resources
                        .iter()
                        .map(|(t, n)| incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                            .with_resource_type(*t)
                            .with_resource_name(n.clone())
                            .with_error_code(error(*t, n)))
                        .collect()
                ))
            }
        }
        // KIP-546: ALTER_CONFIGS on the cluster to set quotas, DESCRIBE_CONFIGS to read them.
        ApiKey::AlterClientQuotas => {
            if access.cluster(AlterConfigs) {
                return Ok(None);
            }
            let r: AlterClientQuotasRequest = request.decode()?;
            answer!(AlterClientQuotasResponse::default().with_entries(
                r.entries
                    .into_iter()
                    .map(|e| alter_client_quotas_response::EntryData::default()
                        .with_error_code(code(ErrorCode::ClusterAuthorizationFailed))
                        .with_entity(
                            e.entity
                                .into_iter()
                                .map(|p| alter_client_quotas_response::EntityData::default()
                                    .with_entity_type(p.entity_type)
                                    .with_entity_name(p.entity_name))
                                .collect()
                        ))
                    .collect()
            ))
        }
        ApiKey::DescribeClientQuotas => {
            if access.cluster(DescribeConfigs) {
                return Ok(None);
            }
            answer!(DescribeClientQuotasResponse::default().with_error_code(code(ErrorCode::ClusterAuthorizationFailed)).with_entries(None))
        }
        // KIP-455: ALTER on the cluster to move replicas, DESCRIBE to list the moves.
        // ALTER on the cluster (Kafka's `ControllerApis.handleElectLeaders`).
        ApiKey::ElectLeaders => {
            if access.cluster(Alter) {
                return Ok(None);
            }
            answer!(ElectLeadersResponse::default().with_error_code(if version >= 1 { code(ErrorCode::ClusterAuthorizationFailed) } else { 0 }))
        }
        ApiKey::AlterPartitionReassignments | ApiKey::ListPartitionReassignments => {
            let operation = cluster_operation(api).expect("a cluster API");
            if access.cluster(operation) {
                return Ok(None);
            }
            let e = code(ErrorCode::ClusterAuthorizationFailed);
            let message = Some(StrBytes::from_static_str("Cluster authorization failed."));
            if api == ApiKey::AlterPartitionReassignments {
                answer!(AlterPartitionReassignmentsResponse::default().with_error_code(e).with_error_message(message))
            } else {
                answer!(ListPartitionReassignmentsResponse::default().with_error_code(e).with_error_message(message))
            }
        }
        ApiKey::CreateAcls | ApiKey::DeleteAcls | ApiKey::DescribeAcls | ApiKey::AlterUserScramCredentials | ApiKey::DescribeUserScramCredentials => {
            let operation = cluster_operation(api).expect("a cluster API");
            if access.cluster(operation) {
                return Ok(None);
            }
            let e = code(ErrorCode::ClusterAuthorizationFailed);
            let message = || Some(StrBytes::from_static_str("Cluster authorization failed."));
            match api {
                ApiKey::CreateAcls => {
                    let r: CreateAclsRequest = request.decode()?;
                    answer!(CreateAclsResponse::default().with_results(
                        r.creations.iter().map(|_| create_acls_response::AclCreationResult::default().with_error_code(e).with_error_message(message())).collect()
                    ))
                }
                ApiKey::DeleteAcls => {
                    let r: DeleteAclsRequest = request.decode()?;
                    answer!(DeleteAclsResponse::default().with_filter_results(
                        r.filters.iter().map(|_| delete_acls_response::DeleteAclsFilterResult::default().with_error_code(e).with_error_message(message())).collect()
                    ))
                }
                ApiKey::DescribeAcls => answer!(DescribeAclsResponse::default().with_error_code(e).with_error_message(message())),
                ApiKey::AlterUserScramCredentials => {
                    let r: AlterUserScramCredentialsRequest = request.decode()?;
                    let mut users: Vec<StrBytes> =
                        r.deletions.iter().map(|d| d.name.clone()).chain(r.upsertions.iter().map(|u| u.name.clone())).collect();
                    users.sort();
                    users.dedup();
                    answer!(AlterUserScramCredentialsResponse::default().with_results(
                        users
                            .into_iter()
                            .map(|user| {
                                alter_user_scram_credentials_response::AlterUserScramCredentialsResult::default()
                                    .with_user(user)
                                    .with_error_code(e)
                                    .with_error_message(message())
                            })
                            .collect()
                    ))
                }
                _ => answer!(DescribeUserScramCredentialsResponse::default().with_error_code(e).with_error_message(message())),
            }
        }
        // Kafka answers no log dir, and from v3 a top-level error (KIP-784).
        ApiKey::DescribeLogDirs => match refused(access.cluster(Describe), ErrorCode::ClusterAuthorizationFailed) {
            Some(e) => answer!(DescribeLogDirsResponse::default().with_error_code(if version >= 3 { code(e) } else { 0 })),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Which APIs `refuse` decides; with an authorizer on, an API in neither this list, the per-topic
/// ones, nor the always-open ones (ApiVersions, SASL) is refused by closing the connection.
pub fn is_decided(api: ApiKey) -> bool {
    use ApiKey::*;
    matches!(
        api,
        JoinGroup | SyncGroup | Heartbeat | LeaveGroup | OffsetCommit | TxnOffsetCommit | OffsetFetch | OffsetDelete | DescribeGroups
            | DeleteGroups | ListGroups | FindCoordinator | InitProducerId | AddPartitionsToTxn | AddOffsetsToTxn | EndTxn
            | DescribeTransactions | ListTransactions | WriteTxnMarkers | ListOffsets | OffsetForLeaderEpoch | DescribeProducers
            | DeleteRecords | DeleteTopics | CreatePartitions | ElectLeaders | AlterPartitionReassignments | ListPartitionReassignments | DescribeConfigs | AlterConfigs | IncrementalAlterConfigs | AlterClientQuotas | DescribeClientQuotas | CreateAcls | DeleteAcls | DescribeAcls | AlterUserScramCredentials
            | DescribeUserScramCredentials | DescribeLogDirs
    )
}

/// APIs decided topic by topic inside their handlers (`produce`, `fetch`, `filter_metadata`,
/// `create_topics`), and those every connection may use.
pub fn is_per_topic_or_open(api: ApiKey) -> bool {
    use ApiKey::*;
    matches!(api, Produce | Fetch | Metadata | CreateTopics | ApiVersions | SaslHandshake | SaslAuthenticate | DescribeCluster)
}

/// The operations Kafka reports in an answer's `cluster_authorized_operations` (its
/// `AclEntry.supportedOperations(CLUSTER)`).
const CLUSTER_OPERATIONS: [Operation; 7] = [
    Operation::Create,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
    Operation::Alter,
    Operation::Describe,
];

/// DescribeCluster's `cluster_authorized_operations` (KIP-430), as Kafka's `handleDescribeCluster`
/// computes it: every cluster operation without an authorizer (`None`), none without DESCRIBE
/// on the cluster, else a bit per operation allowed. DescribeCluster itself is served to
/// everyone, as Metadata is.
pub fn cluster_authorized_operations(access: Option<&Access>) -> i32 {
    let allowed = |op: Operation| access.is_none_or(|access| access.cluster(op));
    if !allowed(Operation::Describe) {
        return 0;
    }
    CLUSTER_OPERATIONS.iter().filter(|&&op| allowed(op)).fold(0, |bits, &op| bits | 1 << op.code())
}

/// The operations Kafka reports in a topic's `topic_authorized_operations` (its
/// `AclEntry.supportedOperations(TOPIC)`).
const TOPIC_OPERATIONS: [Operation; 8] = [
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
];

/// Metadata's `topic_authorized_operations` (KIP-430) when the client asks for it: a bit per
/// topic operation allowed, every one without an authorizer (`None`).
pub fn topic_authorized_operations(access: Option<&Access>, topic: &str) -> i32 {
    TOPIC_OPERATIONS.iter().filter(|&&op| access.is_none_or(|access| access.topic(op, topic))).fold(0, |bits, &op| bits | 1 << op.code())
}

/// Produce: removes the topics the principal may not WRITE, returning them; a transactional
/// produce whose id it may not WRITE is refused whole (`Err`).
pub fn produce(request: &mut ProduceRequest, access: &Access) -> Result<Vec<produce_request::TopicProduceData>, ErrorCode> {
    if let Some(txn) = &request.transactional_id {
        if !access.allows(Operation::Write, ResourceType::TransactionalId, txn.as_str()) {
            return Err(ErrorCode::TransactionalIdAuthorizationFailed);
        }
    }
    let (allowed, denied) = std::mem::take(&mut request.topic_data).into_iter().partition(|t| access.topic(Operation::Write, t.name.as_str()));
    request.topic_data = allowed;
    Ok(denied)
}

/// The answers of produce topics refused with `error`, added to `response`.
pub fn refuse_produce(response: &mut ProduceResponse, topics: &[produce_request::TopicProduceData], error: ErrorCode) {
    for t in topics {
        response.responses.push(
            produce_response::TopicProduceResponse::default().with_name(t.name.clone()).with_partition_responses(
                t.partition_data
                    .iter()
                    .map(|p| {
                        produce_response::PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(error.code())
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1)
                    })
                    .collect(),
            ),
        );
    }
}

/// Fetch by a consumer: removes the topics the principal may not READ, returning them. A
/// follower's fetch needs CLUSTER_ACTION (`Err`).
pub fn fetch(request: &mut FetchRequest, access: &Access) -> Result<Vec<fetch_request::FetchTopic>, ErrorCode> {
    let replica = if request.replica_state.replica_id.0 >= 0 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    if replica >= 0 {
        return if access.cluster(Operation::ClusterAction) { Ok(Vec::new()) } else { Err(ErrorCode::ClusterAuthorizationFailed) };
    }
    let (allowed, denied) = std::mem::take(&mut request.topics).into_iter().partition(|t| access.topic(Operation::Read, t.topic.as_str()));
    request.topics = allowed;
    Ok(denied)
}

/// The answers of fetch topics refused with `error`, added to `response`.
pub fn refuse_fetch(response: &mut FetchResponse, topics: &[fetch_request::FetchTopic], error: ErrorCode) {
    for t in topics {
        response.responses.push(
            fetch_response::FetchableTopicResponse::default().with_topic(t.topic.clone()).with_topic_id(t.topic_id).with_partitions(
                t.partitions
                    .iter()
                    .map(|p| {
                        fetch_response::PartitionData::default()
                            .with_partition_index(p.partition)
                            .with_error_code(error.code())
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                    })
                    .collect(),
            ),
        );
    }
}

/// Metadata: topics the principal may not DESCRIBE are left out of a listing of all topics,
/// and answered TOPIC_AUTHORIZATION_FAILED when asked for by name.
pub fn filter_metadata(response: &mut MetadataResponse, listed_all: bool, access: &Access) {
    if listed_all {
        response.topics.retain(|t| t.name.as_ref().is_some_and(|n| access.topic(Operation::Describe, n.as_str())));
        return;
    }
    for t in response.topics.iter_mut() {
        if !t.name.as_ref().is_some_and(|n| access.topic(Operation::Describe, n.as_str())) {
            *t = metadata_response::MetadataResponseTopic::default()
                .with_name(t.name.clone())
                .with_error_code(ErrorCode::TopicAuthorizationFailed.code());
        }
    }
}

/// CreateTopics: removes the topics the principal may not create, returning their names.
pub fn create_topics(request: &mut CreateTopicsRequest, access: &Access) -> Vec<TopicName> {
    let (allowed, denied): (Vec<_>, Vec<_>) =
        std::mem::take(&mut request.topics).into_iter().partition(|t| access.may_create_topic(t.name.as_str()));
    request.topics = allowed;
    denied.into_iter().map(|t| t.name).collect()
}

/// The results of refused topics, added to a CreateTopics answer.
pub fn refuse_create_topics(response: &mut CreateTopicsResponse, names: Vec<TopicName>) {
    for name in names {
        response.topics.push(
            create_topics_response::CreatableTopicResult::default()
                .with_name(name)
                .with_error_code(ErrorCode::TopicAuthorizationFailed.code())
                .with_error_message(Some(StrBytes::from_static_str("Authorization failed.")))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        );
    }
}

/// Admin APIs on the cluster resource: the operation they need.
pub fn cluster_operation(api: ApiKey) -> Option<Operation> {
    Some(match api {
        ApiKey::CreateAcls | ApiKey::DeleteAcls | ApiKey::AlterUserScramCredentials | ApiKey::AlterPartitionReassignments => {
            Operation::Alter
        }
        ApiKey::DescribeAcls | ApiKey::DescribeUserScramCredentials | ApiKey::DescribeLogDirs | ApiKey::ListPartitionReassignments => {
            Operation::Describe
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{AclBinding, PatternType, Permission};

    fn allow(resource_type: ResourceType, name: &str, pattern_type: PatternType, operation: Operation) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: "User:alice".into(),
            host: "*".into(),
            operation,
            permission: Permission::Allow,
        }
    }

    fn request<M: kafka_protocol::protocol::Encodable>(api: ApiKey, version: i16, body: &M) -> Request {
        let frame = crate::wire::encode_request(api, version, 7, "t", body).unwrap();
        crate::wire::parse_request(frame.slice(4..)).unwrap()
    }

    #[test]
    fn every_supported_api_has_an_authorization_rule() {
        for &(api, _, _) in crate::wire::SUPPORTED_APIS {
            assert!(is_decided(api) || is_per_topic_or_open(api), "{api:?} has no authorization rule");
        }
    }

    #[test]
    fn delete_records_needs_delete_on_every_topic() {
        let mut acls = Acls::default();
        acls.add(allow(ResourceType::Topic, "logs", PatternType::Literal, Operation::Delete));
        let config = AuthorizerConfig::default();
        let alice = Access { acls: &acls, config: &config, principal: "User:alice", host: "10.0.0.1" };
        let delete = |name: &str| {
            let partition = delete_records_request::DeleteRecordsPartition::default().with_partition_index(3).with_offset(5);
            let topic = delete_records_request::DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_partitions(vec![partition]);
            request(ApiKey::DeleteRecords, 2, &DeleteRecordsRequest::default().with_topics(vec![topic]))
        };
        assert_eq!(refuse(&delete("logs"), &alice).unwrap(), None);
        let answer = refuse(&delete("orders"), &alice).unwrap().expect("refused");
        let response: DeleteRecordsResponse = crate::wire::decode_response(answer.slice(4..), ApiKey::DeleteRecords, 2, 7).unwrap();
        let p = &response.topics[0].partitions[0];
        assert_eq!((p.partition_index, p.error_code, p.low_watermark), (3, ErrorCode::TopicAuthorizationFailed.code(), -1));
    }

    #[test]
    fn produce_keeps_only_writable_topics_and_refuses_the_rest_per_partition() {
        let mut acls = Acls::default();
        acls.add(allow(ResourceType::Topic, "orders-", PatternType::Prefixed, Operation::Write));
        let config = AuthorizerConfig::default();
        let alice = Access { acls: &acls, config: &config, principal: "User:alice", host: "10.0.0.1" };
        let topic = |name: &str| {
            produce_request::TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_partition_data(vec![produce_request::PartitionProduceData::default().with_index(3)])
        };
        let mut req = ProduceRequest::default().with_topic_data(vec![topic("orders-eu"), topic("payments")]);
        let denied = produce(&mut req, &alice).unwrap();
        assert_eq!(req.topic_data.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["orders-eu"]);
        let mut response = ProduceResponse::default();
        refuse_produce(&mut response, &denied, ErrorCode::TopicAuthorizationFailed);
        assert_eq!(response.responses[0].name.as_str(), "payments");
        assert_eq!(response.responses[0].partition_responses[0].error_code, ErrorCode::TopicAuthorizationFailed.code());
        let bob = Access { principal: "User:bob", ..alice };
        let mut req = ProduceRequest::default().with_topic_data(vec![topic("orders-eu")]);
        assert_eq!(produce(&mut req, &bob).unwrap().len(), 1);
        let mut txn = ProduceRequest::default().with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t1"))));
        assert_eq!(produce(&mut txn, &alice), Err(ErrorCode::TransactionalIdAuthorizationFailed));
    }

    #[test]
    fn a_group_request_without_read_on_the_group_is_answered_group_authorization_failed() {
        let mut acls = Acls::default();
        acls.add(allow(ResourceType::Group, "g1", PatternType::Literal, Operation::Read));
        let config = AuthorizerConfig::default();
        let alice = Access { acls: &acls, config: &config, principal: "User:alice", host: "10.0.0.1" };
        let join = |group: &str| request(ApiKey::JoinGroup, 5, &JoinGroupRequest::default().with_group_id(GroupId(StrBytes::from_string(group.into()))).with_protocol_type(StrBytes::from_static_str("consumer")));
        assert_eq!(refuse(&join("g1"), &alice).unwrap(), None);
        let answer = refuse(&join("g2"), &alice).unwrap().expect("refused");
        let response: JoinGroupResponse = crate::wire::decode_response(answer.slice(4..), ApiKey::JoinGroup, 5, 7).unwrap();
        assert_eq!(response.error_code, ErrorCode::GroupAuthorizationFailed.code());
        // Super users need no ACL.
        let supers = AuthorizerConfig { super_users: ["User:admin".to_owned()].into(), ..Default::default() };
        let admin = Access { acls: &acls, config: &supers, principal: "User:admin", host: "h" };
        assert_eq!(refuse(&join("g2"), &admin).unwrap(), None);
    }

    #[test]
    fn metadata_hides_what_the_principal_may_not_describe() {
        let mut acls = Acls::default();
        acls.add(allow(ResourceType::Topic, "visible", PatternType::Literal, Operation::Read));
        let config = AuthorizerConfig::default();
        let alice = Access { acls: &acls, config: &config, principal: "User:alice", host: "h" };
        let topic = |n: &str| metadata_response::MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(n.into()))));
        let mut all = MetadataResponse::default().with_topics(vec![topic("visible"), topic("secret")]);
        filter_metadata(&mut all, true, &alice);
        assert_eq!(all.topics.len(), 1);
        let mut named = MetadataResponse::default().with_topics(vec![topic("secret")]);
        filter_metadata(&mut named, false, &alice);
        assert_eq!(named.topics[0].error_code, ErrorCode::TopicAuthorizationFailed.code());
    }

    // KIP-430's bit field, as Kafka's `Utils.to32BitField` builds it from operation codes.
    #[test]
    fn cluster_authorized_operations_are_a_bit_per_allowed_cluster_operation() {
        assert_eq!(cluster_authorized_operations(None), 0b1_1111_1010_0000);
        let config = AuthorizerConfig::default();
        let nothing = Acls::default();
        let alice = Access { acls: &nothing, config: &config, principal: "User:alice", host: "h" };
        assert_eq!(cluster_authorized_operations(Some(&alice)), 0);
        let mut describer = Acls::default();
        describer.add(allow(ResourceType::Cluster, CLUSTER_NAME, PatternType::Literal, Operation::Describe));
        describer.add(allow(ResourceType::Cluster, CLUSTER_NAME, PatternType::Literal, Operation::Alter));
        let bits = cluster_authorized_operations(Some(&Access { acls: &describer, ..alice }));
        assert_eq!(bits, 1 << Operation::Describe.code() | 1 << Operation::Alter.code());
    }

    #[test]
    fn describe_log_dirs_needs_describe_on_the_cluster() {
        let config = AuthorizerConfig::default();
        let nothing = Acls::default();
        let alice = Access { acls: &nothing, config: &config, principal: "User:alice", host: "h" };
        for version in 1..=4 {
            let describe = request(ApiKey::DescribeLogDirs, version, &DescribeLogDirsRequest::default());
            let answer = refuse(&describe, &alice).unwrap().expect("refused");
            let response: DescribeLogDirsResponse =
                crate::wire::decode_response(answer.slice(4..), ApiKey::DescribeLogDirs, version, 7).unwrap();
            assert!(response.results.is_empty());
            let expected = if version >= 3 { ErrorCode::ClusterAuthorizationFailed.code() } else { 0 };
            assert_eq!(response.error_code, expected, "v{version}");
        }
        let mut describer = Acls::default();
        describer.add(allow(ResourceType::Cluster, CLUSTER_NAME, PatternType::Literal, Operation::Describe));
        let describe = request(ApiKey::DescribeLogDirs, 4, &DescribeLogDirsRequest::default());
        assert_eq!(refuse(&describe, &Access { acls: &describer, ..alice }).unwrap(), None);
    }

    #[test]
    fn an_idempotent_producer_needs_idempotent_write_or_write_on_some_topic() {
        let config = AuthorizerConfig::default();
        let init = request(ApiKey::InitProducerId, 4, &InitProducerIdRequest::default().with_transaction_timeout_ms(-1));
        let nothing = Acls::default();
        let alice = Access { acls: &nothing, config: &config, principal: "User:alice", host: "h" };
        assert!(refuse(&init, &alice).unwrap().is_some());
        let mut writer = Acls::default();
        writer.add(allow(ResourceType::Topic, "t", PatternType::Literal, Operation::Write));
        assert_eq!(refuse(&init, &Access { acls: &writer, ..alice }).unwrap(), None);
    }
}
