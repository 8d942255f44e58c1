//! What the controller listener and the metadata log carry: a [`Frame`] off the network, a Raft
//! [`Message`], a log [`Entry`] and the [`HardState`] off disk, and the metadata records of one
//! entry ([`controller::decode_records`]), which a node then applies to its image.
//!
//! Input: a byte picking the decoder, then its bytes.
//!
//! Properties: nothing panics; what decodes encodes back to the same value (and a log entry,
//! whose encoding is canonical, to the same bytes); applying decoded records keeps the image's
//! invariants.

use std::collections::BTreeMap;

use bytes::Bytes;
use odradek_core::acl::{AclBinding, AclBindingFilter, Operation, PatternType, Permission, ResourceType};
use odradek_core::controller::{self, AlterPartitionRequest, ControllerError, CreatableTopic, CreateTopicResult, CreateTopicsRequest, Endpoint, MetadataImage, MetadataRecord, Response};
use odradek_core::controller_rpc::{ControllerRequest, Frame};
use odradek_core::ids::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, Term};
use odradek_core::raft::{Entry, HardState, Index, Message};
use odradek_core::sasl::{Mechanism, ScramCredential};

pub fn run(data: &[u8]) {
    let ([which], bytes) = crate::params::<1>(data);
    match which % 5 {
        0 => {
            if let Ok(frame) = Frame::decode(bytes) {
                assert_eq!(Frame::decode(&frame.encode()), Ok(frame));
            }
        }
        1 => {
            let bytes = Bytes::copy_from_slice(bytes);
            if let Ok(message) = Message::decode(&bytes) {
                assert_eq!(Message::decode(&message.encode()), Ok(message));
            }
        }
        2 => {
            let bytes = Bytes::copy_from_slice(bytes);
            if let Ok(entry) = Entry::decode(&bytes) {
                assert_eq!(entry.encode(), bytes);
            }
        }
        3 => {
            if let Ok(state) = HardState::decode(bytes) {
                assert_eq!(HardState::decode(&state.encode()), Ok(state));
            }
        }
        _ => {
            let Ok(records) = controller::decode_records(bytes) else { return };
            assert_eq!(controller::decode_records(&controller::encode_records(&records)).as_ref(), Ok(&records));
            let mut image = MetadataImage::default();
            for record in &records {
                let _ = image.apply(record);
                image.check_invariants();
            }
        }
    }
}

pub fn seeds() -> Vec<Vec<u8>> {
    let topic_id = [9; 16];
    let scram = ScramCredential { salt: vec![1; 16], stored_key: vec![2; 32], server_key: vec![3; 32], iterations: 4096 };
    let acl = AclBinding {
        resource_type: ResourceType::Topic,
        resource_name: "ord".into(),
        pattern_type: PatternType::Prefixed,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: Operation::Read,
        permission: Permission::Allow,
    };
    let records = vec![
        MetadataRecord::RegisterBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1), incarnation_id: [1; 16], endpoints: vec![Endpoint { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }], rack: None },
        MetadataRecord::RegisterBroker { broker_id: NodeId(2), broker_epoch: BrokerEpoch(2), incarnation_id: [2; 16], endpoints: Vec::new(), rack: Some("rack-b".into()) },
        MetadataRecord::UnfenceBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1) },
        MetadataRecord::Topic { name: "orders".into(), topic_id, configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]) },
        MetadataRecord::Partition { topic_id, partition: 0, replicas: vec![NodeId(1)], isr: vec![NodeId(1)], leader: NodeId(1), leader_epoch: LeaderEpoch(0), partition_epoch: PartitionEpoch(0) },
        MetadataRecord::PartitionChange { topic_id, partition: 0, leader: Some(NodeId(1)), isr: Some(vec![NodeId(1)]) },
        MetadataRecord::ProducerIds { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1), next_producer_id: 1000 },
        MetadataRecord::FenceBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1) },
        MetadataRecord::RemoveTopic { topic_id },
        MetadataRecord::UserScramCredential { name: "alice".into(), mechanism: Mechanism::ScramSha256, credential: scram.clone() },
        MetadataRecord::RemoveUserScramCredential { name: "alice".into(), mechanism: Mechanism::ScramSha256 },
        MetadataRecord::AccessControlEntry { acl: acl.clone() },
        MetadataRecord::RemoveAccessControlEntry { acl: acl.clone() },
    ];
    let metadata = controller::encode_records(&records);
    let entry = Entry { index: Index(5), term: Term(3), data: metadata.clone() };
    let messages = [
        Message::PreVote { term: Term(4), last_log_index: Index(5), last_log_term: Term(3) },
        Message::Vote { term: Term(4), last_log_index: Index(5), last_log_term: Term(3) },
        Message::VoteResponse { term: Term(4), granted: true },
        Message::Append { term: Term(3), prev_log_index: Index(4), prev_log_term: Term(2), leader_commit: Index(4), entries: vec![entry.clone()] },
        Message::AppendResponse { term: Term(3), success: true, match_index: Index(5) },
    ];
    let frames = [
        Frame::Raft { from: NodeId(2), message: messages[3].clone() },
        Frame::Request { id: 1, request: ControllerRequest::CreateTopics(CreateTopicsRequest { topics: vec![CreatableTopic { name: "orders".into(), num_partitions: 3, replication_factor: 1, configs: BTreeMap::new(), assignments: Vec::new() }], validate_only: false }) },
        Frame::Request { id: 2, request: ControllerRequest::AlterPartition(AlterPartitionRequest { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1), topic_id, partition: 0, leader_epoch: LeaderEpoch(0), partition_epoch: PartitionEpoch(0), new_isr: vec![NodeId(1), NodeId(2)] }) },
        Frame::Request { id: 3, request: ControllerRequest::DeleteTopics(vec!["orders".into()]) },
        Frame::Request { id: 7, request: ControllerRequest::RegisterBroker(controller::BrokerRegistrationRequest { broker_id: NodeId(2), incarnation_id: [2; 16], endpoints: Vec::new(), rack: Some("rack-b".into()) }) },
        Frame::Request {
            id: 4,
            request: ControllerRequest::AlterUserScramCredentials(controller::AlterUserScramCredentialsRequest {
                deletions: vec![controller::ScramCredentialDeletion { name: "bob".into(), mechanism: 2 }],
                upsertions: vec![controller::ScramCredentialUpsertion { name: "alice".into(), mechanism: 1, credential: scram.clone() }],
            }),
        },
        Frame::Request { id: 5, request: ControllerRequest::CreateAcls(vec![acl.clone()]) },
        Frame::Request { id: 6, request: ControllerRequest::DeleteAcls(vec![AclBindingFilter::exact(&acl), AclBindingFilter::any()]) },
        Frame::Response { id: 6, response: Response::DeleteAcls(vec![controller::AclDeleteResult { error: None, deleted: vec![acl.clone()] }]) },
        Frame::Response { id: 1, response: Response::CreateTopics(vec![CreateTopicResult { name: "orders".into(), error: Some(ControllerError::InvalidTopic("bad name".into())), topic_id, num_partitions: 3, replication_factor: 1 }]) },
    ];
    let with = |which: u8, bytes: &[u8]| [&[which][..], bytes].concat();
    let mut seeds: Vec<Vec<u8>> = frames.iter().map(|f| with(0, &f.encode())).collect();
    seeds.extend(messages.iter().map(|m| with(1, &m.encode())));
    seeds.push(with(2, &entry.encode()));
    seeds.push(with(3, &HardState { term: Term(3), voted_for: Some(NodeId(2)) }.encode()));
    seeds.push(with(4, &metadata));
    seeds
}
