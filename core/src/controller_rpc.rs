//! The bytes nodes exchange on the controller listener: Raft messages between quorum members,
//! and brokers' requests to the active controller (registration, heartbeats, AlterPartition,
//! forwarded CreateTopics/DeleteTopics/AlterUserScramCredentials) with their answers.
//!
//! Kafka has its own RPCs for these (Vote, BeginQuorumEpoch, Fetch on the metadata topic,
//! BrokerRegistration, BrokerHeartbeat, AlterPartition, forwarding via Envelope). odradek's
//! quorum is push-style Raft (docs/controller.md), which has no Kafka counterpart, so the
//! controller listener carries odradek's own versioned encoding of core's types instead: one
//! [`Frame`] per length-prefixed message, `[version][tag][fields]`, little-endian, decoded with
//! errors (never panics) because it comes off the network.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use crate::controller::{
    put_config_resource, read_config_resource, AlterConfigsRequest, ConfigAlteration, ConfigOp, CreatePartitionsRequest,
    CreatePartitionsTopic, ElectLeadersRequest, ReassignPartition, AlterClientQuotasRequest, QuotaAlteration,
    put_quota_entity, read_quota_entity,
    AllocateProducerIdsRequest, AllocateProducerIdsResponse, AlterPartitionRequest, AlterPartitionResponse, BrokerHeartbeatRequest, BrokerHeartbeatResponse,
    AlterUserScramCredentialResult, AlterUserScramCredentialsRequest, BrokerRegistrationRequest, BrokerRegistrationResponse, CreatableTopic,
    CreateTopicResult, CreateTopicsRequest, ControllerError, DeleteTopicResult, Endpoint, LeaderAndIsr, Response, ScramCredentialDeletion,
    ScramCredentialUpsertion,
};
use crate::acl::{AclBinding, AclBindingFilter, Operation, PatternFilter, Permission, ResourceType};
use crate::controller::{put_acl, read_acl, AclCreateResult, AclDeleteResult};
use crate::sasl::ScramCredential;
use crate::ids::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch};
use crate::raft::codec::{self, Reader};
use crate::raft::{DecodeError, Index, Message};

const FRAME_VERSION: u8 = 0;
/// The request tag of a registration that carries a rack (`broker.rack`).
const REGISTER_BROKER_RACK_TAG: u8 = 13;

/// A request to the active controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerRequest {
    RegisterBroker(BrokerRegistrationRequest),
    Heartbeat(BrokerHeartbeatRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(Vec<String>),
    AlterPartition(AlterPartitionRequest),
    AllocateProducerIds(AllocateProducerIdsRequest),
    AlterUserScramCredentials(AlterUserScramCredentialsRequest),
    CreateAcls(Vec<AclBinding>),
    DeleteAcls(Vec<AclBindingFilter>),
    AlterConfigs(AlterConfigsRequest),
    CreatePartitions(CreatePartitionsRequest),
    AlterPartitionReassignments(Vec<ReassignPartition>),
    ElectLeaders(ElectLeadersRequest),
    AlterClientQuotas(AlterClientQuotasRequest),
}

/// One message on the controller listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A Raft message from quorum member (or observer) `from`; never answered directly.
    Raft { from: NodeId, message: Message },
    /// A request to the active controller; answered on the same connection with the same id.
    Request { id: u64, request: ControllerRequest },
    Response { id: u64, response: Response },
}

impl Frame {
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(FRAME_VERSION);
        match self {
            Frame::Raft { from, message } => {
                out.put_u8(0);
                out.put_i32_le(from.0);
                codec::put_bytes(&mut out, &message.encode());
            }
            Frame::Request { id, request } => {
                out.put_u8(1);
                out.put_u64_le(*id);
                encode_request(&mut out, request);
            }
            Frame::Response { id, response } => {
                out.put_u8(2);
                out.put_u64_le(*id);
                encode_response(&mut out, response);
            }
        }
        out.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != FRAME_VERSION {
            return Err(DecodeError::Version(version));
        }
        let frame = match r.u8()? {
            0 => {
                let from = NodeId(r.i32()?);
                let message = Message::decode(&Bytes::copy_from_slice(r.bytes()?))?;
                Frame::Raft { from, message }
            }
            1 => Frame::Request { id: r.u64()?, request: decode_request(&mut r)? },
            2 => Frame::Response { id: r.u64()?, response: decode_response(&mut r)? },
            tag => return Err(DecodeError::Tag(tag)),
        };
        r.finish()?;
        Ok(frame)
    }
}

fn put_nodes(out: &mut BytesMut, nodes: &[NodeId]) {
    codec::put_count(out, nodes.len());
    for n in nodes {
        out.put_i32_le(n.0);
    }
}

fn read_nodes(r: &mut Reader) -> Result<Vec<NodeId>, DecodeError> {
    let n = r.count(4)?;
    (0..n).map(|_| Ok(NodeId(r.i32()?))).collect()
}

fn read_id(r: &mut Reader) -> Result<[u8; 16], DecodeError> {
    Ok(r.take(16)?.try_into().expect("16 bytes"))
}

