//! A request frame (without its size prefix), as a connection hands it to the broker: the
//! header is read ([`wire::parse_request`]), then the body is decoded for its API key and
//! version exactly as io's handlers do, and routed where core routes it.
//!
//! Properties: nothing panics; a body that decodes encodes again at its version, to the size
//! `compute_size` announced, and decodes back to the same message.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use odradek_core::broker::partitions::{
    DeleteRecordsCall, DescribeProducersCall, EpochEndCall, FetchCall, ListOffsetsCall, ListOffsetsResult, ProduceCall,
};
use odradek_core::broker::{groups, txn};
use odradek_core::controller::MetadataImage;
use odradek_core::txn::TxnConfig;
use odradek_core::wire::{self, Request, RequestError, SUPPORTED_APIS};
use odradek_core::ErrorCode;

/// Cores a request is split over; more than one so the split and merge paths run.
const CORES: usize = 3;
/// `offsets.topic.num.partitions`, which places groups.
const OFFSETS_PARTITIONS: i32 = 50;

pub fn run(data: &[u8]) {
    let Ok(request) = wire::parse_request(Bytes::copy_from_slice(data)) else { return };
    let _ = decode(&request);
}

/// Decodes (and routes) the body of `request` for its API key; `Err` when the broker would
/// refuse it. Every API in [`SUPPORTED_APIS`] has an arm.
pub fn decode(request: &Request) -> Result<(), RequestError> {
    let version = request.version();
    match request.api_key {
        ApiKey::Produce => {
            let produce: ProduceRequest = round_trip(request)?;
            let _ = ProduceCall::new(produce, version, CORES);
        }
        ApiKey::Fetch => {
            let fetch: FetchRequest = round_trip(request)?;
            let _ = FetchCall::new(&fetch, version, 0, CORES);
        }
        ApiKey::ListOffsets => {
            let (call, parts) = ListOffsetsCall::new(&round_trip(request)?, version, CORES);
            let answers = parts.into_values().map(|g| g.into_iter().map(|(pos, _)| (pos, ListOffsetsResult::error(ErrorCode::NotLeaderOrFollower))).collect()).collect();
            let _ = wire::encode_response(request.api_key, version, 0, &call.answer(answers));
        }
        ApiKey::OffsetForLeaderEpoch => {
            let (call, parts) = EpochEndCall::new(&round_trip(request)?, CORES);
            let answers = parts.into_values().map(|g| g.into_iter().map(|(pos, _)| (pos, Err(ErrorCode::NotLeaderOrFollower))).collect()).collect();
            let _ = wire::encode_response(request.api_key, version, 0, &call.answer(answers));
        }
        ApiKey::DescribeProducers => {
            let (call, parts) = DescribeProducersCall::new(&round_trip(request)?, CORES);
            let answers = parts.into_values().map(|g| g.into_iter().map(|(pos, _)| (pos, Err(ErrorCode::NotLeaderOrFollower))).collect()).collect();
            let _ = wire::encode_response(request.api_key, version, 0, &call.answer(answers));
        }
        ApiKey::DeleteRecords => {
            let (call, parts) = DeleteRecordsCall::new(&round_trip(request)?, CORES);
            let answers = parts.into_values().map(|g| g.into_iter().map(|(pos, _)| (pos, Err(ErrorCode::NotLeaderOrFollower))).collect()).collect();
            let _ = wire::encode_response(request.api_key, version, 0, &call.answer(answers));
        }
        ApiKey::Metadata => {
            round_trip::<MetadataRequest>(request)?;
        }
        ApiKey::ApiVersions => round_trip::<ApiVersionsRequest>(request).map(drop)?,
        ApiKey::CreateTopics => round_trip::<CreateTopicsRequest>(request).map(drop)?,
        ApiKey::DeleteTopics => round_trip::<DeleteTopicsRequest>(request).map(drop)?,
        ApiKey::DescribeConfigs => round_trip::<DescribeConfigsRequest>(request).map(drop)?,
        ApiKey::DescribeCluster => round_trip::<DescribeClusterRequest>(request).map(drop)?,
        ApiKey::AlterPartitionReassignments => {
            let reassign: AlterPartitionReassignmentsRequest = round_trip(request)?;
            let partitions = odradek_core::broker::admin::reassignments_request(&reassign, version);
            let _ = odradek_core::broker::admin::reassignments_response(&reassign, Some(partitions.iter().map(|_| None).collect()));
        }
        ApiKey::ElectLeaders => {
            let elect: ElectLeadersRequest = round_trip(request)?;
            let forwarded = odradek_core::broker::admin::elect_leaders_request(&elect, version);
            let _ = odradek_core::broker::admin::elect_leaders_response(&elect, version, forwarded.map(|_| Vec::new()));
        }
        ApiKey::ListPartitionReassignments => {
            let list: ListPartitionReassignmentsRequest = round_trip(request)?;
            let _ = odradek_core::broker::admin::list_reassignments(&MetadataImage::default(), &list);
        }
        ApiKey::DescribeLogDirs => round_trip::<DescribeLogDirsRequest>(request).map(drop)?,
        ApiKey::AlterClientQuotas => {
            let alter: AlterClientQuotasRequest = round_trip(request)?;
            let (forwarded, placed) = odradek_core::broker::quotas::alter_request(&alter);
            let results = forwarded.entries.iter().map(|_| None).collect();
            let _ = odradek_core::broker::quotas::alter_response(&alter, placed, Some(results), odradek_core::controller::ControllerError::Busy);
        }
        ApiKey::DescribeClientQuotas => {
            let describe: DescribeClientQuotasRequest = round_trip(request)?;
            let _ = odradek_core::broker::quotas::describe(&MetadataImage::default(), &describe);
        }
        ApiKey::CreatePartitions => {
            let create: CreatePartitionsRequest = round_trip(request)?;
            let _ = odradek_core::broker::admin::create_partitions_request(&create);
        }
        ApiKey::IncrementalAlterConfigs => {
            let alter: IncrementalAlterConfigsRequest = round_trip(request)?;
            let alterations = odradek_core::broker::configs::incremental_alterations(&alter);
            let _ = odradek_core::broker::configs::incremental_response(&alter, &alterations, None);
        }
        ApiKey::AlterConfigs => {
            let alter: AlterConfigsRequest = round_trip(request)?;
            let alterations = odradek_core::broker::configs::legacy_alterations(&alter);
            let _ = odradek_core::broker::configs::legacy_response(&alter, &alterations, None);
        }
        ApiKey::FindCoordinator => round_trip::<FindCoordinatorRequest>(request).map(drop)?,
        ApiKey::WriteTxnMarkers => round_trip::<WriteTxnMarkersRequest>(request).map(drop)?,
        ApiKey::SaslHandshake => round_trip::<SaslHandshakeRequest>(request).map(drop)?,
        ApiKey::SaslAuthenticate => round_trip::<SaslAuthenticateRequest>(request).map(drop)?,
        ApiKey::AlterUserScramCredentials => round_trip::<AlterUserScramCredentialsRequest>(request).map(drop)?,
        ApiKey::DescribeUserScramCredentials => round_trip::<DescribeUserScramCredentialsRequest>(request).map(drop)?,
        ApiKey::CreateAcls => {
            let create: CreateAclsRequest = round_trip(request)?;
            let _ = odradek_core::broker::acls::create_acls_bindings(&create);
        }
        ApiKey::DescribeAcls => {
            let describe: DescribeAclsRequest = round_trip(request)?;
            let _ = odradek_core::broker::acls::describe_acls(&Default::default(), &describe);
        }
        ApiKey::DeleteAcls => {
            let delete: DeleteAclsRequest = round_trip(request)?;
            let _ = odradek_core::broker::acls::delete_acls_filters(&delete);
        }
        ApiKey::InitProducerId => {
            let init: InitProducerIdRequest = round_trip(request)?;
            if txn::is_transactional_init(&init) {
                let _ = txn::route_init(&init, version, &TxnConfig::default());
            }
        }
        key if txn::is_txn_api(key) => {
            match key {
                ApiKey::AddPartitionsToTxn => round_trip::<AddPartitionsToTxnRequest>(request).map(drop)?,
                ApiKey::AddOffsetsToTxn => round_trip::<AddOffsetsToTxnRequest>(request).map(drop)?,
                ApiKey::EndTxn => round_trip::<EndTxnRequest>(request).map(drop)?,
                ApiKey::DescribeTransactions => round_trip::<DescribeTransactionsRequest>(request).map(drop)?,
                ApiKey::ListTransactions => round_trip::<ListTransactionsRequest>(request).map(drop)?,
                other => unreachable!("{other:?} is a transaction API without a decoder here"),
            }
            let _ = txn::route(request, &MetadataImage::default(), &TxnConfig::default())?;
        }
        key if groups::is_group_api(key) => {
            match key {
                ApiKey::JoinGroup => round_trip::<JoinGroupRequest>(request).map(drop)?,
                ApiKey::SyncGroup => round_trip::<SyncGroupRequest>(request).map(drop)?,
                ApiKey::Heartbeat => round_trip::<HeartbeatRequest>(request).map(drop)?,
                ApiKey::LeaveGroup => round_trip::<LeaveGroupRequest>(request).map(drop)?,
                ApiKey::OffsetCommit => round_trip::<OffsetCommitRequest>(request).map(drop)?,
                ApiKey::OffsetFetch => round_trip::<OffsetFetchRequest>(request).map(drop)?,
                ApiKey::DescribeGroups => round_trip::<DescribeGroupsRequest>(request).map(drop)?,
                ApiKey::ListGroups => round_trip::<ListGroupsRequest>(request).map(drop)?,
                ApiKey::DeleteGroups => round_trip::<DeleteGroupsRequest>(request).map(drop)?,
                ApiKey::OffsetDelete => round_trip::<OffsetDeleteRequest>(request).map(drop)?,
                ApiKey::TxnOffsetCommit => round_trip::<TxnOffsetCommitRequest>(request).map(drop)?,
                other => unreachable!("{other:?} is a group API without a decoder here"),
            }
            let _ = groups::route(request, "192.0.2.1:50000", OFFSETS_PARTITIONS, &MetadataImage::default())?;
        }
        other => unreachable!("{other:?} passed parse_request but is not in SUPPORTED_APIS"),
    }
    Ok(())
}