fn encode_request(out: &mut BytesMut, request: &ControllerRequest) {
    match request {
        ControllerRequest::RegisterBroker(req) => {
            // A rack-less registration keeps tag 0, which controllers that predate racks read.
            out.put_u8(if req.rack.is_some() { REGISTER_BROKER_RACK_TAG } else { 0 });
            out.put_i32_le(req.broker_id.0);
            out.put_slice(&req.incarnation_id);
            codec::put_count(out, req.endpoints.len());
            for e in &req.endpoints {
                codec::put_string(out, &e.name);
                codec::put_string(out, &e.host);
                out.put_u16_le(e.port);
            }
            if let Some(rack) = &req.rack {
                codec::put_string(out, rack);
            }
        }
        ControllerRequest::Heartbeat(req) => {
            out.put_u8(1);
            out.put_i32_le(req.broker_id.0);
            out.put_i64_le(req.broker_epoch.0);
            out.put_u64_le(req.current_metadata_offset.0);
            out.put_u8(u8::from(req.want_fence));
            out.put_u8(u8::from(req.want_shutdown));
            codec::put_count(out, req.offline_replicas.len());
            for (topic_id, partition) in &req.offline_replicas {
                out.put_slice(topic_id);
                out.put_i32_le(*partition);
            }
        }
        ControllerRequest::CreateTopics(req) => {
            out.put_u8(2);
            out.put_u8(u8::from(req.validate_only));
            codec::put_count(out, req.topics.len());
            for t in &req.topics {
                codec::put_string(out, &t.name);
                out.put_i32_le(t.num_partitions);
                out.put_u16_le(t.replication_factor as u16);
                codec::put_count(out, t.configs.len());
                for (k, v) in &t.configs {
                    codec::put_string(out, k);
                    codec::put_string(out, v);
                }
                codec::put_count(out, t.assignments.len());
                for (p, replicas) in &t.assignments {
                    out.put_i32_le(*p);
                    put_nodes(out, replicas);
                }
            }
        }
        ControllerRequest::DeleteTopics(names) => {
            out.put_u8(3);
            codec::put_count(out, names.len());
            for n in names {
                codec::put_string(out, n);
            }
        }
        ControllerRequest::AlterPartition(req) => {
            out.put_u8(4);
            out.put_i32_le(req.broker_id.0);
            out.put_i64_le(req.broker_epoch.0);
            out.put_slice(&req.topic_id);
            out.put_i32_le(req.partition);
            out.put_i32_le(req.leader_epoch.0);
            out.put_i32_le(req.partition_epoch.0);
            put_nodes(out, &req.new_isr);
        }
        ControllerRequest::AllocateProducerIds(req) => {
            out.put_u8(5);
            out.put_i32_le(req.broker_id.0);
            out.put_i64_le(req.broker_epoch.0);
        }
        ControllerRequest::AlterUserScramCredentials(req) => {
            out.put_u8(6);
            codec::put_count(out, req.deletions.len());
            for d in &req.deletions {
                codec::put_string(out, &d.name);
                out.put_u8(d.mechanism as u8);
            }
            codec::put_count(out, req.upsertions.len());
            for u in &req.upsertions {
                codec::put_string(out, &u.name);
                out.put_u8(u.mechanism as u8);
                codec::put_bytes(out, &u.credential.salt);
                codec::put_bytes(out, &u.credential.stored_key);
                codec::put_bytes(out, &u.credential.server_key);
                out.put_i32_le(u.credential.iterations);
            }
        }
        ControllerRequest::CreateAcls(acls) => {
            out.put_u8(7);
            codec::put_count(out, acls.len());
            for acl in acls {
                put_acl(out, acl);
            }
        }
        ControllerRequest::DeleteAcls(filters) => {
            out.put_u8(8);
            codec::put_count(out, filters.len());
            for f in filters {
                put_acl_filter(out, f);
            }
        }
        ControllerRequest::AlterConfigs(req) => {
            out.put_u8(9);
            out.put_u8(u8::from(req.validate_only));
            codec::put_count(out, req.resources.len());
            for a in &req.resources {
                put_config_resource(out, &a.resource);
                out.put_u8(u8::from(a.replace));
                codec::put_count(out, a.changes.len());
                for (name, op) in &a.changes {
                    codec::put_string(out, name);
                    let (tag, value) = match op {
                        ConfigOp::Set(v) => (0, v.as_str()),
                        ConfigOp::Delete => (1, ""),
                        ConfigOp::Append(v) => (2, v.as_str()),
                        ConfigOp::Subtract(v) => (3, v.as_str()),
                    };
                    out.put_u8(tag);
                    codec::put_string(out, value);
                }
            }
        }
        ControllerRequest::AlterPartitionReassignments(partitions) => {
            out.put_u8(11);
            codec::put_count(out, partitions.len());
            for p in partitions {
                codec::put_string(out, &p.topic);
                out.put_i32_le(p.partition);
                out.put_u8(u8::from(p.allow_replication_factor_change));
                out.put_u8(u8::from(p.target.is_some()));
                put_nodes(out, p.target.as_deref().unwrap_or_default());
            }
        }
        ControllerRequest::AlterClientQuotas(req) => {
            out.put_u8(14);
            out.put_u8(u8::from(req.validate_only));
            codec::put_count(out, req.entries.len());
            for e in &req.entries {
                put_quota_entity(out, &e.entity);
                codec::put_count(out, e.ops.len());
                for (key, value) in &e.ops {
                    codec::put_string(out, key);
                    out.put_u8(u8::from(value.is_some()));
                    out.put_u64_le(value.map_or(0, |v| v.to_bits()));
                }
            }
        }
        ControllerRequest::ElectLeaders(req) => {
            out.put_u8(12);
            out.put_u8(u8::from(req.unclean));
            out.put_u8(u8::from(req.partitions.is_some()));
            let partitions = req.partitions.as_deref().unwrap_or_default();
            codec::put_count(out, partitions.len());
            for (topic, partition) in partitions {
                codec::put_string(out, topic);
                out.put_i32_le(*partition);
            }
        }
        ControllerRequest::CreatePartitions(req) => {
            out.put_u8(10);
            out.put_u8(u8::from(req.validate_only));
            codec::put_count(out, req.topics.len());
            for t in &req.topics {
                codec::put_string(out, &t.name);
                out.put_i32_le(t.count);
                out.put_u8(u8::from(t.assignments.is_some()));
                let assignments = t.assignments.as_deref().unwrap_or_default();
                codec::put_count(out, assignments.len());
                for replicas in assignments {
                    put_nodes(out, replicas);
                }
            }
        }
    }
}

/// A filter with Kafka's wire codes; ANY (1) stands for an absent enum, and an absent string
/// is flagged, so that a filter for the empty name stays one.
fn put_acl_filter(out: &mut BytesMut, f: &AclBindingFilter) {
    let put_optional = |out: &mut BytesMut, s: &Option<String>| {
        out.put_u8(u8::from(s.is_some()));
        codec::put_string(out, s.as_deref().unwrap_or(""));
    };
    out.put_u8(f.resource_type.map_or(1, ResourceType::code) as u8);
    put_optional(out, &f.resource_name);
    out.put_u8(f.pattern.code() as u8);
    put_optional(out, &f.principal);
    put_optional(out, &f.host);
    out.put_u8(f.operation.map_or(1, Operation::code) as u8);
    out.put_u8(f.permission.map_or(1, Permission::code) as u8);
}

fn read_acl_filter(r: &mut Reader) -> Result<AclBindingFilter, DecodeError> {
    fn optional(r: &mut Reader) -> Result<Option<String>, DecodeError> {
        let present = r.bool()?;
        let s = r.string()?;
        Ok(present.then_some(s))
    }
    let invalid = DecodeError::Invalid("invalid ACL filter");
    let resource_type = match r.u8()? as i8 {
        1 => None,
        code => Some(ResourceType::from_code(code).ok_or(invalid.clone())?),
    };
    let resource_name = optional(r)?;
    let pattern = PatternFilter::from_code(r.u8()? as i8).ok_or(invalid.clone())?;
    let principal = optional(r)?;
    let host = optional(r)?;
    let operation = match r.u8()? as i8 {
        1 => None,
        code => Some(Operation::from_code(code).ok_or(invalid.clone())?),
    };
    let permission = match r.u8()? as i8 {
        1 => None,
        code => Some(Permission::from_code(code).ok_or(invalid)?),
    };
    Ok(AclBindingFilter { resource_type, resource_name, pattern, principal, host, operation, permission })
}

/// A CreateAcls/DeleteAcls error keeps its message when it is a refused binding's
/// INVALID_REQUEST, which [`read_error`] cannot tell from the static InvalidRequest.
fn put_acl_error(out: &mut BytesMut, error: &Option<ControllerError>) {
    match error {
        Some(ControllerError::Invalid(message)) => {
            out.put_u8(1);
            codec::put_string(out, message);
        }
        other => {
            out.put_u8(0);
            put_error(out, other);
        }
    }
}

fn read_acl_error(r: &mut Reader) -> Result<Option<ControllerError>, DecodeError> {
    if r.bool()? {
        return Ok(Some(ControllerError::Invalid(r.string()?)));
    }
    read_error(r)
}