/// Decodes the body as [`Request::decode`] does and checks it encodes back to itself.
fn round_trip<M: Decodable + Encodable + PartialEq + Debug>(request: &Request) -> Result<M, RequestError> {
    let message: M = request.decode()?;
    let (api_key, version) = (request.api_key, request.version());
    let size = message.compute_size(version).unwrap_or_else(|e| panic!("{api_key:?} v{version} decoded but has no size: {e}\n{message:?}"));
    let mut buf = BytesMut::with_capacity(size);
    message.encode(&mut buf, version).unwrap_or_else(|e| panic!("{api_key:?} v{version} decoded but does not encode: {e}\n{message:?}"));
    assert_eq!(buf.len(), size, "{api_key:?} v{version}: compute_size disagrees with encode\n{message:?}");
    let encoded = buf.freeze();
    let again = M::decode(&mut encoded.clone(), version).unwrap_or_else(|e| panic!("{api_key:?} v{version} does not decode its own encoding: {e}"));
    // Floats (quota values) may be NaN, never equal to itself: compare the encodings then.
    if again != message {
        let mut re = BytesMut::with_capacity(size);
        again.encode(&mut re, version).unwrap_or_else(|e| panic!("{api_key:?} v{version} re-decoded but does not encode: {e}"));
        assert_eq!(re.freeze(), encoded, "{api_key:?} v{version} changed across encode and decode\n{message:?}");
    }
    Ok(message)
}