fn decode_request(r: &mut Reader) -> Result<ControllerRequest, DecodeError> {
    Ok(match r.u8()? {
        tag @ (0 | REGISTER_BROKER_RACK_TAG) => {
            let broker_id = NodeId(r.i32()?);
            let incarnation_id = read_id(r)?;
            let n = r.count(6)?;
            let mut endpoints = Vec::with_capacity(n);
            for _ in 0..n {
                endpoints.push(Endpoint { name: r.string()?, host: r.string()?, port: r.u16()? });
            }
            let rack = if tag == REGISTER_BROKER_RACK_TAG { Some(r.string()?) } else { None };
            ControllerRequest::RegisterBroker(BrokerRegistrationRequest { broker_id, incarnation_id, endpoints, rack })
        }
        1 => ControllerRequest::Heartbeat(BrokerHeartbeatRequest {
            broker_id: NodeId(r.i32()?),
            broker_epoch: BrokerEpoch(r.i64()?),
            current_metadata_offset: Index(r.u64()?),
            want_fence: r.bool()?,
            want_shutdown: r.bool()?,
            offline_replicas: {
                let n = r.count(20)?;
                (0..n).map(|_| Ok((read_id(r)?, r.i32()?))).collect::<Result<_, DecodeError>>()?
            },
        }),
        2 => {
            let validate_only = r.bool()?;
            let n = r.count(12)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                let num_partitions = r.i32()?;
                let replication_factor = r.u16()? as i16;
                let c = r.count(4)?;
                let mut configs = BTreeMap::new();
                for _ in 0..c {
                    configs.insert(r.string()?, r.string()?);
                }
                let a = r.count(8)?;
                let mut assignments = Vec::with_capacity(a);
                for _ in 0..a {
                    assignments.push((r.i32()?, read_nodes(r)?));
                }
                topics.push(CreatableTopic { name, num_partitions, replication_factor, configs, assignments });
            }
            ControllerRequest::CreateTopics(CreateTopicsRequest { topics, validate_only })
        }
        3 => {
            let n = r.count(2)?;
            ControllerRequest::DeleteTopics((0..n).map(|_| r.string()).collect::<Result<_, _>>()?)
        }
        4 => ControllerRequest::AlterPartition(AlterPartitionRequest {
            broker_id: NodeId(r.i32()?),
            broker_epoch: BrokerEpoch(r.i64()?),
            topic_id: read_id(r)?,
            partition: r.i32()?,
            leader_epoch: LeaderEpoch(r.i32()?),
            partition_epoch: PartitionEpoch(r.i32()?),
            new_isr: read_nodes(r)?,
        }),
        5 => ControllerRequest::AllocateProducerIds(AllocateProducerIdsRequest {
            broker_id: NodeId(r.i32()?),
            broker_epoch: BrokerEpoch(r.i64()?),
        }),
        6 => {
            let n = r.count(3)?;
            let mut deletions = Vec::with_capacity(n);
            for _ in 0..n {
                deletions.push(ScramCredentialDeletion { name: r.string()?, mechanism: r.u8()? as i8 });
            }
            let n = r.count(19)?;
            let mut upsertions = Vec::with_capacity(n);
            for _ in 0..n {
                upsertions.push(ScramCredentialUpsertion {
                    name: r.string()?,
                    mechanism: r.u8()? as i8,
                    credential: ScramCredential {
                        salt: r.bytes()?.to_vec(),
                        stored_key: r.bytes()?.to_vec(),
                        server_key: r.bytes()?.to_vec(),
                        iterations: r.i32()?,
                    },
                });
            }
            ControllerRequest::AlterUserScramCredentials(AlterUserScramCredentialsRequest { deletions, upsertions })
        }
        7 => {
            let n = r.count(7)?;
            ControllerRequest::CreateAcls((0..n).map(|_| read_acl(r)).collect::<Result<_, _>>()?)
        }
        8 => {
            let n = r.count(10)?;
            ControllerRequest::DeleteAcls((0..n).map(|_| read_acl_filter(r)).collect::<Result<_, _>>()?)
        }
        9 => {
            let validate_only = r.bool()?;
            let n = r.count(3)?;
            let mut resources = Vec::with_capacity(n);
            for _ in 0..n {
                let resource = read_config_resource(r)?;
                let replace = r.bool()?;
                let c = r.count(3)?;
                let mut changes = Vec::with_capacity(c);
                for _ in 0..c {
                    let name = r.string()?;
                    let tag = r.u8()?;
                    let value = r.string()?;
                    let op = match tag {
                        0 => ConfigOp::Set(value),
                        1 => ConfigOp::Delete,
                        2 => ConfigOp::Append(value),
                        3 => ConfigOp::Subtract(value),
                        _ => return Err(DecodeError::Invalid("unknown config op")),
                    };
                    changes.push((name, op));
                }
                resources.push(ConfigAlteration { resource, changes, replace });
            }
            ControllerRequest::AlterConfigs(AlterConfigsRequest { resources, validate_only })
        }
        10 => {
            let validate_only = r.bool()?;
            let n = r.count(10)?;
            let mut topics = Vec::with_capacity(n);
            for _ in 0..n {
                let name = r.string()?;
                let count = r.i32()?;
                let given = r.bool()?;
                let a = r.count(4)?;
                let assignments = (0..a).map(|_| read_nodes(r)).collect::<Result<Vec<_>, _>>()?;
                topics.push(CreatePartitionsTopic { name, count, assignments: given.then_some(assignments) });
            }
            ControllerRequest::CreatePartitions(CreatePartitionsRequest { topics, validate_only })
        }
        11 => {
            let n = r.count(11)?;
            let mut partitions = Vec::with_capacity(n);
            for _ in 0..n {
                let topic = r.string()?;
                let partition = r.i32()?;
                let allow_replication_factor_change = r.bool()?;
                let given = r.bool()?;
                let target = read_nodes(r)?;
                partitions.push(ReassignPartition { topic, partition, target: given.then_some(target), allow_replication_factor_change });
            }
            ControllerRequest::AlterPartitionReassignments(partitions)
        }
        12 => {
            let unclean = r.bool()?;
            let given = r.bool()?;
            let n = r.count(6)?;
            let partitions = (0..n).map(|_| Ok((r.string()?, r.i32()?))).collect::<Result<Vec<_>, DecodeError>>()?;
            ControllerRequest::ElectLeaders(ElectLeadersRequest { unclean, partitions: given.then_some(partitions) })
        }
        14 => {
            let validate_only = r.bool()?;
            let n = r.count(4)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let entity = read_quota_entity(r)?;
                let m = r.count(12)?;
                let mut ops = Vec::with_capacity(m);
                for _ in 0..m {
                    let key = r.string()?;
                    let set = r.bool()?;
                    let bits = r.u64()?;
                    ops.push((key, set.then(|| crate::quota::QuotaValue::from_bits(bits))));
                }
                entries.push(QuotaAlteration { entity, ops });
            }
            ControllerRequest::AlterClientQuotas(AlterClientQuotasRequest { entries, validate_only })
        }
        tag => return Err(DecodeError::Tag(tag)),
    })
}

/// An error travels as its Kafka code plus its message; the code picks the variant back.
fn put_error(out: &mut BytesMut, error: &Option<ControllerError>) {
    match error {
        None => out.put_u16_le(0),
        Some(e) => {
            out.put_u16_le(e.code().code() as u16);
            codec::put_string(out, &e.to_string());
        }
    }
}

fn read_error(r: &mut Reader) -> Result<Option<ControllerError>, DecodeError> {
    let code = r.u16()? as i16;
    if code == 0 {
        return Ok(None);
    }
    let message = r.string()?;
    let error = match crate::ErrorCode::try_from_code(code).ok_or(DecodeError::Invalid("unknown error code"))? {
        crate::ErrorCode::NotController => ControllerError::NotController,
        crate::ErrorCode::RequestTimedOut => ControllerError::Busy,
        crate::ErrorCode::StaleBrokerEpoch => ControllerError::StaleBrokerEpoch,
        crate::ErrorCode::BrokerIdNotRegistered => ControllerError::BrokerIdNotRegistered,
        crate::ErrorCode::DuplicateBrokerRegistration => ControllerError::DuplicateBrokerRegistration,
        crate::ErrorCode::UnknownTopicId => ControllerError::UnknownTopicId,
        crate::ErrorCode::UnknownTopicOrPartition => ControllerError::UnknownTopicOrPartition,
        crate::ErrorCode::TopicAlreadyExists => ControllerError::TopicAlreadyExists,
        crate::ErrorCode::InvalidTopicException => ControllerError::InvalidTopic(message),
        crate::ErrorCode::InvalidPartitions => ControllerError::InvalidPartitions(message),
        crate::ErrorCode::InvalidReplicationFactor => ControllerError::InvalidReplicationFactor(message),
        crate::ErrorCode::InvalidReplicaAssignment => ControllerError::InvalidReplicaAssignment(message),
        crate::ErrorCode::NoReassignmentInProgress => ControllerError::NoReassignmentInProgress,
        crate::ErrorCode::ElectionNotNeeded => ControllerError::ElectionNotNeeded,
        crate::ErrorCode::PreferredLeaderNotAvailable => ControllerError::PreferredLeaderNotAvailable,
        crate::ErrorCode::EligibleLeadersNotAvailable => ControllerError::EligibleLeadersNotAvailable,
        crate::ErrorCode::InvalidConfig => ControllerError::InvalidConfig(message),
        crate::ErrorCode::PolicyViolation => ControllerError::PolicyViolation(message),
        crate::ErrorCode::FencedLeaderEpoch => ControllerError::FencedLeaderEpoch,
        crate::ErrorCode::InvalidUpdateVersion => ControllerError::InvalidUpdateVersion,
        crate::ErrorCode::IneligibleReplica => ControllerError::IneligibleReplica,
        crate::ErrorCode::InvalidRequest => ControllerError::Invalid(message),
        crate::ErrorCode::UnsupportedSaslMechanism => ControllerError::UnsupportedSaslMechanism(message),
        crate::ErrorCode::UnacceptableCredential => ControllerError::UnacceptableCredential(message),
        crate::ErrorCode::DuplicateResource => ControllerError::DuplicateResource(message),
        crate::ErrorCode::ResourceNotFound => ControllerError::ResourceNotFound(message),
        _ => return Err(DecodeError::Invalid("error code not a controller error")),
    };
    Ok(Some(error))
}

fn encode_response(out: &mut BytesMut, response: &Response) {
    match response {
        Response::RegisterBroker(r) => {
            out.put_u8(0);
            put_error(out, &r.error);
            out.put_i64_le(r.broker_epoch.0);
        }
        Response::Heartbeat(r) => {
            out.put_u8(1);
            put_error(out, &r.error);
            out.put_u8(u8::from(r.is_caught_up));
            out.put_u8(u8::from(r.is_fenced));
            out.put_u8(u8::from(r.should_shutdown));
        }
        Response::CreateTopics(results) => {
            out.put_u8(2);
            codec::put_count(out, results.len());
            for t in results {
                codec::put_string(out, &t.name);
                put_error(out, &t.error);
                out.put_slice(&t.topic_id);
                out.put_i32_le(t.num_partitions);
                out.put_u16_le(t.replication_factor as u16);
            }
        }
        Response::DeleteTopics(results) => {
            out.put_u8(3);
            codec::put_count(out, results.len());
            for t in results {
                codec::put_string(out, &t.name);
                put_error(out, &t.error);
                out.put_slice(&t.topic_id);
            }
        }
        Response::AlterPartition(r) => {
            out.put_u8(4);
            put_error(out, &r.error);
            out.put_u8(u8::from(r.state.is_some()));
            if let Some(s) = &r.state {
                out.put_i32_le(s.leader.0);
                out.put_i32_le(s.leader_epoch.0);
                out.put_i32_le(s.partition_epoch.0);
                put_nodes(out, &s.isr);
            }
        }
        Response::AllocateProducerIds(r) => {
            out.put_u8(5);
            put_error(out, &r.error);
            out.put_i64_le(r.first_producer_id);
            out.put_i64_le(r.count);
        }
        Response::AlterUserScramCredentials(results) => {
            out.put_u8(6);
            codec::put_count(out, results.len());
            for result in results {
                codec::put_string(out, &result.user);
                put_error(out, &result.error);
            }
        }
        Response::CreateAcls(results) => {
            out.put_u8(7);
            codec::put_count(out, results.len());
            for result in results {
                put_acl_error(out, &result.error);
            }
        }
        Response::DeleteAcls(results) => {
            out.put_u8(8);
            codec::put_count(out, results.len());
            for result in results {
                put_acl_error(out, &result.error);
                codec::put_count(out, result.deleted.len());
                for acl in &result.deleted {
                    put_acl(out, acl);
                }
            }
        }
        Response::AlterPartitionReassignments(results) => {
            out.put_u8(11);
            codec::put_count(out, results.len());
            for error in results {
                put_error(out, error);
            }
        }
        Response::AlterClientQuotas(results) => {
            out.put_u8(13);
            codec::put_count(out, results.len());
            for error in results {
                put_error(out, error);
            }
        }
        Response::ElectLeaders(results) => {
            out.put_u8(12);
            codec::put_count(out, results.len());
            for (topic, partition, error) in results {
                codec::put_string(out, topic);
                out.put_i32_le(*partition);
                put_error(out, error);
            }
        }
        Response::CreatePartitions(results) => {
            out.put_u8(10);
            codec::put_count(out, results.len());
            for error in results {
                put_error(out, error);
            }
        }
        Response::AlterConfigs(results) => {
            out.put_u8(9);
            codec::put_count(out, results.len());
            for error in results {
                put_error(out, error);
            }
        }
    }
}