/// One frame per supported API and version with a default body, and one with a populated body
/// where the API carries topics, partitions, records or members.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for &(api_key, min, max) in SUPPORTED_APIS.iter() {
        for version in min..=max {
            seeds.extend(default_request(api_key, version));
            seeds.extend(populated_request(api_key, version));
        }
    }
    seeds
}

fn frame<M: Encodable>(api_key: ApiKey, version: i16, body: &M) -> Option<Vec<u8>> {
    let framed = wire::encode_request(api_key, version, 7, "fuzz", body).ok()?;
    Some(framed[4..].to_vec())
}

fn default_request(api_key: ApiKey, version: i16) -> Option<Vec<u8>> {
    macro_rules! default_body {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match api_key {
                $(ApiKey::$key => frame(api_key, version, &<$ty>::default()),)*
                _ => None,
            }
        };
    }
    default_body! {
        Produce => ProduceRequest, Fetch => FetchRequest, ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest, ApiVersions => ApiVersionsRequest, CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest, DescribeConfigs => DescribeConfigsRequest,
        FindCoordinator => FindCoordinatorRequest, JoinGroup => JoinGroupRequest, SyncGroup => SyncGroupRequest,
        Heartbeat => HeartbeatRequest, LeaveGroup => LeaveGroupRequest, OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest, DescribeGroups => DescribeGroupsRequest, ListGroups => ListGroupsRequest,
        DeleteGroups => DeleteGroupsRequest, OffsetDelete => OffsetDeleteRequest, InitProducerId => InitProducerIdRequest,
        DescribeProducers => DescribeProducersRequest, AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest, EndTxn => EndTxnRequest, WriteTxnMarkers => WriteTxnMarkersRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest, DescribeTransactions => DescribeTransactionsRequest,
        ListTransactions => ListTransactionsRequest, OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        SaslHandshake => SaslHandshakeRequest, SaslAuthenticate => SaslAuthenticateRequest,
        AlterUserScramCredentials => AlterUserScramCredentialsRequest,
        DescribeUserScramCredentials => DescribeUserScramCredentialsRequest,
        CreateAcls => CreateAclsRequest, DescribeAcls => DescribeAclsRequest, DeleteAcls => DeleteAclsRequest,
        CreatePartitions => CreatePartitionsRequest, AlterConfigs => AlterConfigsRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest, DescribeCluster => DescribeClusterRequest,
        DescribeLogDirs => DescribeLogDirsRequest, DeleteRecords => DeleteRecordsRequest,
        AlterPartitionReassignments => AlterPartitionReassignmentsRequest,
        ListPartitionReassignments => ListPartitionReassignmentsRequest, ElectLeaders => ElectLeadersRequest,
        AlterClientQuotas => AlterClientQuotasRequest, DescribeClientQuotas => DescribeClientQuotasRequest,
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn topic(name: &str) -> TopicName {
    TopicName(s(name))
}

fn populated_request(api_key: ApiKey, version: i16) -> Option<Vec<u8>> {
    let records = odradek_core::records::encode_records(
        &[(Some(Bytes::from_static(b"key")), Some(Bytes::from_static(b"value"))), (None, None)],
        1_700_000_000_000,
        kafka_protocol::records::Compression::None,
    );
    match api_key {
        ApiKey::Produce => frame(api_key, version, &ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic("orders")).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(records)),
                PartitionProduceData::default().with_index(1).with_records(None),
            ]),
        ])),
        ApiKey::Fetch => frame(api_key, version, &FetchRequest::default().with_max_wait_ms(500).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
            FetchTopic::default().with_topic(topic("orders")).with_partitions(vec![
                FetchPartition::default().with_partition(2).with_fetch_offset(10).with_partition_max_bytes(1 << 20),
            ]),
        ])),
        ApiKey::ListOffsets => frame(api_key, version, &ListOffsetsRequest::default().with_topics(vec![
            ListOffsetsTopic::default().with_name(topic("orders")).with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)]),
        ])),
        ApiKey::DeleteRecords => frame(api_key, version, &DeleteRecordsRequest::default().with_timeout_ms(30_000).with_topics(vec![
            DeleteRecordsTopic::default().with_name(topic("orders")).with_partitions(vec![
                DeleteRecordsPartition::default().with_partition_index(0).with_offset(40),
                DeleteRecordsPartition::default().with_partition_index(1).with_offset(-1),
            ]),
        ])),
        ApiKey::Metadata => frame(api_key, version, &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic("orders"))),
        ]))),
        ApiKey::CreateTopics => frame(api_key, version, &CreateTopicsRequest::default().with_timeout_ms(1_000).with_topics(vec![
            CreatableTopic::default().with_name(topic("orders")).with_num_partitions(3).with_replication_factor(1).with_configs(vec![
                CreatableTopicConfig::default().with_name(s("cleanup.policy")).with_value(Some(s("compact"))),
            ]),
        ])),
        ApiKey::JoinGroup => frame(api_key, version, &JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 1, 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 0]))])),
        ApiKey::OffsetCommit => frame(api_key, version, &OffsetCommitRequest::default().with_group_id(GroupId(s("g"))).with_topics(vec![
            OffsetCommitRequestTopic::default().with_name(topic("orders")).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_committed_offset(42).with_committed_metadata(Some(s("m"))),
            ]),
        ])),
        ApiKey::WriteTxnMarkers => frame(api_key, version, &WriteTxnMarkersRequest::default().with_markers(vec![
            WritableTxnMarker::default().with_producer_id(ProducerId(5)).with_transaction_result(true).with_topics(vec![
                WritableTxnMarkerTopic::default().with_name(topic("orders")).with_partition_indexes(vec![0, 1]),
            ]),
        ])),
        ApiKey::AlterClientQuotas => frame(api_key, version, &AlterClientQuotasRequest::default().with_entries(vec![
            alter_client_quotas_request::EntryData::default()
                .with_entity(vec![
                    alter_client_quotas_request::EntityData::default().with_entity_type(s("user")).with_entity_name(Some(s("alice"))),
                    alter_client_quotas_request::EntityData::default().with_entity_type(s("client-id")).with_entity_name(None),
                ])
                .with_ops(vec![alter_client_quotas_request::OpData::default().with_key(s("producer_byte_rate")).with_value(1024.0)]),
        ])),
        ApiKey::DescribeClientQuotas => frame(api_key, version, &DescribeClientQuotasRequest::default().with_components(vec![
            describe_client_quotas_request::ComponentData::default().with_entity_type(s("user")).with_match_type(0).with_match(Some(s("alice"))),
        ])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_api_and_version_has_a_seed_that_decodes() {
        let seeds = seeds();
        for &(api_key, min, max) in SUPPORTED_APIS.iter() {
            for version in min..=max {
                let decoded = seeds.iter().any(|seed| {
                    wire::parse_request(Bytes::copy_from_slice(seed))
                        .is_ok_and(|r| r.api_key == api_key && r.version() == version && decode(&r).is_ok())
                });
                assert!(decoded, "no decoding seed for {api_key:?} v{version}");
            }
        }
    }
}