fn decode_response(r: &mut Reader) -> Result<Response, DecodeError> {
    Ok(match r.u8()? {
        0 => Response::RegisterBroker(BrokerRegistrationResponse { error: read_error(r)?, broker_epoch: BrokerEpoch(r.i64()?) }),
        1 => Response::Heartbeat(BrokerHeartbeatResponse {
            error: read_error(r)?,
            is_caught_up: r.bool()?,
            is_fenced: r.bool()?,
            should_shutdown: r.bool()?,
        }),
        2 => {
            let n = r.count(24)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                results.push(CreateTopicResult {
                    name: r.string()?,
                    error: read_error(r)?,
                    topic_id: read_id(r)?,
                    num_partitions: r.i32()?,
                    replication_factor: r.u16()? as i16,
                });
            }
            Response::CreateTopics(results)
        }
        3 => {
            let n = r.count(20)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                results.push(DeleteTopicResult { name: r.string()?, error: read_error(r)?, topic_id: read_id(r)? });
            }
            Response::DeleteTopics(results)
        }
        4 => {
            let error = read_error(r)?;
            let state = if r.bool()? {
                Some(LeaderAndIsr {
                    leader: NodeId(r.i32()?),
                    leader_epoch: LeaderEpoch(r.i32()?),
                    partition_epoch: PartitionEpoch(r.i32()?),
                    isr: read_nodes(r)?,
                })
            } else {
                None
            };
            Response::AlterPartition(AlterPartitionResponse { error, state })
        }
        5 => Response::AllocateProducerIds(AllocateProducerIdsResponse {
            error: read_error(r)?,
            first_producer_id: r.i64()?,
            count: r.i64()?,
        }),
        6 => {
            let n = r.count(4)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                results.push(AlterUserScramCredentialResult { user: r.string()?, error: read_error(r)? });
            }
            Response::AlterUserScramCredentials(results)
        }
        7 => {
            let n = r.count(3)?;
            let results = (0..n).map(|_| Ok(AclCreateResult { error: read_acl_error(r)? })).collect::<Result<_, DecodeError>>()?;
            Response::CreateAcls(results)
        }
        8 => {
            let n = r.count(7)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                let error = read_acl_error(r)?;
                let m = r.count(7)?;
                let deleted = (0..m).map(|_| read_acl(r)).collect::<Result<_, _>>()?;
                results.push(AclDeleteResult { error, deleted });
            }
            Response::DeleteAcls(results)
        }
        9 => {
            let n = r.count(2)?;
            Response::AlterConfigs((0..n).map(|_| read_error(r)).collect::<Result<_, _>>()?)
        }
        10 => {
            let n = r.count(2)?;
            Response::CreatePartitions((0..n).map(|_| read_error(r)).collect::<Result<_, _>>()?)
        }
        11 => {
            let n = r.count(2)?;
            Response::AlterPartitionReassignments((0..n).map(|_| read_error(r)).collect::<Result<_, _>>()?)
        }
        12 => {
            let n = r.count(8)?;
            Response::ElectLeaders((0..n).map(|_| Ok((r.string()?, r.i32()?, read_error(r)?))).collect::<Result<_, DecodeError>>()?)
        }
        13 => {
            let n = r.count(2)?;
            Response::AlterClientQuotas((0..n).map(|_| read_error(r)).collect::<Result<_, _>>()?)
        }
        tag => return Err(DecodeError::Tag(tag)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Term;
    use crate::raft::Entry;
    use crate::controller::ConfigResource;

    fn frames() -> Vec<Frame> {
        vec![
            Frame::Raft {
                from: NodeId(2),
                message: Message::Append {
                    term: Term(3),
                    prev_log_index: Index(4),
                    prev_log_term: Term(2),
                    leader_commit: Index(4),
                    entries: vec![Entry { index: Index(5), term: Term(3), data: Bytes::from_static(b"x") }],
                },
            },
            Frame::Request {
                id: 7,
                request: ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                    broker_id: NodeId(1),
                    incarnation_id: [9; 16],
                    endpoints: vec![Endpoint { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }],
                    rack: None,
                }),
            },
            Frame::Request {
                id: 17,
                request: ControllerRequest::RegisterBroker(BrokerRegistrationRequest {
                    broker_id: NodeId(2),
                    incarnation_id: [8; 16],
                    endpoints: vec![],
                    rack: Some("us-east-1b".into()),
                }),
            },
            Frame::Request {
                id: 8,
                request: ControllerRequest::Heartbeat(BrokerHeartbeatRequest {
                    broker_id: NodeId(1),
                    broker_epoch: BrokerEpoch(4),
                    current_metadata_offset: Index(12),
                    want_fence: false,
                    want_shutdown: true,
                    offline_replicas: vec![([3; 16], 0), ([5; 16], 7)],
                }),
            },
            Frame::Request {
                id: 9,
                request: ControllerRequest::CreateTopics(CreateTopicsRequest {
                    topics: vec![CreatableTopic {
                        name: "t".into(),
                        num_partitions: -1,
                        replication_factor: 3,
                        configs: BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
                        assignments: vec![(0, vec![NodeId(1), NodeId(2)])],
                    }],
                    validate_only: false,
                }),
            },
            Frame::Request { id: 10, request: ControllerRequest::DeleteTopics(vec!["a".into(), "b".into()]) },
            Frame::Request {
                id: 15,
                request: ControllerRequest::AlterConfigs(AlterConfigsRequest {
                    resources: vec![
                        ConfigAlteration {
                            resource: ConfigResource::Topic("t".into()),
                            changes: vec![
                                ("retention.ms".into(), ConfigOp::Set("1".into())),
                                ("segment.ms".into(), ConfigOp::Delete),
                                ("cleanup.policy".into(), ConfigOp::Append("compact".into())),
                                ("leader.replication.throttled.replicas".into(), ConfigOp::Subtract("0:1".into())),
                            ],
                            replace: false,
                        },
                        ConfigAlteration { resource: ConfigResource::Broker(None), changes: Vec::new(), replace: true },
                        ConfigAlteration { resource: ConfigResource::Broker(Some(NodeId(3))), changes: Vec::new(), replace: false },
                    ],
                    validate_only: true,
                }),
            },
            Frame::Request {
                id: 16,
                request: ControllerRequest::CreatePartitions(CreatePartitionsRequest {
                    topics: vec![
                        CreatePartitionsTopic { name: "t".into(), count: 4, assignments: None },
                        CreatePartitionsTopic { name: "u".into(), count: 2, assignments: Some(vec![vec![NodeId(2), NodeId(3)]]) },
                        CreatePartitionsTopic { name: "v".into(), count: 2, assignments: Some(Vec::new()) },
                    ],
                    validate_only: false,
                }),
            },
            Frame::Request {
                id: 17,
                request: ControllerRequest::AlterPartitionReassignments(vec![
                    ReassignPartition { topic: "t".into(), partition: 1, target: Some(vec![NodeId(3), NodeId(1)]), allow_replication_factor_change: false },
                    ReassignPartition { topic: "u".into(), partition: 0, target: None, allow_replication_factor_change: true },
                ]),
            },
            Frame::Request { id: 18, request: ControllerRequest::ElectLeaders(ElectLeadersRequest { unclean: false, partitions: None }) },
            Frame::Request {
                id: 20,
                request: ControllerRequest::AlterClientQuotas(AlterClientQuotasRequest {
                    entries: vec![QuotaAlteration {
                        entity: crate::quota::QuotaEntity::new(vec![("user".into(), None), ("client-id".into(), Some("c".into()))]).unwrap(),
                        ops: vec![("producer_byte_rate".into(), Some(crate::quota::QuotaValue::new(1024.0))), ("request_percentage".into(), None)],
                    }],
                    validate_only: true,
                }),
            },
            Frame::Response { id: 20, response: Response::AlterClientQuotas(vec![None, Some(ControllerError::Invalid("no".into()))]) },
            Frame::Request {
                id: 19,
                request: ControllerRequest::ElectLeaders(ElectLeadersRequest { unclean: true, partitions: Some(vec![("t".into(), 2)]) }),
            },
            Frame::Response { id: 19, response: Response::ElectLeaders(vec![("t".into(), 2, Some(ControllerError::ElectionNotNeeded)), ("u".into(), 0, None)]) },
            Frame::Response { id: 17, response: Response::AlterPartitionReassignments(vec![Some(ControllerError::NoReassignmentInProgress), None]) },
            Frame::Response { id: 16, response: Response::CreatePartitions(vec![None, Some(ControllerError::InvalidReplicaAssignment("x".into()))]) },
            Frame::Response {
                id: 15,
                response: Response::AlterConfigs(vec![None, Some(ControllerError::InvalidConfig("bad".into()))]),
            },
            Frame::Request {
                id: 11,
                request: ControllerRequest::AlterPartition(AlterPartitionRequest {
                    broker_id: NodeId(1),
                    broker_epoch: BrokerEpoch(2),
                    topic_id: [3; 16],
                    partition: 0,
                    leader_epoch: LeaderEpoch(4),
                    partition_epoch: PartitionEpoch(5),
                    new_isr: vec![NodeId(1), NodeId(2)],
                }),
            },
            Frame::Request {
                id: 12,
                request: ControllerRequest::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
                    deletions: vec![ScramCredentialDeletion { name: "bob".into(), mechanism: 1 }],
                    upsertions: vec![ScramCredentialUpsertion {
                        name: "alice".into(),
                        mechanism: -3,
                        credential: ScramCredential {
                            salt: b"salt".to_vec(),
                            stored_key: vec![1; 32],
                            server_key: vec![2; 32],
                            iterations: 4096,
                        },
                    }],
                }),
            },
            Frame::Request {
                id: 13,
                request: ControllerRequest::CreateAcls(vec![AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: "pay".into(),
                    pattern_type: crate::acl::PatternType::Prefixed,
                    principal: "User:alice".into(),
                    host: "*".into(),
                    operation: Operation::Write,
                    permission: Permission::Allow,
                }]),
            },
            Frame::Request {
                id: 14,
                request: ControllerRequest::DeleteAcls(vec![
                    AclBindingFilter::any(),
                    AclBindingFilter {
                        resource_type: Some(ResourceType::Group),
                        resource_name: Some(String::new()),
                        pattern: PatternFilter::Match,
                        principal: None,
                        host: Some("10.0.0.1".into()),
                        operation: Some(Operation::Read),
                        permission: Some(Permission::Deny),
                    },
                ]),
            },
            Frame::Response {
                id: 13,
                response: Response::CreateAcls(vec![
                    AclCreateResult { error: None },
                    AclCreateResult { error: Some(ControllerError::Invalid("Invalid empty resource name".into())) },
                    AclCreateResult { error: Some(ControllerError::NotController) },
                ]),
            },
            Frame::Response {
                id: 14,
                response: Response::DeleteAcls(vec![
                    AclDeleteResult { error: None, deleted: vec![AclBinding {
                    resource_type: ResourceType::Topic,
                    resource_name: "pay".into(),
                    pattern_type: crate::acl::PatternType::Prefixed,
                    principal: "User:alice".into(),
                    host: "*".into(),
                    operation: Operation::Write,
                    permission: Permission::Allow,
                }] },
                    AclDeleteResult { error: Some(ControllerError::PolicyViolation("too big".into())), deleted: vec![] },
                ]),
            },
            Frame::Response {
                id: 7,
                response: Response::RegisterBroker(BrokerRegistrationResponse { error: None, broker_epoch: BrokerEpoch(3) }),
            },
            Frame::Response {
                id: 12,
                response: Response::AlterUserScramCredentials(vec![
                    AlterUserScramCredentialResult { user: "bob".into(), error: None },
                    AlterUserScramCredentialResult {
                        user: "alice".into(),
                        error: Some(ControllerError::UnacceptableCredential("Too few iterations".into())),
                    },
                    AlterUserScramCredentialResult {
                        user: "carol".into(),
                        error: Some(ControllerError::DuplicateResource("twice".into())),
                    },
                    AlterUserScramCredentialResult {
                        user: "dave".into(),
                        error: Some(ControllerError::ResourceNotFound("missing".into())),
                    },
                    AlterUserScramCredentialResult {
                        user: "erin".into(),
                        error: Some(ControllerError::UnsupportedSaslMechanism("Unknown SCRAM mechanism".into())),
                    },
                ]),
            },
            Frame::Response {
                id: 8,
                response: Response::Heartbeat(BrokerHeartbeatResponse {
                    error: Some(ControllerError::StaleBrokerEpoch),
                    is_caught_up: true,
                    is_fenced: false,
                    should_shutdown: false,
                }),
            },
            Frame::Response {
                id: 9,
                response: Response::CreateTopics(vec![CreateTopicResult {
                    name: "t".into(),
                    error: Some(ControllerError::InvalidReplicationFactor("3 > 2 alive".into())),
                    topic_id: [0; 16],
                    num_partitions: -1,
                    replication_factor: -1,
                }]),
            },
            Frame::Response {
                id: 10,
                response: Response::DeleteTopics(vec![DeleteTopicResult { name: "a".into(), error: None, topic_id: [1; 16] }]),
            },
            Frame::Response {
                id: 11,
                response: Response::AlterPartition(AlterPartitionResponse {
                    error: None,
                    state: Some(LeaderAndIsr {
                        leader: NodeId(1),
                        leader_epoch: LeaderEpoch(4),
                        partition_epoch: PartitionEpoch(6),
                        isr: vec![NodeId(1), NodeId(2)],
                    }),
                }),
            },
        ]
    }

    #[test]
    fn frames_round_trip() {
        for frame in frames() {
            assert_eq!(Frame::decode(&frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn truncated_and_mutated_frames_are_errors_not_panics() {
        for frame in frames() {
            let bytes = frame.encode();
            for len in 0..bytes.len() {
                assert!(Frame::decode(&bytes[..len]).is_err(), "{frame:?} truncated to {len}");
            }
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..200 {
                let mut mutated = bytes.to_vec();
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % mutated.len();
                mutated[at] ^= (seed >> 20) as u8 | 1;
                let _ = Frame::decode(&mutated);
            }
        }
    }
}
