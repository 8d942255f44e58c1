//! The controller: the cluster metadata image, the records that change it, and the active
//! controller's decisions, sans IO (KRaft's `QuorumController`, KIP-631).
//!
//! The [`MetadataImage`] (brokers with epochs and fencing, topics with ids and configs,
//! partitions with replicas, leader, leader epoch, ISR and partition epoch) changes **only** by
//! [`MetadataImage::apply`] of a committed [`MetadataRecord`]. Apply is deterministic, so every
//! process that replays the committed metadata log (controllers and brokers alike) holds the
//! same image at the same index.
//!
//! One [`Controller`] runs beside each [`crate::raft::Raft`] of the quorum. The driver wires
//! them (the Raft is not owned here, so a broker-only process can replay the log into a bare
//! [`MetadataImage`]):
//! 1. every `raft::Action::Leader { term, leader }` → [`Controller::handle_leader`];
//! 2. every entry of every `raft::Action::Apply`, in order → [`Controller::handle_committed`];
//! 3. every [`Action::Propose`] → `raft.propose(now_ms, bytes)`, **in the order emitted**. If
//!    Raft refuses it (not leader) drop it: the controller learns of the lost leadership
//!    through (1) and fails the waiting requests with NOT_CONTROLLER;
//! 4. every [`Action::Reply`] → answer request N;
//! 5. [`Controller::handle_timeout`] at [`Controller::poll_timeout`] (broker sessions).
//!
//! The controller is *active* when Raft made it leader of term T; it serves requests once it
//! has applied an entry of term T (the leader's no-op), because only then does its image hold
//! every committed record. Its decisions are made against `pending`: the committed image plus
//! its own proposals not yet committed (KRaft keeps the same "uncommitted" view), so two
//! requests in a row see each other's effects. Every committed non-empty entry of term T was
//! proposed by this controller, in proposal order, so replies wait in a FIFO and leave when
//! their entry commits: a request is answered only once its records are committed.
//!
//! Rules follow Kafka's `ReplicationControlManager`, `ClusterControlManager` and
//! `PartitionChangeBuilder`; differences are listed in `docs/controller.md`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::{BufMut, Bytes, BytesMut};

use crate::acl::{AclBinding, AclBindingFilter, Acls, Operation, PatternType, Permission, ResourceType};
use crate::error::ErrorCode;
use crate::ids::{BrokerEpoch, LeaderEpoch, NodeId, PartitionEpoch, Term};
use crate::raft::codec::{self, Reader};
use crate::raft::{DecodeError, Entry, Index};
use crate::sasl::{Mechanism, ScramCredential, MAX_SCRAM_ITERATIONS, MIN_SCRAM_ITERATIONS};
use crate::quota::{QuotaEntity, QuotaTable, QuotaValue};
use crate::topic::{validate_topic_name, TopicConfig};

pub type RequestId = u64;
pub type TopicId = [u8; 16];

/// The per-topic config (Kafka's name) that lets an out-of-ISR replica become leader.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

// ---- metadata records ----

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// The records of the metadata log (KIP-631 names, merged where odradek needs less).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A broker (re)registers; it starts fenced. Replaces an older registration of the id.
    /// `rack` is its `broker.rack` (KIP-36), which rack-aware replica placement reads.
    RegisterBroker {
        broker_id: NodeId,
        broker_epoch: BrokerEpoch,
        incarnation_id: [u8; 16],
        endpoints: Vec<Endpoint>,
        rack: Option<String>,
    },
    FenceBroker { broker_id: NodeId, broker_epoch: BrokerEpoch },
    UnfenceBroker { broker_id: NodeId, broker_epoch: BrokerEpoch },
    /// KRaft's TopicRecord with its ConfigRecords (the topic's own overrides) folded in.
    Topic { name: String, topic_id: TopicId, configs: BTreeMap<String, String> },
    /// A new partition; partitions of a topic are added in order 0, 1, ...
    Partition {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
    },
    /// KRaft's PartitionChangeRecord: absent fields stay. Applying it bumps the partition epoch,
    /// and the leader epoch if the leader changes (`NodeId::NONE` is "no leader").
    PartitionChange { topic_id: TopicId, partition: i32, leader: Option<NodeId>, isr: Option<Vec<NodeId>> },
    RemoveTopic { topic_id: TopicId },
    /// KRaft's ProducerIdsRecord: the controller handed the broker the block of producer ids
    /// below `next_producer_id`; no id below it is handed out again.
    ProducerIds { broker_id: NodeId, broker_epoch: BrokerEpoch, next_producer_id: i64 },
    /// KRaft's UserScramCredentialRecord (KIP-554): one user's credential for one SCRAM
    /// mechanism, replacing any earlier one. It holds what the SCRAM exchange needs (salt,
    /// StoredKey, ServerKey, iterations), from which the password cannot be recovered.
    UserScramCredential { name: String, mechanism: Mechanism, credential: ScramCredential },
    /// KRaft's RemoveUserScramCredentialRecord.
    RemoveUserScramCredential { name: String, mechanism: Mechanism },
    /// KRaft's AccessControlEntryRecord (KIP-631): one ACL. Kafka keys ACLs by a random id;
    /// a binding is its own key here, since no two equal bindings are ever stored.
    AccessControlEntry { acl: AclBinding },
    /// KRaft's RemoveAccessControlEntryRecord.
    RemoveAccessControlEntry { acl: AclBinding },
    /// KRaft's ConfigRecord: one config of a topic or of the brokers set (`value` some) or
    /// removed (`None`), as IncrementalAlterConfigs and AlterConfigs commit them.
    Config { resource: ConfigResource, name: String, value: Option<String> },
    /// KRaft's PartitionChangeRecord with its replica fields (KIP-455): the partition's replica
    /// set, ISR and leader as given (bumping the partition epoch, and the leader epoch if the
    /// leader changes), and the reassignment under way after it (`None`: none).
    Reassign {
        topic_id: TopicId,
        partition: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
        reassignment: Option<Reassignment>,
    },
    /// KRaft's ClientQuotaRecord: one quota of an entity set (`value` some) or removed.
    ClientQuota { entity: QuotaEntity, key: String, value: Option<QuotaValue> },
}

/// A partition moving to `target` replicas (KIP-455): while under way its replica set is
/// `target` followed by the `original` replicas not in it; once every target replica is in
/// the ISR the controller drops the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reassignment {
    pub original: Vec<NodeId>,
    pub target: Vec<NodeId>,
}

impl Reassignment {
    /// The replicas being added (Kafka's `addingReplicas`).
    pub fn adding(&self) -> Vec<NodeId> {
        self.target.iter().copied().filter(|r| !self.original.contains(r)).collect()
    }
    /// The replicas being removed (Kafka's `removingReplicas`).
    pub fn removing(&self) -> Vec<NodeId> {
        self.original.iter().copied().filter(|r| !self.target.contains(r)).collect()
    }
    /// The replica set while moving: the target, then the original replicas it drops.
    pub fn replicas(&self) -> Vec<NodeId> {
        let mut replicas = self.target.clone();
        replicas.extend(self.removing());
        replicas
    }
}

/// What a dynamic config belongs to (Kafka's ConfigResource, for the two types it stores).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigResource {
    Topic(String),
    /// One broker's settings, or with `None` the cluster-wide default of every broker.
    Broker(Option<NodeId>),
}

/// Producer ids go to brokers in blocks of this many (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// Why a committed record could not be applied. The image is left unchanged; every replica of
/// the log makes the same decision, so images stay equal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("unknown broker {0}")]
    UnknownBroker(NodeId),
    #[error("broker {broker_id} has epoch {current}, record says {record}")]
    BrokerEpoch { broker_id: NodeId, current: BrokerEpoch, record: BrokerEpoch },
    #[error("unknown topic id")]
    UnknownTopic,
    #[error("topic name or id already exists")]
    TopicExists,
    #[error("partition {0} out of order or unknown")]
    Partition(i32),
    #[error("invalid partition state: {0}")]
    InvalidState(&'static str),
    #[error("user {user:?} has no {} credential", mechanism.name())]
    UnknownScramCredential { user: String, mechanism: Mechanism },
    #[error("invalid SCRAM credential: {0}")]
    InvalidScramCredential(&'static str),
    #[error("ACL {0} already exists")]
    DuplicateAcl(AclBinding),
    #[error("ACL {0} does not exist")]
    UnknownAcl(AclBinding),
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: NodeId,
    pub broker_epoch: BrokerEpoch,
    pub incarnation_id: [u8; 16],
    pub endpoints: Vec<Endpoint>,
    /// `broker.rack`, if the broker set one.
    pub rack: Option<String>,
    pub fenced: bool,
}

impl BrokerRegistration {
    /// Where the broker serves a listener. A broker without the listener a client came in on
    /// is left out of that client's answers, as Kafka does.
    pub fn endpoint(&self, listener: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == listener)
    }
}

/// What a replica needs to know about its partition (Kafka's LeaderAndIsr partition state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionState {
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// `NodeId::NONE` when no replica may lead (offline partition).
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    /// The topic's own overrides; broker defaults apply to the rest.
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

/// The cluster metadata every broker and controller holds, built only by [`Self::apply`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    brokers: BTreeMap<NodeId, BrokerRegistration>,
    topics: BTreeMap<TopicId, TopicImage>,
    topic_ids: BTreeMap<String, TopicId>,
    /// The highest broker epoch ever handed out, so a new registration gets a higher one.
    broker_epoch_max: BrokerEpoch,
    /// The first producer id no broker has been given.
    next_producer_id: i64,
    /// SCRAM credentials by user and mechanism; a BTreeMap so describing every user lists
    /// them in one order on every node.
    scram: BTreeMap<(String, Mechanism), ScramCredential>,
    acls: Acls,
    /// Dynamic broker settings: the cluster-wide defaults under `None`, then per broker.
    broker_configs: BTreeMap<Option<NodeId>, BTreeMap<String, String>>,
    /// Partitions being reassigned, by topic id and partition.
    reassignments: BTreeMap<(TopicId, i32), Reassignment>,
    /// Client quotas, by entity and key.
    client_quotas: QuotaTable,
}

impl MetadataImage {
    pub fn brokers(&self) -> &BTreeMap<NodeId, BrokerRegistration> {
        &self.brokers
    }
    pub fn topics(&self) -> &BTreeMap<TopicId, TopicImage> {
        &self.topics
    }
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }
    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topics.get(id))
    }
    pub fn partition(&self, topic_id: &TopicId, partition: i32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic_id)?.partitions.get(index)
    }
    /// Whether the broker incarnation that registered with `broker_epoch` is registered and
    /// unfenced here: only then may a broker act on the partition state an image holds.
    /// Its registration moved the previous incarnation's leaderships away, so a restarted
    /// broker never resumes leading an epoch whose unsynced tail it lost (KRaft brokers
    /// publish metadata only once caught up past their own registration). The io broker and
    /// the simulator both gate on this.
    pub fn serves(&self, broker_id: NodeId, broker_epoch: BrokerEpoch) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| b.broker_epoch == broker_epoch && !b.fenced)
    }
    /// The brokers new replicas go to (the unfenced ones), by id, with their racks.
    pub fn placement_brokers(&self) -> Vec<(NodeId, Option<&str>)> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| (b.broker_id, b.rack.as_deref())).collect()
    }
    /// A registered, unfenced broker: one that may lead and be in an ISR.
    pub fn is_alive(&self, broker_id: NodeId) -> bool {
        self.brokers.get(&broker_id).is_some_and(|b| !b.fenced)
    }
    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.len()).sum()
    }
    /// The credential a SCRAM exchange checks `user` against.
    pub fn scram_credential(&self, mechanism: Mechanism, user: &str) -> Option<&ScramCredential> {
        self.scram.get(&(user.to_owned(), mechanism))
    }
    /// Every SCRAM credential, by user name, then mechanism (SHA-256 before SHA-512).
    pub fn scram_credentials(&self) -> impl Iterator<Item = (&str, Mechanism, &ScramCredential)> {
        self.scram.iter().map(|((user, mechanism), credential)| (user.as_str(), *mechanism, credential))
    }
    /// `user`'s SCRAM credentials, by mechanism.
    pub fn scram_credentials_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = (Mechanism, &'a ScramCredential)> + 'a {
        self.scram.range((user.to_owned(), Mechanism::Plain)..).take_while(move |((u, _), _)| u == user).map(|((_, m), c)| (*m, c))
    }
    /// The cluster's ACLs, which the authorizer decides with and DescribeAcls lists.
    pub fn acls(&self) -> &Acls {
        &self.acls
    }
    /// The reassignment under way of a partition, if any.
    pub fn reassignment(&self, topic_id: &TopicId, partition: i32) -> Option<&Reassignment> {
        self.reassignments.get(&(*topic_id, partition))
    }
    /// Every reassignment under way, by topic id and partition.
    pub fn reassignments(&self) -> &BTreeMap<(TopicId, i32), Reassignment> {
        &self.reassignments
    }
    /// Every client quota, by entity and key.
    pub fn client_quotas(&self) -> &QuotaTable {
        &self.client_quotas
    }
    /// The dynamic settings of broker `broker`, or with `None` the cluster-wide defaults.
    pub fn broker_configs(&self, broker: Option<NodeId>) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.broker_configs.get(&broker).unwrap_or(&EMPTY)
    }

    /// Applies one committed record, or leaves the image unchanged and says why.
    pub fn apply(&mut self, record: &MetadataRecord) -> Result<(), ApplyError> {
        match record {
            MetadataRecord::RegisterBroker { broker_id, broker_epoch, incarnation_id, endpoints, rack } => {
                // i64::MAX is refused so the next registration's epoch cannot overflow.
                if *broker_epoch <= self.broker_epoch_max || broker_epoch.0 == i64::MAX {
                    let current = self.brokers.get(broker_id).map_or(BrokerEpoch(-1), |b| b.broker_epoch);
                    return Err(ApplyError::BrokerEpoch { broker_id: *broker_id, current, record: *broker_epoch });
                }
                self.broker_epoch_max = *broker_epoch;
                let registration = BrokerRegistration {
                    broker_id: *broker_id,
                    broker_epoch: *broker_epoch,
                    incarnation_id: *incarnation_id,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                    fenced: true,
                };
                self.brokers.insert(*broker_id, registration);
            }
            MetadataRecord::FenceBroker { broker_id, broker_epoch }
            | MetadataRecord::UnfenceBroker { broker_id, broker_epoch } => {
                let broker = self.brokers.get_mut(broker_id).ok_or(ApplyError::UnknownBroker(*broker_id))?;
                if broker.broker_epoch != *broker_epoch {
                    let current = broker.broker_epoch;
                    return Err(ApplyError::BrokerEpoch { broker_id: *broker_id, current, record: *broker_epoch });
                }
                broker.fenced = matches!(record, MetadataRecord::FenceBroker { .. });
            }
            MetadataRecord::Topic { name, topic_id, configs } => {
                if self.topic_ids.contains_key(name) || self.topics.contains_key(topic_id) {
                    return Err(ApplyError::TopicExists);
                }
                let topic = TopicImage { name: name.clone(), id: *topic_id, configs: configs.clone(), partitions: Vec::new() };
                self.topics.insert(*topic_id, topic);
                self.topic_ids.insert(name.clone(), *topic_id);
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch } => {
                let topic = self.topics.get_mut(topic_id).ok_or(ApplyError::UnknownTopic)?;
                if usize::try_from(*partition).ok() != Some(topic.partitions.len()) {
                    return Err(ApplyError::Partition(*partition));
                }
                let state = PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                };
                validate_partition(&state)?;
                if !(0..i32::MAX).contains(&leader_epoch.0) || !(0..i32::MAX).contains(&partition_epoch.0) {
                    return Err(ApplyError::InvalidState("epoch out of range"));
                }
                topic.partitions.push(state);
            }
            MetadataRecord::PartitionChange { topic_id, partition, leader, isr } => {
                let topic = self.topics.get_mut(topic_id).ok_or(ApplyError::UnknownTopic)?;
                let index = usize::try_from(*partition).map_err(|_| ApplyError::Partition(*partition))?;
                let current = topic.partitions.get_mut(index).ok_or(ApplyError::Partition(*partition))?;
                if current.leader_epoch.0 == i32::MAX || current.partition_epoch.0 == i32::MAX {
                    return Err(ApplyError::InvalidState("epoch exhausted"));
                }
                let mut next = current.clone();
                if let Some(isr) = isr {
                    next.isr = isr.clone();
                }
                if let Some(leader) = leader {
                    if *leader != current.leader {
                        next.leader = *leader;
                        next.leader_epoch = current.leader_epoch.next();
                    }
                }
                next.partition_epoch = PartitionEpoch(current.partition_epoch.0 + 1);
                validate_partition(&next)?;
                *current = next;
            }
            MetadataRecord::RemoveTopic { topic_id } => {
                let topic = self.topics.remove(topic_id).ok_or(ApplyError::UnknownTopic)?;
                self.topic_ids.remove(&topic.name);
                self.reassignments.retain(|(id, _), _| id != topic_id);
            }
            MetadataRecord::Reassign { topic_id, partition, replicas, isr, leader, reassignment } => {
                let topic = self.topics.get_mut(topic_id).ok_or(ApplyError::UnknownTopic)?;
                let index = usize::try_from(*partition).map_err(|_| ApplyError::Partition(*partition))?;
                let current = topic.partitions.get_mut(index).ok_or(ApplyError::Partition(*partition))?;
                if current.leader_epoch.0 == i32::MAX || current.partition_epoch.0 == i32::MAX {
                    return Err(ApplyError::InvalidState("epoch exhausted"));
                }
                let mut next = current.clone();
                next.replicas = replicas.clone();
                next.isr = isr.clone();
                if *leader != current.leader {
                    next.leader = *leader;
                    next.leader_epoch = current.leader_epoch.next();
                }
                next.partition_epoch = PartitionEpoch(current.partition_epoch.0 + 1);
                validate_partition(&next)?;
                if let Some(r) = reassignment {
                    if r.target.is_empty() || r.replicas() != next.replicas {
                        return Err(ApplyError::InvalidState("reassignment does not match the replicas"));
                    }
                }
                *current = next;
                match reassignment {
                    Some(r) => self.reassignments.insert((*topic_id, *partition), r.clone()),
                    None => self.reassignments.remove(&(*topic_id, *partition)),
                };
            }
            MetadataRecord::ProducerIds { next_producer_id, .. } => {
                // Ids only move forward, so none is ever handed out twice.
                if *next_producer_id <= self.next_producer_id {
                    return Err(ApplyError::InvalidState("producer ids moving back"));
                }
                self.next_producer_id = *next_producer_id;
            }
            MetadataRecord::UserScramCredential { name, mechanism, credential } => {
                // Refused rather than stored: the SCRAM server would offer the client these.
                if !mechanism.is_scram() {
                    return Err(ApplyError::InvalidScramCredential("not a SCRAM mechanism"));
                }
                if credential.iterations < 1 {
                    return Err(ApplyError::InvalidScramCredential("iterations below 1"));
                }
                self.scram.insert((name.clone(), *mechanism), credential.clone());
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                // Kafka's ScramControlManager.replay throws on a credential it does not hold.
                if self.scram.remove(&(name.clone(), *mechanism)).is_none() {
                    return Err(ApplyError::UnknownScramCredential { user: name.clone(), mechanism: *mechanism });
                }
            }
            MetadataRecord::AccessControlEntry { acl } => {
                // Refused rather than stored: Kafka's authorizer fails on such an ACL whenever a
                // request reaches it (see `AclBinding::validate`).
                acl.validate().map_err(ApplyError::InvalidAcl)?;
                if !self.acls.add(acl.clone()) {
                    return Err(ApplyError::DuplicateAcl(acl.clone()));
                }
            }
            MetadataRecord::RemoveAccessControlEntry { acl } => {
                // Kafka's AclControlManager.replay throws on an ACL it does not hold.
                if !self.acls.remove(acl) {
                    return Err(ApplyError::UnknownAcl(acl.clone()));
                }
            }
            MetadataRecord::Config { resource, name, value } => {
                let configs = match resource {
                    ConfigResource::Topic(topic) => {
                        let id = self.topic_ids.get(topic).ok_or(ApplyError::UnknownTopic)?;
                        &mut self.topics.get_mut(id).expect("indexed").configs
                    }
                    ConfigResource::Broker(broker) => self.broker_configs.entry(*broker).or_default(),
                };
                match value {
                    Some(value) => configs.insert(name.clone(), value.clone()),
                    None => configs.remove(name),
                };
                self.broker_configs.retain(|_, configs| !configs.is_empty());
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                let quotas = self.client_quotas.entry(entity.clone()).or_default();
                match value {
                    Some(value) => quotas.insert(key.clone(), *value),
                    None => quotas.remove(key),
                };
                if quotas.is_empty() {
                    self.client_quotas.remove(entity);
                }
            }
        }
        Ok(())
    }

    /// leader ∈ ISR ⊆ replicas, ISR never empty, no duplicates; the name index matches.
    pub fn check_invariants(&self) {
        assert_eq!(self.topics.len(), self.topic_ids.len(), "topic name index out of step");
        for (name, id) in &self.topic_ids {
            assert_eq!(&self.topics[id].name, name);
        }
        for topic in self.topics.values() {
            for (i, p) in topic.partitions.iter().enumerate() {
                if let Err(e) = validate_partition(p) {
                    panic!("{}-{i}: {e}: {p:?}", topic.name);
                }
            }
        }
        for (id, broker) in &self.brokers {
            assert_eq!(*id, broker.broker_id);
            assert!(broker.broker_epoch <= self.broker_epoch_max);
        }
        for ((user, mechanism), credential) in &self.scram {
            assert!(mechanism.is_scram() && credential.iterations >= 1, "SCRAM credential of {user:?}: {mechanism:?}");
        }
        self.acls.check_invariants();
        for acl in self.acls.iter() {
            assert_eq!(acl.validate(), Ok(()), "stored ACL {acl}");
        }
    }
}

fn validate_partition(p: &PartitionState) -> Result<(), ApplyError> {
    let distinct = |list: &[NodeId]| list.iter().collect::<BTreeSet<_>>().len() == list.len();
    if p.replicas.is_empty() || !distinct(&p.replicas) || p.replicas.contains(&NodeId::NONE) {
        return Err(ApplyError::InvalidState("replicas empty or repeated"));
    }
    if p.isr.is_empty() || !distinct(&p.isr) || !p.isr.iter().all(|r| p.replicas.contains(r)) {
        return Err(ApplyError::InvalidState("ISR empty, repeated or not a subset of replicas"));
    }
    if p.leader != NodeId::NONE && !p.isr.contains(&p.leader) {
        return Err(ApplyError::InvalidState("leader not in ISR"));
    }
    Ok(())
}

// ---- record encoding: [batch version][count] then per record [tag][version][fields] ----

const BATCH_VERSION: u8 = 0;
const RECORD_VERSION: u8 = 0;
/// RegisterBroker with a trailing rack. A broker without a rack is still written at version 0,
/// so a log from a cluster without racks stays readable by nodes that predate racks.
const REGISTER_BROKER_RACK_VERSION: u8 = 1;

fn put_nodes(out: &mut BytesMut, nodes: &[NodeId]) {
    codec::put_count(out, nodes.len());
    for node in nodes {
        out.put_i32_le(node.0);
    }
}

fn read_nodes(r: &mut Reader) -> Result<Vec<NodeId>, DecodeError> {
    let n = r.count(4)?;
    (0..n).map(|_| r.i32().map(NodeId)).collect()
}

fn read_id(r: &mut Reader) -> Result<[u8; 16], DecodeError> {
    Ok(r.take(16)?.try_into().expect("16 bytes"))
}

impl MetadataRecord {
    fn encode_into(&self, out: &mut BytesMut) {
        let tag = match self {
            MetadataRecord::RegisterBroker { .. } => 0,
            MetadataRecord::FenceBroker { .. } => 1,
            MetadataRecord::UnfenceBroker { .. } => 2,
            MetadataRecord::Topic { .. } => 3,
            MetadataRecord::Partition { .. } => 4,
            MetadataRecord::PartitionChange { .. } => 5,
            MetadataRecord::RemoveTopic { .. } => 6,
            MetadataRecord::ProducerIds { .. } => 7,
            MetadataRecord::UserScramCredential { .. } => 8,
            MetadataRecord::RemoveUserScramCredential { .. } => 9,
            MetadataRecord::AccessControlEntry { .. } => 10,
            MetadataRecord::RemoveAccessControlEntry { .. } => 11,
            MetadataRecord::Config { .. } => 12,
            MetadataRecord::Reassign { .. } => 13,
            MetadataRecord::ClientQuota { .. } => 14,
        };
        out.put_u8(tag);
        let version = match self {
            MetadataRecord::RegisterBroker { rack: Some(_), .. } => REGISTER_BROKER_RACK_VERSION,
            _ => RECORD_VERSION,
        };
        out.put_u8(version);
        match self {
            MetadataRecord::RegisterBroker { broker_id, broker_epoch, incarnation_id, endpoints, rack } => {
                out.put_i32_le(broker_id.0);
                out.put_i64_le(broker_epoch.0);
                out.put_slice(incarnation_id);
                codec::put_count(out, endpoints.len());
                for e in endpoints {
                    codec::put_string(out, &e.name);
                    codec::put_string(out, &e.host);
                    out.put_u16_le(e.port);
                }
                if let Some(rack) = rack {
                    codec::put_string(out, rack);
                }
            }
            MetadataRecord::FenceBroker { broker_id, broker_epoch }
            | MetadataRecord::UnfenceBroker { broker_id, broker_epoch } => {
                out.put_i32_le(broker_id.0);
                out.put_i64_le(broker_epoch.0);
            }
            MetadataRecord::Topic { name, topic_id, configs } => {
                codec::put_string(out, name);
                out.put_slice(topic_id);
                codec::put_count(out, configs.len());
                for (k, v) in configs {
                    codec::put_string(out, k);
                    codec::put_string(out, v);
                }
            }
            MetadataRecord::Partition { topic_id, partition, replicas, isr, leader, leader_epoch, partition_epoch } => {
                out.put_slice(topic_id);
                out.put_i32_le(*partition);
                put_nodes(out, replicas);
                put_nodes(out, isr);
                out.put_i32_le(leader.0);
                out.put_i32_le(leader_epoch.0);
                out.put_i32_le(partition_epoch.0);
            }
            MetadataRecord::PartitionChange { topic_id, partition, leader, isr } => {
                out.put_slice(topic_id);
                out.put_i32_le(*partition);
                out.put_u8(u8::from(leader.is_some()));
                out.put_i32_le(leader.map_or(NodeId::NONE.0, |l| l.0));
                out.put_u8(u8::from(isr.is_some()));
                if let Some(isr) = isr {
                    put_nodes(out, isr);
                }
            }
            MetadataRecord::RemoveTopic { topic_id } => out.put_slice(topic_id),
            MetadataRecord::ProducerIds { broker_id, broker_epoch, next_producer_id } => {
                out.put_i32_le(broker_id.0);
                out.put_i64_le(broker_epoch.0);
                out.put_i64_le(*next_producer_id);
            }
            MetadataRecord::UserScramCredential { name, mechanism, credential } => {
                codec::put_string(out, name);
                out.put_u8(scram_type(*mechanism));
                codec::put_bytes(out, &credential.salt);
                codec::put_bytes(out, &credential.stored_key);
                codec::put_bytes(out, &credential.server_key);
                out.put_i32_le(credential.iterations);
            }
            MetadataRecord::RemoveUserScramCredential { name, mechanism } => {
                codec::put_string(out, name);
                out.put_u8(scram_type(*mechanism));
            }
            MetadataRecord::AccessControlEntry { acl } | MetadataRecord::RemoveAccessControlEntry { acl } => put_acl(out, acl),
            MetadataRecord::Config { resource, name, value } => {
                put_config_resource(out, resource);
                codec::put_string(out, name);
                out.put_u8(u8::from(value.is_some()));
                if let Some(value) = value {
                    codec::put_string(out, value);
                }
            }
            MetadataRecord::ClientQuota { entity, key, value } => {
                put_quota_entity(out, entity);
                codec::put_string(out, key);
                out.put_u8(u8::from(value.is_some()));
                if let Some(value) = value {
                    out.put_u64_le(value.to_bits());
                }
            }
            MetadataRecord::Reassign { topic_id, partition, replicas, isr, leader, reassignment } => {
                out.put_slice(topic_id);
                out.put_i32_le(*partition);
                put_nodes(out, replicas);
                put_nodes(out, isr);
                out.put_i32_le(leader.0);
                out.put_u8(u8::from(reassignment.is_some()));
                if let Some(r) = reassignment {
                    put_nodes(out, &r.original);
                    put_nodes(out, &r.target);
                }
            }
        }
    }

    fn decode_from(r: &mut Reader) -> Result<MetadataRecord, DecodeError> {
        let tag = r.u8()?;
        let version = r.u8()?;
        let known = version == RECORD_VERSION || (tag == 0 && version == REGISTER_BROKER_RACK_VERSION);
        if !known {
            return Err(DecodeError::Version(version));
        }
        Ok(match tag {
            0 => {
                let broker_id = NodeId(r.i32()?);
                let broker_epoch = BrokerEpoch(r.i64()?);
                let incarnation_id = read_id(r)?;
                let n = r.count(6)?;
                let mut endpoints = Vec::with_capacity(n);
                for _ in 0..n {
                    endpoints.push(Endpoint { name: r.string()?, host: r.string()?, port: r.u16()? });
                }
                let rack = if version == REGISTER_BROKER_RACK_VERSION { Some(r.string()?) } else { None };
                MetadataRecord::RegisterBroker { broker_id, broker_epoch, incarnation_id, endpoints, rack }
            }
            1 => MetadataRecord::FenceBroker { broker_id: NodeId(r.i32()?), broker_epoch: BrokerEpoch(r.i64()?) },
            2 => MetadataRecord::UnfenceBroker { broker_id: NodeId(r.i32()?), broker_epoch: BrokerEpoch(r.i64()?) },
            3 => {
                let name = r.string()?;
                let topic_id = read_id(r)?;
                let n = r.count(4)?;
                let mut configs = BTreeMap::new();
                for _ in 0..n {
                    configs.insert(r.string()?, r.string()?);
                }
                MetadataRecord::Topic { name, topic_id, configs }
            }
            4 => MetadataRecord::Partition {
                topic_id: read_id(r)?,
                partition: r.i32()?,
                replicas: read_nodes(r)?,
                isr: read_nodes(r)?,
                leader: NodeId(r.i32()?),
                leader_epoch: LeaderEpoch(r.i32()?),
                partition_epoch: PartitionEpoch(r.i32()?),
            },
            5 => {
                let topic_id = read_id(r)?;
                let partition = r.i32()?;
                let has_leader = r.bool()?;
                let leader = NodeId(r.i32()?);
                let isr = if r.bool()? { Some(read_nodes(r)?) } else { None };
                MetadataRecord::PartitionChange { topic_id, partition, leader: has_leader.then_some(leader), isr }
            }
            6 => MetadataRecord::RemoveTopic { topic_id: read_id(r)? },
            7 => MetadataRecord::ProducerIds {
                broker_id: NodeId(r.i32()?),
                broker_epoch: BrokerEpoch(r.i64()?),
                next_producer_id: r.i64()?,
            },
            8 => MetadataRecord::UserScramCredential {
                name: r.string()?,
                mechanism: read_scram_mechanism(r)?,
                credential: ScramCredential {
                    salt: r.bytes()?.to_vec(),
                    stored_key: r.bytes()?.to_vec(),
                    server_key: r.bytes()?.to_vec(),
                    iterations: r.i32()?,
                },
            },
            9 => MetadataRecord::RemoveUserScramCredential { name: r.string()?, mechanism: read_scram_mechanism(r)? },
            10 => MetadataRecord::AccessControlEntry { acl: read_acl(r)? },
            11 => MetadataRecord::RemoveAccessControlEntry { acl: read_acl(r)? },
            12 => {
                let resource = read_config_resource(r)?;
                let name = r.string()?;
                let value = if r.bool()? { Some(r.string()?) } else { None };
                MetadataRecord::Config { resource, name, value }
            }
            13 => MetadataRecord::Reassign {
                topic_id: read_id(r)?,
                partition: r.i32()?,
                replicas: read_nodes(r)?,
                isr: read_nodes(r)?,
                leader: NodeId(r.i32()?),
                reassignment: if r.bool()? { Some(Reassignment { original: read_nodes(r)?, target: read_nodes(r)? }) } else { None },
            },
            14 => MetadataRecord::ClientQuota {
                entity: read_quota_entity(r)?,
                key: r.string()?,
                value: if r.bool()? { Some(QuotaValue::from_bits(r.u64()?)) } else { None },
            },
            tag => return Err(DecodeError::Tag(tag)),
        })
    }
}

pub(crate) fn put_quota_entity(out: &mut BytesMut, entity: &QuotaEntity) {
    codec::put_count(out, entity.parts().len());
    for (entity_type, name) in entity.parts() {
        codec::put_string(out, entity_type);
        out.put_u8(u8::from(name.is_some()));
        codec::put_string(out, name.as_deref().unwrap_or(""));
    }
}

pub(crate) fn read_quota_entity(r: &mut Reader) -> Result<QuotaEntity, DecodeError> {
    let n = r.count(3)?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let entity_type = r.string()?;
        let named = r.bool()?;
        let name = r.string()?;
        parts.push((entity_type, named.then_some(name)));
    }
    QuotaEntity::new(parts).map_err(|_| DecodeError::Invalid("invalid quota entity"))
}

/// Kafka's ScramMechanism byte (1 = SHA-256, 2 = SHA-512), as the records carry it.
fn scram_type(mechanism: Mechanism) -> u8 {
    let t = mechanism.scram_type().unwrap_or_else(|| panic!("{mechanism:?} credential in a metadata record"));
    t as u8
}

fn read_scram_mechanism(r: &mut Reader) -> Result<Mechanism, DecodeError> {
    Mechanism::from_scram_type(r.u8()? as i8).ok_or(DecodeError::Invalid("unknown SCRAM mechanism"))
}

/// An ACL binding with Kafka's wire codes for its enums; shared with the controller RPC.
pub fn put_acl(out: &mut BytesMut, acl: &AclBinding) {
    out.put_u8(acl.resource_type.code() as u8);
    codec::put_string(out, &acl.resource_name);
    out.put_u8(acl.pattern_type.code() as u8);
    codec::put_string(out, &acl.principal);
    codec::put_string(out, &acl.host);
    out.put_u8(acl.operation.code() as u8);
    out.put_u8(acl.permission.code() as u8);
}

/// Decodes what [`put_acl`] wrote. Codes a binding cannot hold (ANY, MATCH, UNKNOWN) are errors.
pub fn read_acl(r: &mut Reader) -> Result<AclBinding, DecodeError> {
    let resource_type = ResourceType::from_code(r.u8()? as i8).ok_or(DecodeError::Invalid("unknown ACL resource type"))?;
    let resource_name = r.string()?;
    let pattern_type = PatternType::from_code(r.u8()? as i8).ok_or(DecodeError::Invalid("unknown ACL pattern type"))?;
    let principal = r.string()?;
    let host = r.string()?;
    let operation = Operation::from_code(r.u8()? as i8).ok_or(DecodeError::Invalid("unknown ACL operation"))?;
    let permission = Permission::from_code(r.u8()? as i8).ok_or(DecodeError::Invalid("unknown ACL permission"))?;
    Ok(AclBinding { resource_type, resource_name, pattern_type, principal, host, operation, permission })
}

/// A config resource: a tag byte (0 topic, 1 broker default, 2 one broker) and its name or id;
/// shared with the controller RPC.
pub fn put_config_resource(out: &mut BytesMut, resource: &ConfigResource) {
    match resource {
        ConfigResource::Topic(name) => {
            out.put_u8(0);
            codec::put_string(out, name);
        }
        ConfigResource::Broker(None) => out.put_u8(1),
        ConfigResource::Broker(Some(id)) => {
            out.put_u8(2);
            out.put_i32_le(id.0);
        }
    }
}

/// Decodes what [`put_config_resource`] wrote.
pub fn read_config_resource(r: &mut Reader) -> Result<ConfigResource, DecodeError> {
    Ok(match r.u8()? {
        0 => ConfigResource::Topic(r.string()?),
        1 => ConfigResource::Broker(None),
        2 => ConfigResource::Broker(Some(NodeId(r.i32()?))),
        _ => return Err(DecodeError::Invalid("unknown config resource")),
    })
}

/// Encodes the records of one metadata-log entry.
pub fn encode_records(records: &[MetadataRecord]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(BATCH_VERSION);
    codec::put_count(&mut out, records.len());
    for record in records {
        record.encode_into(&mut out);
    }
    codec::freeze(out)
}

/// Decodes one metadata-log entry; bytes off disk or the network, so errors, never panics.
pub fn decode_records(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    let mut r = Reader::new(bytes);
    let version = r.u8()?;
    if version != BATCH_VERSION {
        return Err(DecodeError::Version(version));
    }
    let n = r.count(2)?;
    let records = (0..n).map(|_| MetadataRecord::decode_from(&mut r)).collect::<Result<Vec<_>, _>>()?;
    r.finish()?;
    Ok(records)
}

// ---- placement ----

/// Striped replica placement without racks (Kafka's rack-unaware `assignReplicasToBrokers`,
/// which `StripedReplicaPlacer` reduces to with one rack): partition `p`'s leader is broker
/// `(start + p) mod n`, followers follow at a shift that grows by one every `n` partitions, so
/// leaders and replicas both spread evenly. `brokers` must be sorted and distinct.
pub fn place_replicas(
    brokers: &[NodeId],
    num_partitions: i32,
    replication_factor: i16,
    start: usize,
    shift_start: usize,
) -> Vec<Vec<NodeId>> {
    let n = brokers.len();
    let rf = usize::try_from(replication_factor).expect("validated replication factor");
    assert!(rf >= 1 && rf <= n, "replication factor {rf} with {n} brokers");
    let mut shift = shift_start;
    (0..num_partitions as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (start + p) % n;
            let mut replicas = vec![brokers[first]];
            for j in 0..rf - 1 {
                replicas.push(brokers[(first + 1 + (shift + j) % (n - 1)) % n]);
            }
            replicas
        })
        .collect()
}

/// Placement over the alive brokers (`brokers` sorted by id, each with its rack), as Kafka's
/// `assignReplicasToBrokers` chooses: rack-aware when every broker has a rack, rack-unaware
/// when none has, and refused when only some have (Kafka's "Not all brokers have rack
/// information"; its `--disable-rack-aware` escape is a manual assignment here).
pub fn assign_replicas(
    brokers: &[(NodeId, Option<&str>)],
    num_partitions: i32,
    replication_factor: i16,
    start: usize,
    shift_start: usize,
) -> Result<Vec<Vec<NodeId>>, ControllerError> {
    let with_rack = brokers.iter().filter(|(_, rack)| rack.is_some()).count();
    if with_rack == 0 {
        let ids: Vec<NodeId> = brokers.iter().map(|(id, _)| *id).collect();
        return Ok(place_replicas(&ids, num_partitions, replication_factor, start, shift_start));
    }
    if with_rack < brokers.len() {
        return Err(ControllerError::InvalidReplicaAssignment(
            "Not all brokers have rack information for replica rack aware assignment.".into(),
        ));
    }
    let racked: Vec<(NodeId, &str)> = brokers.iter().map(|(id, rack)| (*id, rack.expect("counted"))).collect();
    Ok(place_replicas_rack_aware(&racked, num_partitions, replication_factor, start, shift_start))
}

/// Kafka's `getRackAlternatedBrokerList`: the first broker of each rack (racks by name, brokers
/// by id), then the second of each, and so on, so that neighbours sit on different racks.
fn rack_alternated_brokers(brokers: &[(NodeId, &str)]) -> Vec<(NodeId, String)> {
    let mut by_rack = BTreeMap::<&str, Vec<NodeId>>::new();
    for (id, rack) in brokers {
        by_rack.entry(rack).or_default().push(*id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let rounds = by_rack.values().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::with_capacity(brokers.len());
    for round in 0..rounds {
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(round) {
                out.push((*id, (*rack).to_owned()));
            }
        }
    }
    out
}

/// Kafka's `assignReplicasToBrokersRackAware`: striping as in [`place_replicas`] over the
/// rack-alternated broker list, the follower shift scaled by the number of racks, and a
/// candidate skipped while its rack already holds a replica of the partition and some rack
/// holds none, or while it holds one itself and some broker holds none. Each partition so
/// spans `min(racks, rf)` racks, and leaders and replicas spread evenly over brokers.
pub fn place_replicas_rack_aware(
    brokers: &[(NodeId, &str)],
    num_partitions: i32,
    replication_factor: i16,
    start: usize,
    shift_start: usize,
) -> Vec<Vec<NodeId>> {
    let arranged = rack_alternated_brokers(brokers);
    let n = arranged.len();
    let rf = usize::try_from(replication_factor).expect("validated replication factor");
    assert!(rf >= 1 && rf <= n, "replication factor {rf} with {n} brokers");
    let num_racks = arranged.iter().map(|(_, rack)| rack.as_str()).collect::<BTreeSet<_>>().len();
    let mut shift = shift_start;
    (0..num_partitions as usize)
        .map(|p| {
            if p > 0 && p % n == 0 {
                shift += 1;
            }
            let first = (start + p) % n;
            let mut replicas = vec![arranged[first].0];
            let mut racks = BTreeSet::from([arranged[first].1.as_str()]);
            let mut k = 0;
            for _ in 0..rf - 1 {
                // Every other broker comes up within n - 1 candidates, and one of them fits.
                let k_max = k + 2 * n;
                loop {
                    assert!(k < k_max, "no broker fits replica {} of partition {p}", replicas.len());
                    let (broker, rack) = &arranged[(first + 1 + (shift * num_racks + k) % (n - 1)) % n];
                    k += 1;
                    let rack_fits = !racks.contains(rack.as_str()) || racks.len() == num_racks;
                    let broker_fits = !replicas.contains(broker) || replicas.len() == n;
                    if rack_fits && broker_fits {
                        replicas.push(*broker);
                        racks.insert(rack.as_str());
                        break;
                    }
                }
            }
            replicas
        })
        .collect()
}

// ---- requests and responses ----

/// Expected failures, each mapped to the Kafka error code the response carries.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("not the active controller")]
    NotController,
    #[error("too many requests waiting for the metadata log")]
    Busy,
    #[error("broker epoch is stale")]
    StaleBrokerEpoch,
    #[error("broker is not registered")]
    BrokerIdNotRegistered,
    #[error("broker id registered by another live incarnation")]
    DuplicateBrokerRegistration,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("topic already exists")]
    TopicAlreadyExists,
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("No partition reassignment is in progress.")]
    NoReassignmentInProgress,
    #[error("Leader election not needed for topic partition.")]
    ElectionNotNeeded,
    #[error("The preferred leader was not available.")]
    PreferredLeaderNotAvailable,
    #[error("Eligible topic partition leaders are not available.")]
    EligibleLeadersNotAvailable,
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    PolicyViolation(String),
    #[error("leader epoch is older than the controller's")]
    FencedLeaderEpoch,
    #[error("partition epoch is older than the controller's")]
    InvalidUpdateVersion,
    #[error("new ISR holds a replica that is not registered or is fenced")]
    IneligibleReplica,
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("{0}")]
    UnsupportedSaslMechanism(String),
    #[error("{0}")]
    UnacceptableCredential(String),
    #[error("{0}")]
    DuplicateResource(String),
    #[error("{0}")]
    ResourceNotFound(String),
    /// INVALID_REQUEST with its message, as Kafka answers a CreateAcls binding that
    /// `AclBinding::validate` refuses or a client quota it cannot take.
    #[error("{0}")]
    Invalid(String),
}

impl ControllerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ControllerError::NotController => ErrorCode::NotController,
            ControllerError::Busy => ErrorCode::RequestTimedOut,
            ControllerError::StaleBrokerEpoch => ErrorCode::StaleBrokerEpoch,
            ControllerError::BrokerIdNotRegistered => ErrorCode::BrokerIdNotRegistered,
            ControllerError::DuplicateBrokerRegistration => ErrorCode::DuplicateBrokerRegistration,
            ControllerError::UnknownTopicId => ErrorCode::UnknownTopicId,
            ControllerError::UnknownTopicOrPartition => ErrorCode::UnknownTopicOrPartition,
            ControllerError::TopicAlreadyExists => ErrorCode::TopicAlreadyExists,
            ControllerError::InvalidTopic(_) => ErrorCode::InvalidTopicException,
            ControllerError::InvalidPartitions(_) => ErrorCode::InvalidPartitions,
            ControllerError::InvalidReplicationFactor(_) => ErrorCode::InvalidReplicationFactor,
            ControllerError::InvalidReplicaAssignment(_) => ErrorCode::InvalidReplicaAssignment,
            ControllerError::NoReassignmentInProgress => ErrorCode::NoReassignmentInProgress,
            ControllerError::ElectionNotNeeded => ErrorCode::ElectionNotNeeded,
            ControllerError::PreferredLeaderNotAvailable => ErrorCode::PreferredLeaderNotAvailable,
            ControllerError::EligibleLeadersNotAvailable => ErrorCode::EligibleLeadersNotAvailable,
            ControllerError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            ControllerError::PolicyViolation(_) => ErrorCode::PolicyViolation,
            ControllerError::FencedLeaderEpoch => ErrorCode::FencedLeaderEpoch,
            ControllerError::InvalidUpdateVersion => ErrorCode::InvalidUpdateVersion,
            ControllerError::IneligibleReplica => ErrorCode::IneligibleReplica,
            ControllerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ControllerError::UnsupportedSaslMechanism(_) => ErrorCode::UnsupportedSaslMechanism,
            ControllerError::UnacceptableCredential(_) => ErrorCode::UnacceptableCredential,
            ControllerError::DuplicateResource(_) => ErrorCode::DuplicateResource,
            ControllerError::ResourceNotFound(_) => ErrorCode::ResourceNotFound,
            ControllerError::Invalid(_) => ErrorCode::InvalidRequest,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistrationRequest {
    pub broker_id: NodeId,
    /// New on every broker process start (KIP-631's incarnation id).
    pub incarnation_id: [u8; 16],
    pub endpoints: Vec<Endpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerRegistrationResponse {
    pub error: Option<ControllerError>,
    pub broker_epoch: BrokerEpoch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerHeartbeatRequest {
    pub broker_id: NodeId,
    pub broker_epoch: BrokerEpoch,
    /// The metadata-log index the broker has applied; it is unfenced once this reaches its
    /// own registration record.
    pub current_metadata_offset: Index,
    pub want_fence: bool,
    /// Controlled shutdown: move my leaderships away and take me out of every ISR.
    pub want_shutdown: bool,
    /// The replicas this broker cannot serve because their log directory failed (KIP-858
    /// reports failed directories; a broker here knows which partitions each held, so it
    /// reports those): the controller moves their leaderships away and takes this broker out
    /// of their ISRs, and elects it for none of them while it keeps reporting them.
    pub offline_replicas: Vec<(TopicId, i32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerHeartbeatResponse {
    pub error: Option<ControllerError>,
    pub is_caught_up: bool,
    pub is_fenced: bool,
    pub should_shutdown: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatableTopic {
    pub name: String,
    /// `-1`: the broker default `num.partitions`.
    pub num_partitions: i32,
    /// `-1`: the broker default `default.replication.factor`.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
    /// A manual replica assignment, by partition index (Kafka's `assignments`); then
    /// `num_partitions` and `replication_factor` must be -1.
    pub assignments: Vec<(i32, Vec<NodeId>)>,
}

/// CreatePartitions for one topic: grow it to `count` partitions, placed by the controller or
/// on the brokers `assignments` names (one list per new partition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatePartitionsTopic {
    pub name: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<NodeId>>>,
}

/// One partition of AlterPartitionReassignments: move it to `target`, or with `None` cancel
/// the reassignment under way (back to the original replicas).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReassignPartition {
    pub topic: String,
    pub partition: i32,
    pub target: Option<Vec<NodeId>>,
    /// KIP-860: `false` refuses a target of another size (INVALID_REPLICATION_FACTOR).
    pub allow_replication_factor_change: bool,
}

/// ElectLeaders (KIP-460): `unclean` false elects each partition's preferred (first) replica
/// when it is alive and in sync; true elects a leader for leaderless partitions from any alive
/// replica. `partitions` `None` is every partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectLeadersRequest {
    pub unclean: bool,
    pub partitions: Option<Vec<(String, i32)>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatePartitionsRequest {
    pub topics: Vec<CreatePartitionsTopic>,
    pub validate_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopicsRequest {
    pub topics: Vec<CreatableTopic>,
    pub validate_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTopicResult {
    pub name: String,
    pub error: Option<ControllerError>,
    pub topic_id: TopicId,
    pub num_partitions: i32,
    pub replication_factor: i16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteTopicResult {
    pub name: String,
    pub error: Option<ControllerError>,
    pub topic_id: TopicId,
}

/// The partition leader's proposal to change its ISR (KIP-497), one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    pub broker_id: NodeId,
    pub broker_epoch: BrokerEpoch,
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub new_isr: Vec<NodeId>,
}

/// The partition state a leader works from after AlterPartition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderAndIsr {
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionResponse {
    pub error: Option<ControllerError>,
    pub state: Option<LeaderAndIsr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    RegisterBroker(BrokerRegistrationResponse),
    Heartbeat(BrokerHeartbeatResponse),
    CreateTopics(Vec<CreateTopicResult>),
    DeleteTopics(Vec<DeleteTopicResult>),
    AlterPartition(AlterPartitionResponse),
    AllocateProducerIds(AllocateProducerIdsResponse),
    AlterUserScramCredentials(Vec<AlterUserScramCredentialResult>),
    /// One result per binding of the request, in its order.
    CreateAcls(Vec<AclCreateResult>),
    /// One result per filter of the request, in its order.
    DeleteAcls(Vec<AclDeleteResult>),
    /// One result per resource of the request, in its order.
    AlterConfigs(Vec<Option<ControllerError>>),
    /// One result per topic of the request, in its order.
    CreatePartitions(Vec<Option<ControllerError>>),
    /// One result per partition of the request, in its order.
    AlterPartitionReassignments(Vec<Option<ControllerError>>),
    /// Per partition named (or, for all, per partition an election was attempted on).
    ElectLeaders(Vec<(String, i32, Option<ControllerError>)>),
    /// One result per entity of the request, in its order.
    AlterClientQuotas(Vec<Option<ControllerError>>),
}

/// AlterClientQuotas: per entity, each key set (`Some`) or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterClientQuotasRequest {
    pub entries: Vec<QuotaAlteration>,
    pub validate_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaAlteration {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<QuotaValue>)>,
}

/// One change of IncrementalAlterConfigs (Kafka's `AlterConfigOp`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOp {
    Set(String),
    /// Back to the next layer's value.
    Delete,
    /// Adds list items not already there (list-valued configs only).
    Append(String),
    /// Removes list items (list-valued configs only).
    Subtract(String),
}

/// The changes to one resource's dynamic configs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigAlteration {
    pub resource: ConfigResource,
    pub changes: Vec<(String, ConfigOp)>,
    /// AlterConfigs (the older API): the `Set`s become the resource's whole config, anything
    /// not named returns to its default.
    pub replace: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterConfigsRequest {
    pub resources: Vec<ConfigAlteration>,
    pub validate_only: bool,
}

/// A block of producer ids for a broker (KRaft's AllocateProducerIds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocateProducerIdsRequest {
    pub broker_id: NodeId,
    pub broker_epoch: BrokerEpoch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocateProducerIdsResponse {
    pub error: Option<ControllerError>,
    pub first_producer_id: i64,
    pub count: i64,
}

/// KIP-554's ScramCredentialDeletion. The mechanism stays Kafka's byte so that the controller
/// answers an unknown one as Kafka's does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentialDeletion {
    pub name: String,
    pub mechanism: i8,
}

/// KIP-554's ScramCredentialUpsertion with the client's salted password already turned into
/// the stored credential by the broker that took the request: the salted password is enough
/// to log in as the user, so it goes no further than that broker, not into the controller
/// RPC nor into the metadata log. For an unknown mechanism the keys are empty (the
/// controller refuses it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredentialUpsertion {
    pub name: String,
    pub mechanism: i8,
    pub credential: ScramCredential,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterUserScramCredentialsRequest {
    pub deletions: Vec<ScramCredentialDeletion>,
    pub upsertions: Vec<ScramCredentialUpsertion>,
}

/// The outcome for one user: every alteration of the user in the request, or none, applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterUserScramCredentialResult {
    pub user: String,
    pub error: Option<ControllerError>,
}

/// One CreateAcls binding's outcome (Kafka's `AclCreateResult`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclCreateResult {
    pub error: Option<ControllerError>,
}

/// One DeleteAcls filter's outcome (Kafka's `AclDeleteResult`): the bindings it removed, which
/// include those another filter of the same request also matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclDeleteResult {
    pub error: Option<ControllerError>,
    pub deleted: Vec<AclBinding>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Hand these bytes (an encoded record batch) to `raft.propose`, in emission order.
    Propose(Bytes),
    Reply(RequestId, Response),
}

/// Broker settings the controller uses, named after Kafka's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    pub node_id: NodeId,
    /// `broker.session.timeout.ms`: fence a broker not heard from for this long.
    pub broker_session_timeout_ms: i64,
    /// `default.replication.factor`
    pub default_replication_factor: i16,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `unclean.leader.election.enable`, the default for topics that do not set it.
    pub unclean_leader_election_enable: bool,
    /// Kafka's MAX_PARTITIONS_PER_BATCH.
    pub max_partitions_per_request: usize,
    /// Proposals not yet committed; must stay below Raft's `max_uncommitted_entries`.
    pub max_inflight_proposals: usize,
    /// The largest entry to propose; must not exceed Raft's `max_entry_bytes`.
    pub max_entry_bytes: usize,
    /// `auto.leader.rebalance.enable` with `leader.imbalance.check.interval.seconds`: how often
    /// the active controller checks leader balance (`None`: never).
    pub leader_imbalance_check_interval_ms: Option<i64>,
    /// `leader.imbalance.per.broker.percentage`.
    pub leader_imbalance_per_broker_percentage: u32,
}

impl ControllerConfig {
    pub fn new(node_id: NodeId) -> ControllerConfig {
        ControllerConfig {
            node_id,
            broker_session_timeout_ms: 9_000,
            default_replication_factor: 1,
            num_partitions: 1,
            unclean_leader_election_enable: false,
            max_partitions_per_request: 10_000,
            max_inflight_proposals: 1_024,
            max_entry_bytes: 8 << 20,
            leader_imbalance_check_interval_ms: None,
            leader_imbalance_per_broker_percentage: 10,
        }
    }
}

struct Active {
    term: Term,
    /// Applied an entry of `term`: the image holds everything committed before.
    ready: bool,
    /// The committed image plus this controller's proposals not yet committed.
    pending: MetadataImage,
    /// Broker id → session deadline (not replicated, as in KRaft: a new active controller
    /// gives every broker a full session).
    sessions: BTreeMap<NodeId, i64>,
    /// Brokers that registered or heartbeated with this active controller. Only their
    /// sessions refuse a new incarnation (DUPLICATE_BROKER_REGISTRATION): the session a new
    /// active controller grants at activation has heard from nobody, and holding it against a
    /// restarted broker would keep a node that restarted with its controller (a node alone,
    /// or a combined node whose quorum moved) out for a whole session timeout.
    heard_from: BTreeSet<NodeId>,
    /// One slot per proposal in flight, oldest first: the replies to send when it commits
    /// (its own, and those of requests that proposed nothing but were decided on the pending
    /// view it is part of).
    inflight: VecDeque<Slot>,
    /// When the next leader-imbalance check runs (with `auto.leader.rebalance.enable`).
    rebalance_due_ms: Option<i64>,
    /// What each broker reported offline in its latest heartbeat. Volatile like `sessions`: a
    /// new active controller learns it again from the next heartbeats, which repeat it.
    offline: OfflineReplicas,
}

/// Replicas brokers reported offline (a failed log directory), with the broker epoch they
/// were reported under: a new registration (the broker restarted, its directories checked
/// again) voids them without the registration path having to clear them. Such a replica is
/// kept from leading and from joining an ISR, though its broker is alive.
#[derive(Debug, Default)]
struct OfflineReplicas(BTreeMap<NodeId, (BrokerEpoch, BTreeSet<(TopicId, i32)>)>);

impl OfflineReplicas {
    const NONE: OfflineReplicas = OfflineReplicas(BTreeMap::new());

    fn contains(&self, image: &MetadataImage, broker: NodeId, topic_id: &TopicId, partition: i32) -> bool {
        self.0.get(&broker).is_some_and(|(epoch, replicas)| {
            image.brokers.get(&broker).is_some_and(|b| b.broker_epoch == *epoch) && replicas.contains(&(*topic_id, partition))
        })
    }

    /// `broker`'s replica of the partition may lead and be in its ISR.
    fn eligible(&self, image: &MetadataImage, broker: NodeId, topic_id: &TopicId, partition: i32) -> bool {
        image.is_alive(broker) && !self.contains(image, broker, topic_id, partition)
    }

    /// The replicas `broker` reports under `epoch`, replacing what it reported before.
    fn report(&mut self, broker: NodeId, epoch: BrokerEpoch, replicas: &[(TopicId, i32)]) {
        if replicas.is_empty() {
            self.0.remove(&broker);
        } else {
            self.0.insert(broker, (epoch, replicas.iter().copied().collect()));
        }
    }

    fn of(&self, broker: NodeId, epoch: BrokerEpoch) -> impl Iterator<Item = &(TopicId, i32)> {
        self.0.get(&broker).filter(|(e, _)| *e == epoch).into_iter().flat_map(|(_, replicas)| replicas)
    }
}

/// The replies waiting for one proposal to commit.
#[derive(Debug, Default)]
struct Slot {
    /// The proposal's own request.
    own: Option<(RequestId, Response)>,
    /// Requests that proposed nothing but were decided on a pending view holding this
    /// proposal: if it is lost, their answer is NOT_CONTROLLER whatever they said.
    deferred: Vec<(RequestId, Response)>,
}

impl Slot {
    fn replies(self) -> impl Iterator<Item = (RequestId, Response)> {
        self.own.into_iter().chain(self.deferred)
    }
}

/// The metadata state machine of one quorum member; see the module docs for the wiring.
pub struct Controller {
    config: ControllerConfig,
    seed: u64,
    topic_id_counter: u64,
    image: MetadataImage,
    applied: Index,
    /// Broker → (epoch, index of its committed registration record).
    registered_at: BTreeMap<NodeId, (BrokerEpoch, Index)>,
    active: Option<Active>,
    actions: VecDeque<Action>,
}

impl Controller {
    /// `seed` makes topic ids unique without ambient randomness.
    pub fn new(config: ControllerConfig, seed: u64) -> Controller {
        Controller {
            config,
            seed,
            topic_id_counter: 0,
            image: MetadataImage::default(),
            applied: Index(0),
            registered_at: BTreeMap::new(),
            active: None,
            actions: VecDeque::new(),
        }
    }

    /// The committed image.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }
    pub fn applied_index(&self) -> Index {
        self.applied
    }
    /// Active and caught up: serving requests.
    pub fn is_active(&self) -> bool {
        self.active.as_ref().is_some_and(|a| a.ready)
    }

    // ---- inputs from the quorum ----

    /// Raft's known leader or term changed.
    pub fn handle_leader(&mut self, _now_ms: i64, term: Term, leader: Option<NodeId>) {
        let leading = leader == Some(self.config.node_id);
        if self.active.as_ref().is_some_and(|a| !leading || a.term != term) {
            self.resign();
        }
        if leading && self.active.is_none() {
            self.active = Some(Active {
                term,
                ready: false,
                pending: self.image.clone(),
                sessions: BTreeMap::new(),
                heard_from: BTreeSet::new(),
                inflight: VecDeque::new(),
                rebalance_due_ms: None,
                offline: OfflineReplicas::default(),
            });
        }
        self.check_invariants();
    }

    /// One committed entry; entries must come in index order, each once.
    pub fn handle_committed(&mut self, now_ms: i64, entry: &Entry) {
        assert_eq!(entry.index, self.applied.next(), "committed entries out of order");
        self.applied = entry.index;
        let own = self.active.as_ref().is_some_and(|a| a.term == entry.term);
        if entry.data.is_empty() {
            if own {
                let timeout = self.config.broker_session_timeout_ms;
                let active = self.active.as_mut().expect("own entry means active");
                if !active.ready {
                    active.ready = true;
                    active.pending = self.image.clone();
                    active.sessions = self.image.brokers.keys().map(|b| (*b, now_ms + timeout)).collect();
                    active.rebalance_due_ms = self.config.leader_imbalance_check_interval_ms.map(|i| now_ms + i);
                    tracing::info!(term = %entry.term, index = %entry.index, "controller active");
                }
            }
        } else {
            match decode_records(&entry.data) {
                Ok(records) => {
                    for record in &records {
                        if let Err(error) = self.image.apply(record) {
                            tracing::warn!(index = %entry.index, %error, ?record, "metadata record not applied");
                        } else if let MetadataRecord::RegisterBroker { broker_id, broker_epoch, .. } = record {
                            self.registered_at.insert(*broker_id, (*broker_epoch, entry.index));
                        }
                    }
                }
                Err(error) => tracing::warn!(index = %entry.index, %error, "metadata entry does not decode; skipped"),
            }
            if own {
                let active = self.active.as_mut().expect("own entry means active");
                let slot = active.inflight.pop_front();
                assert!(slot.is_some(), "entry {} of our term {} that we did not propose", entry.index, entry.term);
                for (id, response) in slot.into_iter().flat_map(Slot::replies) {
                    self.actions.push_back(Action::Reply(id, response));
                }
            }
        }
        self.check_invariants();
    }

    /// Fences brokers whose session expired; with `auto.leader.rebalance.enable`, moves
    /// leaderships back to preferred replicas when a broker's share is off.
    pub fn handle_timeout(&mut self, now_ms: i64) {
        let Some(active) = self.active.as_mut().filter(|a| a.ready) else { return };
        if let Some(interval) = self.config.leader_imbalance_check_interval_ms {
            let due = *active.rebalance_due_ms.get_or_insert(now_ms + interval);
            if due <= now_ms {
                active.rebalance_due_ms = Some(now_ms + interval);
                let records = preferred_rebalance(&active.pending, self.config.leader_imbalance_per_broker_percentage, &active.offline);
                if !records.is_empty() {
                    tracing::info!(partitions = records.len(), "leader imbalance above leader.imbalance.per.broker.percentage; electing preferred leaders");
                    self.propose(records, None);
                }
            }
        }
        let Some(active) = self.active.as_ref() else { return };
        let expired: Vec<NodeId> = active
            .sessions
            .iter()
            .filter(|(b, deadline)| **deadline <= now_ms && active.pending.is_alive(**b))
            .map(|(b, _)| *b)
            .collect();
        for broker in expired {
            let active = self.active.as_ref().expect("active");
            let pending = &active.pending;
            tracing::info!(%broker, "broker session expired; fencing");
            let epoch = pending.brokers[&broker].broker_epoch;
            let mut records = leave_changes_except(pending, broker, self.config.unclean_leader_election_enable, &active.offline);
            records.push(MetadataRecord::FenceBroker { broker_id: broker, broker_epoch: epoch });
            self.propose(records, None);
        }
        self.check_invariants();
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<i64> {
        let active = self.active.as_ref().filter(|a| a.ready)?;
        let sessions = active.sessions.iter().filter(|(b, _)| active.pending.is_alive(**b)).map(|(_, d)| *d).min();
        sessions.into_iter().chain(active.rebalance_due_ms).min()
    }

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- requests (active controller only) ----

    pub fn handle_register_broker(&mut self, now_ms: i64, id: RequestId, req: BrokerRegistrationRequest) {
        let reply = |error| Response::RegisterBroker(BrokerRegistrationResponse { error, broker_epoch: BrokerEpoch(-1) });
        if !self.serving(id, reply(Some(ControllerError::NotController))) {
            return;
        }
        let pending = self.pending();
        let active = self.active.as_ref().expect("serving");
        if let Some(existing) = pending.brokers.get(&req.broker_id) {
            let session_alive = active.heard_from.contains(&req.broker_id)
                && active.sessions.get(&req.broker_id).is_some_and(|d| *d > now_ms);
            if existing.incarnation_id != req.incarnation_id && !existing.fenced && session_alive {
                self.actions.push_back(Action::Reply(id, reply(Some(ControllerError::DuplicateBrokerRegistration))));
                return;
            }
        }
        // A new epoch: the old incarnation's leaderships and ISR places go first.
        let mut records = if pending.brokers.contains_key(&req.broker_id) {
            leave_changes(pending, req.broker_id, self.config.unclean_leader_election_enable)
        } else {
            Vec::new()
        };
        let broker_epoch = BrokerEpoch(pending.broker_epoch_max.0 + 1);
        records.push(MetadataRecord::RegisterBroker {
            broker_id: req.broker_id,
            broker_epoch,
            incarnation_id: req.incarnation_id,
            endpoints: req.endpoints,
            rack: req.rack,
        });
        let timeout = self.config.broker_session_timeout_ms;
        let active = self.active.as_mut().expect("serving");
        active.sessions.insert(req.broker_id, now_ms + timeout);
        active.heard_from.insert(req.broker_id);
        let response = Response::RegisterBroker(BrokerRegistrationResponse { error: None, broker_epoch });
        self.propose(records, Some((id, response)));
        self.check_invariants();
    }

    pub fn handle_heartbeat(&mut self, now_ms: i64, id: RequestId, req: BrokerHeartbeatRequest) {
        let reply = |error, is_caught_up, is_fenced, should_shutdown| {
            Response::Heartbeat(BrokerHeartbeatResponse { error, is_caught_up, is_fenced, should_shutdown })
        };
        if !self.serving(id, reply(Some(ControllerError::NotController), false, true, false)) {
            return;
        }
        let pending = self.pending();
        let Some(broker) = pending.brokers.get(&req.broker_id) else {
            let error = Some(ControllerError::BrokerIdNotRegistered);
            self.actions.push_back(Action::Reply(id, reply(error, false, true, false)));
            return;
        };
        if broker.broker_epoch != req.broker_epoch {
            let error = Some(ControllerError::StaleBrokerEpoch);
            self.actions.push_back(Action::Reply(id, reply(error, false, true, false)));
            return;
        }
        let fenced = broker.fenced;
        let epoch = broker.broker_epoch;
        let caught_up = self
            .registered_at
            .get(&req.broker_id)
            .is_some_and(|(e, at)| *e == epoch && req.current_metadata_offset >= *at);
        let unclean = self.config.unclean_leader_election_enable;
        let timeout = self.config.broker_session_timeout_ms;
        let active = self.active.as_mut().expect("serving");
        active.sessions.insert(req.broker_id, now_ms + timeout);
        active.heard_from.insert(req.broker_id);
        active.offline.report(req.broker_id, epoch, &req.offline_replicas);
        let active = self.active.as_ref().expect("serving");
        let (pending, offline) = (&active.pending, &active.offline);
        if req.want_shutdown {
            let mut records = leave_changes_except(pending, req.broker_id, unclean, offline);
            if !fenced {
                records.push(MetadataRecord::FenceBroker { broker_id: req.broker_id, broker_epoch: epoch });
            }
            self.propose(records, Some((id, reply(None, caught_up, true, true))));
        } else if fenced && !req.want_fence && caught_up {
            let mut after = pending.clone();
            let unfence = MetadataRecord::UnfenceBroker { broker_id: req.broker_id, broker_epoch: epoch };
            after.apply(&unfence).expect("unfence of a registered broker");
            let mut records = vec![unfence];
            records.extend(join_changes(&after, req.broker_id, unclean, offline));
            self.propose(records, Some((id, reply(None, true, false, false))));
        } else {
            let records = offline_changes(pending, req.broker_id, unclean, offline);
            if records.is_empty() {
                self.actions.push_back(Action::Reply(id, reply(None, caught_up, fenced, false)));
            } else {
                tracing::info!(broker = %req.broker_id, partitions = records.len(), "replicas reported offline; moving their leaderships and shrinking their ISRs");
                self.propose(records, Some((id, reply(None, caught_up, fenced, false))));
            }
        }
        self.check_invariants();
    }

    pub fn handle_create_topics(&mut self, _now_ms: i64, id: RequestId, req: CreateTopicsRequest) {
        let not_controller = Response::CreateTopics(
            req.topics
                .iter()
                .map(|t| CreateTopicResult {
                    name: t.name.clone(),
                    error: Some(ControllerError::NotController),
                    topic_id: [0; 16],
                    num_partitions: -1,
                    replication_factor: -1,
                })
                .collect(),
        );
        if !self.serving(id, not_controller) {
            return;
        }
        let pending = self.pending();
        let mut scratch = pending.clone();
        let mut records = Vec::new();
        let mut results = Vec::new();
        let mut counts = BTreeMap::<&str, usize>::new();
        for topic in &req.topics {
            *counts.entry(topic.name.as_str()).or_default() += 1;
        }
        let mut partitions_total = 0usize;
        for topic in &req.topics {
            let mut result = CreateTopicResult {
                name: topic.name.clone(),
                error: None,
                topic_id: [0; 16],
                num_partitions: -1,
                replication_factor: -1,
            };
            let outcome = if counts[topic.name.as_str()] > 1 {
                Err(ControllerError::InvalidRequest("topic named twice in one request"))
            } else {
                self.create_topic(&scratch, topic, &mut partitions_total)
            };
            match outcome {
                Ok(topic_records) => {
                    if let MetadataRecord::Topic { topic_id, .. } = &topic_records[0] {
                        result.topic_id = *topic_id;
                    }
                    result.num_partitions = (topic_records.len() - 1) as i32;
                    if let Some(MetadataRecord::Partition { replicas, .. }) = topic_records.get(1) {
                        result.replication_factor = replicas.len() as i16;
                    }
                    for record in &topic_records {
                        scratch.apply(record).expect("records built against this image apply");
                    }
                    if !req.validate_only {
                        records.extend(topic_records);
                    }
                }
                Err(error) => result.error = Some(error),
            }
            results.push(result);
        }
        if encode_records(&records).len() > self.config.max_entry_bytes {
            let too_big = ControllerError::PolicyViolation("the topics' metadata exceeds one metadata-log entry".into());
            for result in results.iter_mut().filter(|r| r.error.is_none()) {
                result.error = Some(too_big.clone());
            }
            records.clear();
        }
        self.propose(records, Some((id, Response::CreateTopics(results))));
        self.check_invariants();
    }

    pub fn handle_delete_topics(&mut self, _now_ms: i64, id: RequestId, names: Vec<String>) {
        let answer = |error: Option<ControllerError>| {
            names.iter().map(|name| DeleteTopicResult { name: name.clone(), error: error.clone(), topic_id: [0; 16] }).collect()
        };
        if !self.serving(id, Response::DeleteTopics(answer(Some(ControllerError::NotController)))) {
            return;
        }
        let pending = self.pending();
        let mut records = Vec::new();
        let mut results: Vec<DeleteTopicResult> = answer(None);
        let mut seen = BTreeSet::new();
        for result in &mut results {
            match pending.topic_by_name(&result.name) {
                Some(topic) if seen.insert(topic.id) => {
                    result.topic_id = topic.id;
                    records.push(MetadataRecord::RemoveTopic { topic_id: topic.id });
                }
                Some(topic) => result.topic_id = topic.id,
                None => result.error = Some(ControllerError::UnknownTopicOrPartition),
            }
        }
        self.propose(records, Some((id, Response::DeleteTopics(results))));
        self.check_invariants();
    }

    /// Hands a registered broker the next block of producer ids, once the record of it is
    /// committed (KRaft's `ProducerIdControlManager`): a new controller continues from the
    /// committed `next_producer_id`, so no id is handed out twice, across failovers too.
    pub fn handle_allocate_producer_ids(&mut self, _now_ms: i64, id: RequestId, req: AllocateProducerIdsRequest) {
        let reply = |error, first_producer_id, count| {
            Response::AllocateProducerIds(AllocateProducerIdsResponse { error, first_producer_id, count })
        };
        if !self.serving(id, reply(Some(ControllerError::NotController), -1, 0)) {
            return;
        }
        let pending = self.pending();
        let error = match pending.brokers.get(&req.broker_id) {
            None => Some(ControllerError::BrokerIdNotRegistered),
            Some(b) if b.broker_epoch != req.broker_epoch => Some(ControllerError::StaleBrokerEpoch),
            Some(_) => None,
        };
        if error.is_some() {
            self.actions.push_back(Action::Reply(id, reply(error, -1, 0)));
            return;
        }
        let first = pending.next_producer_id;
        let record = MetadataRecord::ProducerIds {
            broker_id: req.broker_id,
            broker_epoch: req.broker_epoch,
            next_producer_id: first + PRODUCER_ID_BLOCK_SIZE,
        };
        self.propose(vec![record], Some((id, reply(None, first, PRODUCER_ID_BLOCK_SIZE))));
        self.check_invariants();
    }

    /// Kafka's `ScramControlManager.alterCredentials` (KIP-554). A user is altered at most once
    /// per request: naming one twice, by deletions or upsertions and whatever the mechanisms,
    /// fails that user with DUPLICATE_RESOURCE (and drops its first alteration too). Otherwise
    /// each alteration is validated alone; the accepted ones commit together in one entry, and
    /// the answer has one result per user, in the order the users first appear.
    pub fn handle_alter_user_scram_credentials(&mut self, _now_ms: i64, id: RequestId, req: AlterUserScramCredentialsRequest) {
        let mut users: Vec<&str> = Vec::new();
        let mut seen = BTreeSet::new();
        for name in req.deletions.iter().map(|d| d.name.as_str()).chain(req.upsertions.iter().map(|u| u.name.as_str())) {
            if seen.insert(name) {
                users.push(name);
            }
        }
        let answer = |errors: &BTreeMap<&str, ControllerError>| {
            let result = |user: &&str| AlterUserScramCredentialResult { user: (*user).to_owned(), error: errors.get(user).cloned() };
            Response::AlterUserScramCredentials(users.iter().map(result).collect())
        };
        let refused: BTreeMap<&str, ControllerError> = users.iter().map(|u| (*u, ControllerError::NotController)).collect();
        if !self.serving(id, answer(&refused)) {
            return;
        }
        let pending = self.pending();
        let duplicate = || ControllerError::DuplicateResource("A user credential cannot be altered twice in the same request".into());
        let mut errors: BTreeMap<&str, ControllerError> = BTreeMap::new();
        let mut deletions: BTreeMap<&str, Mechanism> = BTreeMap::new();
        let mut upsertions: BTreeMap<&str, (Mechanism, &ScramCredential)> = BTreeMap::new();
        for deletion in &req.deletions {
            let name = deletion.name.as_str();
            if errors.contains_key(name) {
                continue;
            }
            if deletions.remove(name).is_some() {
                errors.insert(name, duplicate());
                continue;
            }
            match validate_scram_deletion(pending, deletion) {
                Ok(mechanism) => {
                    deletions.insert(name, mechanism);
                }
                Err(error) => {
                    errors.insert(name, error);
                }
            }
        }
        for upsertion in &req.upsertions {
            let name = upsertion.name.as_str();
            if errors.contains_key(name) {
                continue;
            }
            if deletions.remove(name).is_some() || upsertions.remove(name).is_some() {
                errors.insert(name, duplicate());
                continue;
            }
            match validate_scram_upsertion(upsertion) {
                Ok(mechanism) => {
                    upsertions.insert(name, (mechanism, &upsertion.credential));
                }
                Err(error) => {
                    errors.insert(name, error);
                }
            }
        }
        let mut records: Vec<MetadataRecord> = deletions
            .iter()
            .map(|(name, mechanism)| MetadataRecord::RemoveUserScramCredential { name: (*name).to_owned(), mechanism: *mechanism })
            .collect();
        records.extend(upsertions.iter().map(|(name, (mechanism, credential))| MetadataRecord::UserScramCredential {
            name: (*name).to_owned(),
            mechanism: *mechanism,
            credential: (*credential).clone(),
        }));
        if encode_records(&records).len() > self.config.max_entry_bytes {
            let too_big = ControllerError::PolicyViolation("the credentials exceed one metadata-log entry".into());
            for name in deletions.keys().chain(upsertions.keys()) {
                errors.insert(name, too_big.clone());
            }
            records.clear();
        }
        let response = answer(&errors);
        self.propose(records, Some((id, response)));
        self.check_invariants();
    }

    /// Kafka's `AclControlManager.createAcls`: each binding is validated alone, and the new ones
    /// commit together in one entry. A binding already stored, or named twice, is answered OK
    /// and written once: Kafka's CreateAcls of an existing ACL succeeds too.
    pub fn handle_create_acls(&mut self, _now_ms: i64, id: RequestId, acls: Vec<AclBinding>) {
        let answer = |error: Option<ControllerError>| AclCreateResult { error };
        let refusal = Response::CreateAcls(acls.iter().map(|_| answer(Some(ControllerError::NotController))).collect());
        if !self.serving(id, refusal) {
            return;
        }
        let pending = self.pending();
        let mut new: BTreeSet<&AclBinding> = BTreeSet::new();
        let mut records = Vec::new();
        let mut results: Vec<AclCreateResult> = Vec::with_capacity(acls.len());
        for acl in &acls {
            if let Err(message) = acl.validate() {
                results.push(answer(Some(ControllerError::Invalid(message))));
                continue;
            }
            let stored = pending.acls.matching(&AclBindingFilter::exact(acl)).next().is_some();
            if !stored && new.insert(acl) {
                records.push(MetadataRecord::AccessControlEntry { acl: acl.clone() });
            }
            results.push(answer(None));
        }
        if encode_records(&records).len() > self.config.max_entry_bytes {
            let too_big = ControllerError::PolicyViolation("the ACLs exceed one metadata-log entry".into());
            for result in results.iter_mut().filter(|r| r.error.is_none()) {
                result.error = Some(too_big.clone());
            }
            records.clear();
        }
        self.propose(records, Some((id, Response::CreateAcls(results))));
        self.check_invariants();
    }

    /// Kafka's `AclControlManager.deleteAcls`: every filter is matched against the ACLs as
    /// they were before the request, so a binding two filters match is listed under both and
    /// removed once; all removals commit together in one entry.
    pub fn handle_delete_acls(&mut self, _now_ms: i64, id: RequestId, filters: Vec<AclBindingFilter>) {
        let failed = |error: &ControllerError| AclDeleteResult { error: Some(error.clone()), deleted: Vec::new() };
        let refusal = Response::DeleteAcls(filters.iter().map(|_| failed(&ControllerError::NotController)).collect());
        if !self.serving(id, refusal) {
            return;
        }
        let pending = self.pending();
        let mut doomed: BTreeSet<&AclBinding> = BTreeSet::new();
        let mut results: Vec<AclDeleteResult> = Vec::with_capacity(filters.len());
        for filter in &filters {
            let deleted: Vec<&AclBinding> = pending.acls.matching(filter).collect();
            doomed.extend(deleted.iter().copied());
            results.push(AclDeleteResult { error: None, deleted: deleted.into_iter().cloned().collect() });
        }
        let mut records: Vec<MetadataRecord> =
            doomed.into_iter().map(|acl| MetadataRecord::RemoveAccessControlEntry { acl: acl.clone() }).collect();
        if encode_records(&records).len() > self.config.max_entry_bytes {
            let too_big = ControllerError::PolicyViolation("the ACLs to delete exceed one metadata-log entry".into());
            results = filters.iter().map(|_| failed(&too_big)).collect();
            records.clear();
        }
        self.propose(records, Some((id, Response::DeleteAcls(results))));
        self.check_invariants();
    }

    /// Kafka's `ConfigurationControlManager`: each resource's changes are validated alone and
    /// all the valid ones commit in one entry, as ConfigRecords. A topic must exist; broker
    /// resources take only the settings that are topic defaults (the others are read once at
    /// start, so a dynamic value would be stored and never used: INVALID_CONFIG, as Kafka
    /// answers for a setting it cannot update dynamically).
    pub fn handle_alter_configs(&mut self, _now_ms: i64, id: RequestId, request: AlterConfigsRequest) {
        let refusal = Response::AlterConfigs(request.resources.iter().map(|_| Some(ControllerError::NotController)).collect());
        if !self.serving(id, refusal) {
            return;
        }
        let (records, results) =
            self.decide_each(&request.resources, request.validate_only, "the configs", config_changes);
        self.propose(records, Some((id, Response::AlterConfigs(results))));
        self.check_invariants();
    }

    /// Kafka's `ClientQuotaControlManager.alterClientQuotas`: each entity's keys checked, then
    /// all the changes commit in one entry.
    pub fn handle_alter_client_quotas(&mut self, _now_ms: i64, id: RequestId, request: AlterClientQuotasRequest) {
        let refusal = Response::AlterClientQuotas(request.entries.iter().map(|_| Some(ControllerError::NotController)).collect());
        if !self.serving(id, refusal) {
            return;
        }
        let (records, results) = self.decide_each(&request.entries, request.validate_only, "the quotas", quota_changes);
        self.propose(records, Some((id, Response::AlterClientQuotas(results))));
        self.check_invariants();
    }

    /// Validates a leader's ISR change in the order Kafka's `ReplicationControlManager` does
    /// (KIP-497, KIP-841) and commits it, bumping the partition epoch.
    pub fn handle_alter_partition(&mut self, _now_ms: i64, id: RequestId, req: AlterPartitionRequest) {
        let reply = |error, state| Response::AlterPartition(AlterPartitionResponse { error, state });
        if !self.serving(id, reply(Some(ControllerError::NotController), None)) {
            return;
        }
        let active = self.active.as_ref().expect("serving");
        let pending = &active.pending;
        // KIP-858: a replica its broker reports offline may not rejoin the ISR.
        let offline = req.new_isr.iter().any(|b| active.offline.contains(pending, *b, &req.topic_id, req.partition));
        let checked = validate_alter_partition(pending, &req).and_then(|current| {
            if offline && req.new_isr != current.isr { Err(ControllerError::IneligibleReplica) } else { Ok(current) }
        });
        match checked {
            Err(error) => self.actions.push_back(Action::Reply(id, reply(Some(error), None))),
            Ok(current) if current.isr == req.new_isr => {
                let state = leader_and_isr(current);
                self.actions.push_back(Action::Reply(id, reply(None, Some(state))));
            }
            Ok(_) => {
                let record = MetadataRecord::PartitionChange {
                    topic_id: req.topic_id,
                    partition: req.partition,
                    leader: None,
                    isr: Some(req.new_isr.clone()),
                };
                let mut after = pending.clone();
                after.apply(&record).expect("validated change applies");
                let state = leader_and_isr(after.partition(&req.topic_id, req.partition).expect("exists"));
                let mut records = vec![record];
                // The ISR now holding every target replica completes a reassignment (KIP-455).
                records.extend(reassignment_completion(&after, &req.topic_id, req.partition));
                self.propose(records, Some((id, reply(None, Some(state)))));
            }
        }
        self.check_invariants();
    }

    /// KIP-455's AlterPartitionReassignments: each partition alone, against the image with the
    /// earlier ones applied; all commit in one entry. A target already in sync completes at once.
    pub fn handle_alter_partition_reassignments(&mut self, _now_ms: i64, id: RequestId, partitions: Vec<ReassignPartition>) {
        let refusal = Response::AlterPartitionReassignments(partitions.iter().map(|_| Some(ControllerError::NotController)).collect());
        if !self.serving(id, refusal) {
            return;
        }
        let (records, results) = self.decide_each(&partitions, false, "the reassignments", reassign_records);
        self.propose(records, Some((id, Response::AlterPartitionReassignments(results))));
        self.check_invariants();
    }

    /// Kafka's `ReplicationControlManager.electLeaders`: each partition decided on the image
    /// as it is; all the changes commit in one entry.
    pub fn handle_elect_leaders(&mut self, _now_ms: i64, id: RequestId, request: ElectLeadersRequest) {
        let refusal = Response::ElectLeaders(
            request.partitions.iter().flatten().map(|(t, p)| (t.clone(), *p, Some(ControllerError::NotController))).collect(),
        );
        if !self.serving(id, refusal) {
            return;
        }
        let pending = self.pending();
        let every: Vec<(String, i32)>;
        let (named, all) = match &request.partitions {
            Some(named) => (named, false),
            None => {
                every = pending
                    .topics
                    .values()
                    .flat_map(|t| (0..t.partitions.len() as i32).map(move |p| (t.name.clone(), p)))
                    .collect();
                (&every, true)
            }
        };
        let mut records = Vec::new();
        let mut results = Vec::new();
        for (topic, partition) in named {
            let offline = &self.active.as_ref().expect("serving").offline;
            let outcome = elect_one(pending, topic, *partition, request.unclean, offline);
            match outcome {
                Ok(record) => {
                    records.push(record);
                    results.push((topic.clone(), *partition, None));
                }
                // Asked for every partition, Kafka lists only those it tried to elect.
                Err(ControllerError::ElectionNotNeeded) if all => {}
                Err(e) => results.push((topic.clone(), *partition, Some(e))),
            }
        }
        self.propose(records, Some((id, Response::ElectLeaders(results))));
        self.check_invariants();
    }

    // ---- helpers ----

    /// Decides each item of a request alone, against the pending image with the records of the
    /// items before it applied: -> the records to commit together (none with `validate_only`),
    /// and each item's outcome. Records beyond one metadata-log entry are all dropped and every
    /// accepted item refused POLICY_VIOLATION (`what` names them).
    fn decide_each<T>(
        &self,
        items: &[T],
        validate_only: bool,
        what: &str,
        mut decide: impl FnMut(&MetadataImage, &T) -> Result<Vec<MetadataRecord>, ControllerError>,
    ) -> (Vec<MetadataRecord>, Vec<Option<ControllerError>>) {
        let mut scratch = self.pending().clone();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            match decide(&scratch, item) {
                Ok(new) => {
                    for record in &new {
                        scratch.apply(record).expect("records built against this image apply");
                    }
                    records.extend(new);
                    results.push(None);
                }
                Err(e) => results.push(Some(e)),
            }
        }
        if validate_only {
            records.clear();
        }
        if encode_records(&records).len() > self.config.max_entry_bytes {
            let too_big = ControllerError::PolicyViolation(format!("{what} exceed one metadata-log entry"));
            results = results.into_iter().map(|r| r.or(Some(too_big.clone()))).collect();
            records.clear();
        }
        (records, results)
    }

    /// Whether this controller serves requests now; if not, replies `refusal`.
    fn serving(&mut self, id: RequestId, refusal: Response) -> bool {
        match &self.active {
            Some(active) if active.ready && active.inflight.len() < self.config.max_inflight_proposals => true,
            Some(active) if active.ready => {
                let busy = match refusal {
                    Response::AlterPartition(_) => {
                        Response::AlterPartition(AlterPartitionResponse { error: Some(ControllerError::Busy), state: None })
                    }
                    other => other,
                };
                self.actions.push_back(Action::Reply(id, busy));
                false
            }
            _ => {
                self.actions.push_back(Action::Reply(id, refusal));
                false
            }
        }
    }

    /// Applies `records` to the pending image and proposes them as one entry; `reply` leaves
    /// when that entry commits (at once if there is nothing to write).
    fn propose(&mut self, records: Vec<MetadataRecord>, reply: Option<(RequestId, Response)>) {
        let active = self.active.as_mut().expect("only the active controller proposes");
        if records.is_empty() {
            // Decided on the pending view, which may hold what is not committed yet (a
            // CreateTopics answered TOPIC_ALREADY_EXISTS for a topic whose creation is still
            // in flight): the answer waits for everything proposed so far, and a lost
            // leadership turns it into NOT_CONTROLLER, as Kafka's QuorumController defers
            // a write that produced no records to the log's current end.
            match (reply, active.inflight.back_mut()) {
                (Some(reply), Some(last)) => last.deferred.push(reply),
                (Some((id, response)), None) => self.actions.push_back(Action::Reply(id, response)),
                (None, _) => {}
            }
            return;
        }
        for record in &records {
            if let Err(error) = active.pending.apply(record) {
                panic!("controller built a record its own image refuses: {error}: {record:?}");
            }
        }
        self.actions.push_back(Action::Propose(encode_records(&records)));
        active.inflight.push_back(Slot { own: reply, deferred: Vec::new() });
    }

    fn pending(&self) -> &MetadataImage {
        &self.active.as_ref().expect("only the active controller decides").pending
    }

    fn resign(&mut self) {
        let active = self.active.take().expect("resign while active");
        tracing::info!(term = %active.term, waiting = active.inflight.len(), "controller resigns");
        for slot in active.inflight {
            if let Some((id, response)) = slot.own {
                self.actions.push_back(Action::Reply(id, not_controller(response, true)));
            }
            for (id, response) in slot.deferred {
                self.actions.push_back(Action::Reply(id, not_controller(response, false)));
            }
        }
    }

    fn create_topic(
        &mut self,
        image: &MetadataImage,
        topic: &CreatableTopic,
        partitions_total: &mut usize,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        validate_topic_name(&topic.name).map_err(|e| ControllerError::InvalidTopic(e.message))?;
        if image.topic_by_name(&topic.name).is_some() {
            return Err(ControllerError::TopicAlreadyExists);
        }
        if !topic.assignments.is_empty() {
            return self.create_topic_assigned(image, topic, partitions_total);
        }
        let num_partitions = if topic.num_partitions == -1 { self.config.num_partitions } else { topic.num_partitions };
        if num_partitions < 1 {
            return Err(ControllerError::InvalidPartitions(format!("number of partitions {num_partitions} is below 1")));
        }
        *partitions_total += num_partitions as usize;
        if *partitions_total > self.config.max_partitions_per_request {
            return Err(ControllerError::PolicyViolation("Excessively large number of partitions per request.".into()));
        }
        let rf = if topic.replication_factor == -1 { self.config.default_replication_factor } else { topic.replication_factor };
        let brokers = image.placement_brokers();
        if rf < 1 {
            return Err(ControllerError::InvalidReplicationFactor(format!("replication factor {rf} is below 1")));
        }
        if rf as usize > brokers.len() {
            return Err(ControllerError::InvalidReplicationFactor(format!(
                "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be \
                 reached because only {} broker(s) are registered.",
                brokers.len()
            )));
        }
        TopicConfig::new(&crate::topic::BrokerLayers::default(), topic.configs.clone())
            .map_err(|e| ControllerError::InvalidConfig(e.message))?;

        // Rotate where each topic starts so successive topics do not all lead on one broker.
        let start = image.partition_count() % brokers.len();
        let shift = image.topics.len() % brokers.len();
        let placed = assign_replicas(&brokers, num_partitions, rf, start, shift)?;
        let topic_id = self.new_topic_id(image);
        let mut records = vec![MetadataRecord::Topic { name: topic.name.clone(), topic_id, configs: topic.configs.clone() }];
        for (p, replicas) in placed.into_iter().enumerate() {
            records.push(MetadataRecord::Partition {
                topic_id,
                partition: p as i32,
                leader: replicas[0],
                isr: replicas.clone(),
                replicas,
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            });
        }
        Ok(records)
    }

    /// CreateTopics with a manual replica assignment (Kafka's `createTopic` with
    /// `assignments`): partitions 0.. each named once, every list checked alone.
    fn create_topic_assigned(
        &mut self,
        image: &MetadataImage,
        topic: &CreatableTopic,
        partitions_total: &mut usize,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if topic.num_partitions != -1 || topic.replication_factor != -1 {
            return Err(ControllerError::InvalidRequest(
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.",
            ));
        }
        let mut assignments = topic.assignments.clone();
        assignments.sort_by_key(|(p, _)| *p);
        for (expected, (p, _)) in assignments.iter().enumerate() {
            if *p != expected as i32 {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "partitions should be a consecutive 0-based integer sequence; partition {expected} is missing or {p} named twice"
                )));
            }
        }
        *partitions_total += assignments.len();
        if *partitions_total > self.config.max_partitions_per_request {
            return Err(ControllerError::PolicyViolation("Excessively large number of partitions per request.".into()));
        }
        let rf = assignments[0].1.len();
        let mut placed = Vec::with_capacity(assignments.len());
        for (p, replicas) in &assignments {
            placed.push(manual_partition(image, *p, replicas, rf)?);
        }
        TopicConfig::new(&crate::topic::BrokerLayers::default(), topic.configs.clone())
            .map_err(|e| ControllerError::InvalidConfig(e.message))?;
        let topic_id = self.new_topic_id(image);
        let mut records = vec![MetadataRecord::Topic { name: topic.name.clone(), topic_id, configs: topic.configs.clone() }];
        records.extend(placed.into_iter().enumerate().map(|(p, (replicas, isr))| new_partition(topic_id, p as i32, replicas, isr)));
        Ok(records)
    }

    /// Kafka's `ReplicationControlManager.createPartitions`: each topic is grown alone, against
    /// the image with the earlier topics of the request applied; all commit in one entry.
    pub fn handle_create_partitions(&mut self, _now_ms: i64, id: RequestId, req: CreatePartitionsRequest) {
        let refusal = Response::CreatePartitions(req.topics.iter().map(|_| Some(ControllerError::NotController)).collect());
        if !self.serving(id, refusal) {
            return;
        }
        let mut counts = BTreeMap::<&str, usize>::new();
        for topic in &req.topics {
            *counts.entry(topic.name.as_str()).or_default() += 1;
        }
        let mut partitions_total = 0usize;
        let (records, results) = self.decide_each(&req.topics, req.validate_only, "the partitions' metadata", |image, topic| {
            if counts[topic.name.as_str()] > 1 {
                return Err(ControllerError::InvalidRequest("Duplicate topic name."));
            }
            self.grow_topic(image, topic, &mut partitions_total)
        });
        self.propose(records, Some((id, Response::CreatePartitions(results))));
        self.check_invariants();
    }

    fn grow_topic(
        &self,
        image: &MetadataImage,
        topic: &CreatePartitionsTopic,
        partitions_total: &mut usize,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let existing = image.topic_by_name(&topic.name).ok_or(ControllerError::UnknownTopicOrPartition)?;
        if topic.name == crate::group::OFFSETS_TOPIC || topic.name == crate::txn::TXN_TOPIC {
            // Group and transaction placement hash over the partition count.
            return Err(ControllerError::InvalidRequest("the partitions of an internal topic cannot be added to"));
        }
        let current = existing.partitions.len() as i32;
        if topic.count < current {
            return Err(ControllerError::InvalidPartitions(format!(
                "The topic {} currently has {current} partition(s); {} would not be an increase.",
                topic.name, topic.count
            )));
        }
        if topic.count == current {
            return Err(ControllerError::InvalidPartitions(format!("Topic already has {current} partition(s).")));
        }
        let added = (topic.count - current) as usize;
        *partitions_total += added;
        if *partitions_total > self.config.max_partitions_per_request {
            return Err(ControllerError::PolicyViolation("Excessively large number of partitions per request.".into()));
        }
        let rf = existing.partitions.first().map_or(1, |p| p.replicas.len());
        let placed: Vec<(Vec<NodeId>, Vec<NodeId>)> = match &topic.assignments {
            Some(assignments) => {
                if assignments.len() != added {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                        assignments.len()
                    )));
                }
                assignments
                    .iter()
                    .enumerate()
                    .map(|(i, replicas)| manual_partition(image, current + i as i32, replicas, rf))
                    .collect::<Result<_, _>>()?
            }
            None => {
                let brokers = image.placement_brokers();
                if rf > brokers.len() {
                    return Err(ControllerError::InvalidReplicationFactor(format!(
                        "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be \
                         reached because only {} broker(s) are registered.",
                        brokers.len()
                    )));
                }
                let start = (image.partition_count() + current as usize) % brokers.len();
                assign_replicas(&brokers, added as i32, rf as i16, start, image.topics.len() % brokers.len())?
                    .into_iter()
                    .map(|replicas| (replicas.clone(), replicas))
                    .collect()
            }
        };
        Ok(placed.into_iter().enumerate().map(|(i, (replicas, isr))| new_partition(existing.id, current + i as i32, replicas, isr)).collect())
    }

    fn new_topic_id(&mut self, image: &MetadataImage) -> TopicId {
        loop {
            self.topic_id_counter += 1;
            let mut id = [0u8; 16];
            for (half, salt) in [(0, 0x51u64), (8, 0xa7)] {
                let mut z = self.seed ^ self.topic_id_counter.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt;
                // splitmix64 finaliser.
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                id[half..half + 8].copy_from_slice(&(z ^ (z >> 31)).to_be_bytes());
            }
            if id != [0; 16] && !image.topics.contains_key(&id) {
                return id;
            }
        }
    }

    fn check_invariants(&self) {
        if !crate::INVARIANTS {
            return;
        }
        self.image.check_invariants();
        if let Some(active) = &self.active {
            active.pending.check_invariants();
            assert!(active.inflight.len() <= self.config.max_inflight_proposals);
            if active.ready {
                // The pending view only ever runs ahead of the committed one.
                for (id, topic) in &active.pending.topics {
                    for (p, state) in topic.partitions.iter().enumerate() {
                        if let Some(committed) = self.image.partition(id, p as i32) {
                            assert!(state.leader_epoch >= committed.leader_epoch, "leader epoch went back");
                            assert!(state.partition_epoch >= committed.partition_epoch, "partition epoch went back");
                        }
                    }
                }
            }
        }
    }
}

/// The records that start, change or cancel one partition's reassignment (Kafka's
/// `ReplicationControlManager.alterPartitionReassignment`), or why not.
fn reassign_records(image: &MetadataImage, request: &ReassignPartition) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = image.topic_by_name(&request.topic).ok_or(ControllerError::UnknownTopicOrPartition)?;
    let state = usize::try_from(request.partition)
        .ok()
        .and_then(|p| topic.partitions.get(p))
        .ok_or(ControllerError::UnknownTopicOrPartition)?;
    let current = image.reassignment(&topic.id, request.partition);
    let record = |replicas: Vec<NodeId>, isr: Vec<NodeId>, reassignment: Option<Reassignment>| {
        // The leader stays unless it leaves the replicas; an offline partition stays offline.
        let leader = if state.leader == NodeId::NONE || isr.contains(&state.leader) { state.leader } else { isr[0] };
        MetadataRecord::Reassign { topic_id: topic.id, partition: request.partition, replicas, isr, leader, reassignment }
    };
    let Some(target) = &request.target else {
        let r = current.ok_or(ControllerError::NoReassignmentInProgress)?;
        let isr: Vec<NodeId> = state.isr.iter().copied().filter(|b| r.original.contains(b)).collect();
        if isr.is_empty() {
            return Err(ControllerError::InvalidReplicaAssignment(
                "no original replica is in sync, so the reassignment cannot be cancelled".into(),
            ));
        }
        return Ok(vec![record(r.original.clone(), isr, None)]);
    };
    if target.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment("The replica list is empty.".into()));
    }
    if target.iter().collect::<BTreeSet<_>>().len() != target.len() {
        return Err(ControllerError::InvalidReplicaAssignment("The manual partition assignment includes duplicate replicas.".into()));
    }
    if let Some(unknown) = target.iter().find(|b| !image.brokers.contains_key(b)) {
        return Err(ControllerError::InvalidReplicaAssignment(format!(
            "The manual partition assignment includes broker {}, but no such broker is registered.",
            unknown.0
        )));
    }
    let original = current.map_or_else(|| state.replicas.clone(), |r| r.original.clone());
    if !request.allow_replication_factor_change && target.len() != original.len() {
        return Err(ControllerError::InvalidReplicationFactor(
            "The replication factor is changed by this reassignment, which is not allowed (allowReplicationFactorChange=false).".into(),
        ));
    }
    let reassignment = Reassignment { original, target: target.clone() };
    let replicas = reassignment.replicas();
    let isr: Vec<NodeId> = state.isr.iter().copied().filter(|b| replicas.contains(b)).collect();
    if isr.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment("no in-sync replica would remain".into()));
    }
    let moving = record(replicas, isr, Some(reassignment));
    let mut after = image.clone();
    after.apply(&moving).map_err(|e| ControllerError::InvalidReplicaAssignment(e.to_string()))?;
    let mut records = vec![moving];
    records.extend(reassignment_completion(&after, &topic.id, request.partition));
    Ok(records)
}

/// Once every target replica of a reassignment is in the ISR: the record that drops the
/// others, keeping the leader if it stays (else the first target replica in sync).
fn reassignment_completion(image: &MetadataImage, topic_id: &TopicId, partition: i32) -> Option<MetadataRecord> {
    let r = image.reassignment(topic_id, partition)?;
    let state = image.partition(topic_id, partition)?;
    if !r.target.iter().all(|b| state.isr.contains(b)) {
        return None;
    }
    let isr: Vec<NodeId> = r.target.iter().copied().filter(|b| state.isr.contains(b)).collect();
    let leader = if state.leader == NodeId::NONE || r.target.contains(&state.leader) { state.leader } else { isr[0] };
    Some(MetadataRecord::Reassign { topic_id: *topic_id, partition, replicas: r.target.clone(), isr, leader, reassignment: None })
}

/// Kafka's `checkAndTriggerAutoLeaderRebalance`: for every broker whose share of partitions
/// it prefers but does not lead is above `percentage`, elects it for those where it is alive
/// and in sync.
fn preferred_rebalance(image: &MetadataImage, percentage: u32, offline: &OfflineReplicas) -> Vec<MetadataRecord> {
    let mut preferred: BTreeMap<NodeId, (usize, Vec<(String, i32)>)> = BTreeMap::new();
    for topic in image.topics.values() {
        for (p, state) in topic.partitions.iter().enumerate() {
            let entry = preferred.entry(state.replicas[0]).or_default();
            entry.0 += 1;
            if state.leader != state.replicas[0] {
                entry.1.push((topic.name.clone(), p as i32));
            }
        }
    }
    preferred
        .into_values()
        .filter(|(total, off)| off.len() * 100 > *total * percentage as usize)
        .flat_map(|(_, off)| off)
        .filter_map(|(topic, p)| elect_one(image, &topic, p, false, offline).ok())
        .collect()
}

/// One partition's election for ElectLeaders, as the record that makes it.
fn elect_one(image: &MetadataImage, topic: &str, partition: i32, unclean: bool, offline: &OfflineReplicas) -> Result<MetadataRecord, ControllerError> {
    let t = image.topic_by_name(topic).ok_or(ControllerError::UnknownTopicOrPartition)?;
    let state = usize::try_from(partition).ok().and_then(|p| t.partitions.get(p)).ok_or(ControllerError::UnknownTopicOrPartition)?;
    let eligible = |b: NodeId| offline.eligible(image, b, &t.id, partition);
    if unclean {
        if state.leader != NodeId::NONE {
            return Err(ControllerError::ElectionNotNeeded);
        }
        let (leader, isr) = elect(state, state.isr.clone(), eligible, true);
        if leader == NodeId::NONE {
            return Err(ControllerError::EligibleLeadersNotAvailable);
        }
        return change_record(t.id, partition as usize, state, leader, isr).ok_or(ControllerError::ElectionNotNeeded);
    }
    let preferred = state.replicas[0];
    if state.leader == preferred {
        return Err(ControllerError::ElectionNotNeeded);
    }
    if !state.isr.contains(&preferred) || !eligible(preferred) {
        return Err(ControllerError::PreferredLeaderNotAvailable);
    }
    Ok(MetadataRecord::PartitionChange { topic_id: t.id, partition, leader: Some(preferred), isr: None })
}

/// A new partition's record: led by the first in-sync replica, at epoch 0.
fn new_partition(topic_id: TopicId, partition: i32, replicas: Vec<NodeId>, isr: Vec<NodeId>) -> MetadataRecord {
    MetadataRecord::Partition {
        topic_id,
        partition,
        leader: isr[0],
        isr,
        replicas,
        leader_epoch: LeaderEpoch(0),
        partition_epoch: PartitionEpoch(0),
    }
}

/// Kafka's `validateManualPartitionAssignment`: `replicas` names `rf` distinct registered
/// brokers, at least one of them unfenced; -> the replicas and the ISR (the unfenced ones).
fn manual_partition(image: &MetadataImage, partition: i32, replicas: &[NodeId], rf: usize) -> Result<(Vec<NodeId>, Vec<NodeId>), ControllerError> {
    let refuse = |why: String| Err(ControllerError::InvalidReplicaAssignment(why));
    if replicas.is_empty() {
        return refuse(format!("The manual partition assignment of partition {partition} includes an empty replica list."));
    }
    if replicas.len() != rf {
        return refuse(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with \
             previous partitions, which have {rf} replica(s).",
            replicas.len()
        ));
    }
    if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
        return refuse(format!("The manual partition assignment of partition {partition} includes duplicate replicas."));
    }
    if let Some(unknown) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
        return refuse(format!("The manual partition assignment includes broker {}, but no such broker is registered.", unknown.0));
    }
    let isr: Vec<NodeId> = replicas.iter().copied().filter(|r| image.is_alive(*r)).collect();
    if isr.is_empty() {
        return refuse(format!("All brokers specified in the manual partition assignment for partition {partition} are fenced or in controlled shutdown."));
    }
    Ok((replicas.to_vec(), isr))
}

/// The ConfigRecords that take `alteration.resource` from its configs in `image` to the altered
/// ones, or why the alteration is refused.
/// One entity's quota changes as ClientQuotaRecords, or why Kafka would refuse them.
fn quota_changes(_image: &MetadataImage, alteration: &QuotaAlteration) -> Result<Vec<MetadataRecord>, ControllerError> {
    let mut keys: Vec<&str> = alteration.ops.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|p| p[0] == p[1]) {
        return Err(ControllerError::Invalid(format!("quota {} altered twice in one entry", pair[0])));
    }
    let mut records = Vec::with_capacity(alteration.ops.len());
    for (key, value) in &alteration.ops {
        if let Some(value) = value {
            crate::quota::validate_value(&alteration.entity, key, value.get()).map_err(ControllerError::Invalid)?;
        } else {
            crate::quota::validate_value(&alteration.entity, key, 1.0).map_err(ControllerError::Invalid)?;
        }
        records.push(MetadataRecord::ClientQuota { entity: alteration.entity.clone(), key: key.clone(), value: *value });
    }
    Ok(records)
}

fn config_changes(image: &MetadataImage, alteration: &ConfigAlteration) -> Result<Vec<MetadataRecord>, ControllerError> {
    let current = match &alteration.resource {
        ConfigResource::Topic(name) => &image.topic_by_name(name).ok_or(ControllerError::UnknownTopicOrPartition)?.configs,
        ConfigResource::Broker(broker) => image.broker_configs(*broker),
    };
    let topic = matches!(alteration.resource, ConfigResource::Topic(_));
    let mut next = if alteration.replace { BTreeMap::new() } else { current.clone() };
    for (name, op) in &alteration.changes {
        if topic && !crate::topic::is_topic_config(name) {
            return Err(ControllerError::InvalidConfig(format!("Unknown topic config name: {name}")));
        }
        if !topic && !crate::topic::is_topic_default(name) && !crate::replication_quota::is_rate(name) {
            return Err(ControllerError::InvalidConfig(format!("Cannot update these configs dynamically: {name}")));
        }
        let list = |next: &BTreeMap<String, String>| -> Result<Vec<String>, ControllerError> {
            if !crate::topic::is_list(name) {
                return Err(ControllerError::InvalidConfig(format!("Config value append is not allowed for config key: {name}")));
            }
            let value = next.get(name).cloned().unwrap_or_else(|| if name == "cleanup.policy" { "delete".into() } else { String::new() });
            Ok(value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned).collect())
        };
        match op {
            ConfigOp::Set(value) => {
                next.insert(name.clone(), value.clone());
            }
            ConfigOp::Delete => {
                next.remove(name);
            }
            ConfigOp::Append(value) => {
                let mut items = list(&next)?;
                for item in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_owned());
                    }
                }
                next.insert(name.clone(), items.join(","));
            }
            ConfigOp::Subtract(value) => {
                let remove: Vec<&str> = value.split(',').map(str::trim).collect();
                let items: Vec<String> = list(&next)?.into_iter().filter(|i| !remove.contains(&i.as_str())).collect();
                next.insert(name.clone(), items.join(","));
            }
        }
    }
    if topic {
        TopicConfig::new(&crate::topic::BrokerLayers::default(), next.clone()).map_err(|e| ControllerError::InvalidConfig(e.message))?;
    } else {
        for (name, value) in &next {
            if crate::replication_quota::is_rate(name) {
                crate::replication_quota::check_rate(name, value).map_err(ControllerError::InvalidConfig)?;
                continue;
            }
            crate::topic::check_topic_default(name, value).map_err(|e| ControllerError::InvalidConfig(e.message))?;
        }
    }
    let names: BTreeSet<&String> = current.keys().chain(next.keys()).collect();
    Ok(names
        .into_iter()
        .filter(|name| current.get(*name) != next.get(*name))
        .map(|name| MetadataRecord::Config { resource: alteration.resource.clone(), name: name.clone(), value: next.get(name).cloned() })
        .collect())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The topic's own setting, else the cluster's dynamic default, else the controller's static one.
fn unclean_enabled(image: &MetadataImage, topic: &TopicImage, default: bool) -> bool {
    topic
        .configs
        .get(UNCLEAN_LEADER_ELECTION_ENABLE)
        .or_else(|| image.broker_configs(None).get(UNCLEAN_LEADER_ELECTION_ENABLE))
        .and_then(|v| parse_bool(v))
        .unwrap_or(default)
}

fn leader_and_isr(p: &PartitionState) -> LeaderAndIsr {
    LeaderAndIsr { leader: p.leader, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, isr: p.isr.clone() }
}

/// `response` turned into NOT_CONTROLLER; with `keep_errors`, per-topic errors found by
/// validation stay (those topics were never proposed).
fn not_controller(response: Response, keep_errors: bool) -> Response {
    let e = Some(ControllerError::NotController);
    match response {
        Response::RegisterBroker(_) => {
            Response::RegisterBroker(BrokerRegistrationResponse { error: e, broker_epoch: BrokerEpoch(-1) })
        }
        Response::Heartbeat(_) => Response::Heartbeat(BrokerHeartbeatResponse {
            error: e,
            is_caught_up: false,
            is_fenced: true,
            should_shutdown: false,
        }),
        Response::CreateTopics(results) => Response::CreateTopics(
            results.into_iter().map(|r| CreateTopicResult { error: r.error.filter(|_| keep_errors).or(e.clone()), ..r }).collect(),
        ),
        Response::DeleteTopics(results) => Response::DeleteTopics(
            results.into_iter().map(|r| DeleteTopicResult { error: r.error.filter(|_| keep_errors).or(e.clone()), ..r }).collect(),
        ),
        Response::AlterPartition(_) => Response::AlterPartition(AlterPartitionResponse { error: e, state: None }),
        Response::AllocateProducerIds(_) => {
            Response::AllocateProducerIds(AllocateProducerIdsResponse { error: e, first_producer_id: -1, count: 0 })
        }
        Response::AlterUserScramCredentials(results) => Response::AlterUserScramCredentials(
            results
                .into_iter()
                .map(|r| AlterUserScramCredentialResult { error: r.error.filter(|_| keep_errors).or(e.clone()), ..r })
                .collect(),
        ),
        Response::CreateAcls(results) => Response::CreateAcls(
            results.into_iter().map(|r| AclCreateResult { error: r.error.filter(|_| keep_errors).or(e.clone()) }).collect(),
        ),
        // The removals were lost with the leadership: nothing a filter listed was deleted.
        Response::DeleteAcls(results) => {
            Response::DeleteAcls(results.into_iter().map(|_| AclDeleteResult { error: e.clone(), deleted: Vec::new() }).collect())
        }
        Response::AlterConfigs(results) => {
            Response::AlterConfigs(results.into_iter().map(|r| r.filter(|_| keep_errors).or(e.clone())).collect())
        }
        Response::CreatePartitions(results) => {
            Response::CreatePartitions(results.into_iter().map(|r| r.filter(|_| keep_errors).or(e.clone())).collect())
        }
        Response::AlterPartitionReassignments(results) => Response::AlterPartitionReassignments(
            results.into_iter().map(|r| r.filter(|_| keep_errors).or(e.clone())).collect(),
        ),
        Response::ElectLeaders(results) => {
            Response::ElectLeaders(results.into_iter().map(|(t, p, r)| (t, p, r.filter(|_| keep_errors).or(e.clone()))).collect())
        }
        Response::AlterClientQuotas(results) => {
            Response::AlterClientQuotas(results.into_iter().map(|r| r.filter(|_| keep_errors).or(e.clone())).collect())
        }
    }
}

/// Kafka's `validateScramUsernameAndMechanism`: the name first, then the mechanism.
fn validate_scram_user(name: &str, mechanism: i8) -> Result<Mechanism, ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::UnacceptableCredential("Username must not be empty".into()));
    }
    Mechanism::from_scram_type(mechanism).ok_or_else(|| ControllerError::UnsupportedSaslMechanism("Unknown SCRAM mechanism".into()))
}

fn validate_scram_deletion(image: &MetadataImage, deletion: &ScramCredentialDeletion) -> Result<Mechanism, ControllerError> {
    let mechanism = validate_scram_user(&deletion.name, deletion.mechanism)?;
    if image.scram_credential(mechanism, &deletion.name).is_none() {
        return Err(ControllerError::ResourceNotFound("Attempt to delete a user credential that does not exist".into()));
    }
    Ok(mechanism)
}

fn validate_scram_upsertion(upsertion: &ScramCredentialUpsertion) -> Result<Mechanism, ControllerError> {
    let mechanism = validate_scram_user(&upsertion.name, upsertion.mechanism)?;
    let iterations = upsertion.credential.iterations;
    if iterations < MIN_SCRAM_ITERATIONS {
        return Err(ControllerError::UnacceptableCredential("Too few iterations".into()));
    }
    if iterations > MAX_SCRAM_ITERATIONS {
        return Err(ControllerError::UnacceptableCredential("Too many iterations".into()));
    }
    Ok(mechanism)
}

/// Kafka's leader election (`PartitionChangeBuilder.electLeader`): keep the current leader if
/// it is alive and stays in the ISR, else the first alive ISR member in replica order; else,
/// with unclean election on, the first alive replica, which becomes the whole ISR (it may have
/// lost acknowledged data); else no leader, and the ISR keeps its last member so that replica
/// can lead again cleanly when it returns.
fn elect(
    state: &PartitionState,
    target_isr: Vec<NodeId>,
    alive: impl Fn(NodeId) -> bool,
    unclean: bool,
) -> (NodeId, Vec<NodeId>) {
    if state.leader != NodeId::NONE && target_isr.contains(&state.leader) && alive(state.leader) {
        return (state.leader, target_isr);
    }
    if let Some(leader) = state.replicas.iter().copied().find(|r| target_isr.contains(r) && alive(*r)) {
        return (leader, target_isr);
    }
    if unclean {
        if let Some(leader) = state.replicas.iter().copied().find(|r| alive(*r)) {
            return (leader, vec![leader]);
        }
    }
    (NodeId::NONE, target_isr)
}

fn change_record(topic_id: TopicId, partition: usize, state: &PartitionState, leader: NodeId, isr: Vec<NodeId>) -> Option<MetadataRecord> {
    if leader == state.leader && isr == state.isr {
        return None;
    }
    Some(MetadataRecord::PartitionChange {
        topic_id,
        partition: partition as i32,
        leader: (leader != state.leader).then_some(leader),
        isr: (isr != state.isr).then_some(isr),
    })
}

/// The partition changes when `broker` stops being eligible (fenced, re-registered, shut
/// down): it leaves every ISR (but stays as the last member, leader none) and its
/// leaderships move to alive ISR members (KRaft's `handleBrokerFenced`). Blind to offline
/// reports (it serves registration): a reported replica is in an ISR only as a leaderless
/// partition's last member, so only an unclean election could pick it, and its broker's next
/// heartbeat moves that leadership again.
fn leave_changes(image: &MetadataImage, broker: NodeId, unclean_default: bool) -> Vec<MetadataRecord> {
    leave_changes_except(image, broker, unclean_default, &OfflineReplicas::NONE)
}

/// [`leave_changes`] electing no replica reported offline.
fn leave_changes_except(image: &MetadataImage, broker: NodeId, unclean_default: bool, offline: &OfflineReplicas) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        let unclean = unclean_enabled(image, topic, unclean_default);
        for (p, state) in topic.partitions.iter().enumerate() {
            records.extend(leave_partition(image, topic.id, p, state, broker, unclean, offline));
        }
    }
    records
}

/// One partition's change when `broker`'s replica of it stops being eligible: out of the ISR
/// unless it is the last member, its leadership to another eligible ISR member (or, with
/// unclean election, to any eligible replica), else none.
fn leave_partition(
    image: &MetadataImage,
    topic_id: TopicId,
    p: usize,
    state: &PartitionState,
    broker: NodeId,
    unclean: bool,
    offline: &OfflineReplicas,
) -> Option<MetadataRecord> {
    if !state.isr.contains(&broker) && state.leader != broker {
        return None;
    }
    let alive = |b: NodeId| b != broker && offline.eligible(image, b, &topic_id, p as i32);
    let mut target: Vec<NodeId> = state.isr.iter().copied().filter(|r| *r != broker).collect();
    if target.is_empty() {
        target = state.isr.clone();
    }
    let (leader, isr) = elect(state, target, alive, unclean);
    change_record(topic_id, p, state, leader, isr)
}

/// The changes for the replicas `broker` reports offline, as if its broker had left those
/// partitions alone (KIP-858: the controller handles a failed directory's replicas as a
/// fenced broker's). Once made, nothing: repeating the report every heartbeat is cheap.
fn offline_changes(image: &MetadataImage, broker: NodeId, unclean_default: bool, offline: &OfflineReplicas) -> Vec<MetadataRecord> {
    let Some(registration) = image.brokers.get(&broker) else { return Vec::new() };
    let mut records = Vec::new();
    for (topic_id, partition) in offline.of(broker, registration.broker_epoch) {
        let Some(topic) = image.topics.get(topic_id) else { continue };
        let Some(state) = usize::try_from(*partition).ok().and_then(|p| topic.partitions.get(p)) else { continue };
        let unclean = unclean_enabled(image, topic, unclean_default);
        records.extend(leave_partition(image, topic.id, *partition as usize, state, broker, unclean, offline));
    }
    records
}

/// The elections `broker` becoming alive enables: partitions without a leader whose ISR holds
/// an alive member (or, with unclean election on, with any alive replica), none of them a
/// replica reported offline.
fn join_changes(image: &MetadataImage, broker: NodeId, unclean_default: bool, offline: &OfflineReplicas) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        let unclean = unclean_enabled(image, topic, unclean_default);
        for (p, state) in topic.partitions.iter().enumerate() {
            if state.leader != NodeId::NONE || !state.replicas.contains(&broker) {
                continue;
            }
            let (leader, isr) = elect(state, state.isr.clone(), |b| offline.eligible(image, b, &topic.id, p as i32), unclean);
            records.extend(change_record(topic.id, p, state, leader, isr));
        }
    }
    records
}

fn validate_alter_partition<'a>(
    image: &'a MetadataImage,
    req: &AlterPartitionRequest,
) -> Result<&'a PartitionState, ControllerError> {
    match image.brokers.get(&req.broker_id) {
        None => return Err(ControllerError::StaleBrokerEpoch),
        Some(b) if b.broker_epoch != req.broker_epoch => return Err(ControllerError::StaleBrokerEpoch),
        Some(_) => {}
    }
    if !image.topics.contains_key(&req.topic_id) {
        return Err(ControllerError::UnknownTopicId);
    }
    let current = image.partition(&req.topic_id, req.partition).ok_or(ControllerError::UnknownTopicOrPartition)?;
    // A newer epoch than ours means this controller is behind: let the leader find the new one.
    if req.leader_epoch > current.leader_epoch {
        return Err(ControllerError::NotController);
    }
    if req.leader_epoch < current.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch);
    }
    if req.broker_id != current.leader {
        return Err(ControllerError::InvalidRequest("the sender is not the partition leader"));
    }
    if req.partition_epoch > current.partition_epoch {
        return Err(ControllerError::NotController);
    }
    if req.partition_epoch < current.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion);
    }
    let distinct = req.new_isr.iter().collect::<BTreeSet<_>>().len() == req.new_isr.len();
    if req.new_isr.is_empty() || !distinct || !req.new_isr.iter().all(|r| current.replicas.contains(r)) {
        return Err(ControllerError::InvalidRequest("new ISR empty, repeated or not a subset of the replicas"));
    }
    if !req.new_isr.contains(&current.leader) {
        return Err(ControllerError::InvalidRequest("new ISR does not contain the leader"));
    }
    if !req.new_isr.iter().all(|r| image.is_alive(*r)) {
        return Err(ControllerError::IneligibleReplica);
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Action as RaftAction, Completion, HardState, Message, Raft, RaftConfig};

    // ---- the real Raft and Controller of each quorum member, pumped by an in-memory driver:
    // synchronous disk, an in-order network, virtual time ----

    struct Node {
        raft: Raft,
        controller: Controller,
        log: Vec<Entry>,
        up: bool,
    }

    struct Cluster {
        now_ms: i64,
        nodes: BTreeMap<NodeId, Node>,
        net: VecDeque<(NodeId, NodeId, Message)>,
        replies: BTreeMap<RequestId, Response>,
        next_request: RequestId,
    }

    const SESSION_MS: i64 = 9_000;

    impl Cluster {
        fn new(voters: &[i32], observers: &[i32]) -> Cluster {
            let voter_ids: Vec<NodeId> = voters.iter().map(|v| NodeId(*v)).collect();
            let observer_ids: Vec<NodeId> = observers.iter().map(|v| NodeId(*v)).collect();
            let mut nodes = BTreeMap::new();
            for id in voter_ids.iter().chain(&observer_ids) {
                let config = RaftConfig::new(*id, voter_ids.clone(), observer_ids.clone());
                let raft = Raft::restore(config, 7 + id.0 as u64, 0, HardState::default(), Vec::new()).unwrap();
                let controller = Controller::new(ControllerConfig::new(*id), 11 + id.0 as u64);
                nodes.insert(*id, Node { raft, controller, log: Vec::new(), up: true });
            }
            let mut cluster =
                Cluster { now_ms: 0, nodes, net: VecDeque::new(), replies: BTreeMap::new(), next_request: 1 };
            cluster.run_until(|c| c.active().is_some());
            cluster
        }

        fn pump(&mut self, id: NodeId) {
            let now_ms = self.now_ms;
            let node = self.nodes.get_mut(&id).unwrap();
            loop {
                let mut progress = false;
                while let Some(action) = node.raft.poll_action() {
                    progress = true;
                    match action {
                        RaftAction::PersistVote { term, voted_for } => {
                            node.raft.handle_completion(now_ms, Completion::VotePersisted { term, voted_for })
                        }
                        RaftAction::Truncate { from } => node.log.truncate(from.0 as usize - 1),
                        RaftAction::Append { entries } => {
                            let last = entries.last().unwrap();
                            let completion = Completion::Persisted { through: last.index, term: last.term };
                            node.log.extend(entries);
                            node.raft.handle_completion(now_ms, completion);
                        }
                        RaftAction::Send { to, message } => self.net.push_back((id, to, message)),
                        RaftAction::Apply { entries } => {
                            for entry in &entries {
                                node.controller.handle_committed(now_ms, entry);
                            }
                        }
                        RaftAction::Leader { term, leader } => node.controller.handle_leader(now_ms, term, leader),
                    }
                }
                while let Some(action) = node.controller.poll_action() {
                    progress = true;
                    match action {
                        Action::Propose(bytes) => {
                            let _ = node.raft.propose(now_ms, bytes);
                        }
                        Action::Reply(request, response) => {
                            self.replies.insert(request, response);
                        }
                    }
                }
                if !progress {
                    break;
                }
            }
        }

        fn settle(&mut self) {
            for _ in 0..100_000 {
                for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                    if self.nodes[&id].up {
                        self.pump(id);
                    }
                }
                let Some((from, to, message)) = self.net.pop_front() else { return };
                let now_ms = self.now_ms;
                let node = self.nodes.get_mut(&to).unwrap();
                if node.up && self.nodes[&from].up {
                    let node = self.nodes.get_mut(&to).unwrap();
                    node.raft.handle_message(now_ms, from, message);
                }
            }
            panic!("network never settled");
        }

        /// Lets virtual time pass to `until_ms`, firing every timer on the way.
        fn advance_to(&mut self, until_ms: i64) {
            loop {
                self.settle();
                let next = self
                    .nodes
                    .values()
                    .filter(|n| n.up)
                    .flat_map(|n| [n.raft.poll_timeout(), n.controller.poll_timeout()])
                    .flatten()
                    .min();
                match next {
                    Some(next) if next <= until_ms => {
                        self.now_ms = self.now_ms.max(next);
                        let now_ms = self.now_ms;
                        for node in self.nodes.values_mut().filter(|n| n.up) {
                            if node.raft.poll_timeout().is_some_and(|t| t <= now_ms) {
                                node.raft.handle_timeout(now_ms);
                            }
                            if node.controller.poll_timeout().is_some_and(|t| t <= now_ms) {
                                node.controller.handle_timeout(now_ms);
                            }
                        }
                    }
                    _ => break,
                }
            }
            self.now_ms = self.now_ms.max(until_ms);
            self.settle();
        }

        fn run_until(&mut self, done: impl Fn(&Cluster) -> bool) {
            for _ in 0..1_000 {
                if done(self) {
                    return;
                }
                let to = self.now_ms + 100;
                self.advance_to(to);
            }
            panic!("condition never reached");
        }

        fn active(&self) -> Option<NodeId> {
            self.nodes.iter().find(|(_, n)| n.up && n.controller.is_active()).map(|(id, _)| *id)
        }

        fn controller(&self) -> &Controller {
            &self.nodes[&self.active().unwrap()].controller
        }

        fn image(&self) -> &MetadataImage {
            self.controller().image()
        }

        /// Sends a request to the active controller and returns its answer once committed.
        fn request(&mut self, send: impl FnOnce(&mut Controller, i64, RequestId)) -> Response {
            let id = self.next_request;
            self.next_request += 1;
            let active = self.active().unwrap();
            let now_ms = self.now_ms;
            send(&mut self.nodes.get_mut(&active).unwrap().controller, now_ms, id);
            self.settle();
            self.replies.remove(&id).expect("request answered")
        }

        fn register(&mut self, broker: i32) -> BrokerEpoch {
            self.register_in(broker, None)
        }

        fn register_in(&mut self, broker: i32, rack: Option<&str>) -> BrokerEpoch {
            let req = BrokerRegistrationRequest {
                broker_id: NodeId(broker),
                incarnation_id: [broker as u8; 16],
                endpoints: vec![Endpoint { name: "PLAINTEXT".into(), host: "localhost".into(), port: 9092 }],
                rack: rack.map(str::to_owned),
            };
            match self.request(|c, now, id| c.handle_register_broker(now, id, req)) {
                Response::RegisterBroker(BrokerRegistrationResponse { error: None, broker_epoch }) => broker_epoch,
                other => panic!("registration failed: {other:?}"),
            }
        }

        fn heartbeat(&mut self, broker: i32) -> BrokerHeartbeatResponse {
            let broker_epoch = self.image().brokers()[&NodeId(broker)].broker_epoch;
            let req = BrokerHeartbeatRequest {
                broker_id: NodeId(broker),
                broker_epoch,
                current_metadata_offset: self.controller().applied_index(),
                want_fence: false,
                want_shutdown: false,
                offline_replicas: Vec::new(),
            };
            match self.request(|c, now, id| c.handle_heartbeat(now, id, req)) {
                Response::Heartbeat(r) => r,
                other => panic!("{other:?}"),
            }
        }

        /// Registers and unfences brokers.
        fn start_brokers(&mut self, brokers: &[i32]) {
            for b in brokers {
                self.register(*b);
                let r = self.heartbeat(*b);
                assert_eq!((r.error, r.is_fenced), (None, false), "broker {b} not unfenced");
            }
        }

        /// Registers and unfences brokers, each in its rack (`None`: without one).
        fn start_brokers_in(&mut self, brokers: &[(i32, Option<&str>)]) {
            for (b, rack) in brokers {
                self.register_in(*b, *rack);
                let r = self.heartbeat(*b);
                assert_eq!((r.error, r.is_fenced), (None, false), "broker {b} not unfenced");
            }
        }

        /// Time passes in heartbeat-interval steps; only `alive` brokers heartbeat.
        fn heartbeats_for(&mut self, duration_ms: i64, alive: &[i32]) {
            let end = self.now_ms + duration_ms;
            while self.now_ms < end {
                for b in alive {
                    self.heartbeat(*b);
                }
                let to = (self.now_ms + 2_000).min(end);
                self.advance_to(to);
            }
        }

        fn create_topic(&mut self, name: &str, partitions: i32, rf: i16, configs: &[(&str, &str)]) -> CreateTopicResult {
            let topic = CreatableTopic {
                name: name.into(),
                num_partitions: partitions,
                replication_factor: rf,
                configs: configs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                assignments: Vec::new(),
            };
            let req = CreateTopicsRequest { topics: vec![topic], validate_only: false };
            match self.request(|c, now, id| c.handle_create_topics(now, id, req)) {
                Response::CreateTopics(mut results) => results.remove(0),
                other => panic!("{other:?}"),
            }
        }

        fn alter_partition(&mut self, req: AlterPartitionRequest) -> AlterPartitionResponse {
            match self.request(|c, now, id| c.handle_alter_partition(now, id, req)) {
                Response::AlterPartition(r) => r,
                other => panic!("{other:?}"),
            }
        }

        fn partition(&self, topic: &str, p: i32) -> PartitionState {
            let topic = self.image().topic_by_name(topic).unwrap();
            topic.partitions[p as usize].clone()
        }
    }

    fn ids(list: &[i32]) -> Vec<NodeId> {
        list.iter().map(|n| NodeId(*n)).collect()
    }

    // Guards auto.leader.rebalance.enable: once a broker prefers more partitions than it
    // leads (beyond the percentage), the next check hands them back to it.
    #[test]
    fn leader_imbalance_check_returns_leaderships_to_preferred_replicas() {
        let mut c = Cluster::new(&[100], &[]);
        for node in c.nodes.values_mut() {
            node.controller.config.leader_imbalance_check_interval_ms = Some(30_000);
        }
        c.start_brokers(&[1, 2, 3]);
        assert_eq!(c.create_topic("spread", 6, 2, &[]).error, None);
        // Broker 1 goes silent and is fenced: its leaderships move away.
        c.heartbeats_for(SESSION_MS + 4_000, &[2, 3]);
        assert!((0..6).all(|p| c.partition("spread", p).leader != NodeId(1)));
        // Back, re-registered and in sync again (as its leaders would report).
        c.register(1);
        c.heartbeat(1);
        let topic_id = c.image().topic_by_name("spread").unwrap().id;
        for p in 0..6 {
            let state = c.partition("spread", p);
            if state.replicas.contains(&NodeId(1)) && !state.isr.contains(&NodeId(1)) {
                let mut isr = state.isr.clone();
                isr.push(NodeId(1));
                let epoch = c.image().brokers()[&state.leader].broker_epoch;
                let r = c.alter_partition(AlterPartitionRequest {
                    broker_id: state.leader,
                    broker_epoch: epoch,
                    topic_id,
                    partition: p,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    new_isr: isr,
                });
                assert_eq!(r.error, None);
            }
        }
        c.heartbeats_for(32_000, &[1, 2, 3]);
        for p in 0..6 {
            let state = c.partition("spread", p);
            assert_eq!(state.leader, state.replicas[0], "p{p} not back on its preferred replica: {state:?}");
        }
    }

    // Guards KIP-455: a reassignment adds the target replicas first, and drops the others only
    // once the ISR holds every target replica, moving the leadership off a removed leader.
    #[test]
    fn reassignment_adds_targets_then_switches_once_they_are_in_sync() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2, 3]);
        assert_eq!(c.create_topic("moving", 1, 1, &[]).error, None);
        let before = c.partition("moving", 0);
        let from = before.leader;
        let to = ids(&[1, 2, 3]).into_iter().find(|b| *b != from).unwrap();
        let reassign = |target: Option<Vec<NodeId>>| {
            vec![ReassignPartition { topic: "moving".into(), partition: 0, target, allow_replication_factor_change: true }]
        };
        let answer = c.request(|ctl, now, id| ctl.handle_alter_partition_reassignments(now, id, reassign(Some(vec![to]))));
        assert_eq!(answer, Response::AlterPartitionReassignments(vec![None]));
        let moving = c.partition("moving", 0);
        assert_eq!((moving.replicas.clone(), moving.isr.clone(), moving.leader), (vec![to, from], vec![from], from));
        let topic_id = c.image().topic_by_name("moving").unwrap().id;
        assert_eq!(c.image().reassignment(&topic_id, 0).map(Reassignment::adding), Some(vec![to]));

        // Cancelling needs one under way; a bad target is refused.
        let bad = c.request(|ctl, now, id| ctl.handle_alter_partition_reassignments(now, id, reassign(Some(vec![NodeId(9)]))));
        assert!(matches!(bad, Response::AlterPartitionReassignments(ref r) if matches!(r[0], Some(ControllerError::InvalidReplicaAssignment(_)))));

        // The leader takes the new replica into its ISR: the reassignment completes, and the
        // leadership moves to it with a new leader epoch.
        let epoch = c.image().brokers()[&from].broker_epoch;
        let r = c.alter_partition(AlterPartitionRequest {
            broker_id: from,
            broker_epoch: epoch,
            topic_id,
            partition: 0,
            leader_epoch: moving.leader_epoch,
            partition_epoch: moving.partition_epoch,
            new_isr: vec![from, to],
        });
        assert_eq!(r.error, None);
        let done = c.partition("moving", 0);
        assert_eq!((done.replicas.clone(), done.isr.clone(), done.leader), (vec![to], vec![to], to));
        assert_eq!(done.leader_epoch, moving.leader_epoch.next());
        assert_eq!(c.image().reassignment(&topic_id, 0), None);
        let none = c.request(|ctl, now, id| ctl.handle_alter_partition_reassignments(now, id, reassign(None)));
        assert_eq!(none, Response::AlterPartitionReassignments(vec![Some(ControllerError::NoReassignmentInProgress)]));

        // Started and cancelled: back to the original replicas.
        c.request(|ctl, now, id| ctl.handle_alter_partition_reassignments(now, id, reassign(Some(vec![from]))));
        assert_eq!(c.partition("moving", 0).replicas, vec![from, to]);
        c.request(|ctl, now, id| ctl.handle_alter_partition_reassignments(now, id, reassign(None)));
        let back = c.partition("moving", 0);
        assert_eq!((back.replicas, back.isr, back.leader), (vec![to], vec![to], to));
    }

    // Guards KRaft's broker liveness rule: a broker that stops heartbeating is fenced after
    // broker.session.timeout.ms, leaves every ISR, and its leaderships move to alive ISR members
    // with a bumped leader epoch (so its stale fetches and produces are fenced, KIP-101/320).
    #[test]
    fn missed_heartbeats_fence_broker_and_move_leaderships_to_isr_members_with_new_epochs() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2, 3]);
        let created = c.create_topic("orders", 6, 3, &[]);
        assert_eq!(created.error, None);
        let before: Vec<PartitionState> = (0..6).map(|p| c.partition("orders", p)).collect();
        assert_eq!(before.iter().filter(|p| p.leader == NodeId(2)).count(), 2);

        // Broker 2 goes silent; within one session it is not yet fenced.
        c.heartbeats_for(SESSION_MS - 2_000, &[1, 3]);
        assert!(c.image().is_alive(NodeId(2)));
        c.heartbeats_for(4_000, &[1, 3]);
        assert!(!c.image().is_alive(NodeId(2)), "broker 2 not fenced after its session expired");

        for (p, old) in before.iter().enumerate() {
            let now = c.partition("orders", p as i32);
            assert!(!now.isr.contains(&NodeId(2)), "p{p}: fenced broker still in ISR {:?}", now.isr);
            assert_ne!(now.leader, NodeId(2));
            assert!(now.isr.contains(&now.leader));
            if old.leader == NodeId(2) {
                // The next replica in assignment order that is in the ISR.
                let expected = old.replicas.iter().copied().find(|r| *r != NodeId(2)).unwrap();
                assert_eq!(now.leader, expected, "p{p}");
                assert_eq!(now.leader_epoch, old.leader_epoch.next(), "p{p}: leader epoch not bumped");
            } else {
                assert_eq!(now.leader_epoch, old.leader_epoch, "p{p}: follower loss must not bump the leader epoch");
            }
            assert!(now.partition_epoch > old.partition_epoch);
        }
        // Broker 2 resumes heartbeating with its epoch: unfenced, but not back in any ISR
        // (its leaders add it once it has caught up, through AlterPartition).
        let back = c.heartbeat(2);
        assert_eq!((back.error, back.is_fenced), (None, false));
        assert!(c.image().is_alive(NodeId(2)));
        assert!((0..6).all(|p| !c.partition("orders", p).isr.contains(&NodeId(2))));
        // After a restart it registers again: a new, higher epoch, fenced until caught up.
        let old_epoch = c.image().brokers()[&NodeId(2)].broker_epoch;
        assert!(c.register(2) > old_epoch);
        assert!(!c.image().is_alive(NodeId(2)));
        c.start_brokers(&[2]);
        assert!(c.image().is_alive(NodeId(2)));
    }

    // Guards against silent data loss (Kafka's default unclean.leader.election.enable=false):
    // with no ISR member alive the partition has no leader; the per-topic config lets an
    // out-of-ISR replica lead, and it alone forms the ISR.
    #[test]
    fn no_leader_without_alive_isr_member_unless_topic_enables_unclean_election() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2]);
        c.create_topic("clean", 1, 2, &[]);
        c.create_topic("dirty", 1, 2, &[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]);
        for topic in ["clean", "dirty"] {
            let p = c.partition(topic, 0);
            let topic_id = c.image().topic_by_name(topic).unwrap().id;
            let leader = p.leader;
            // The leader shrinks the ISR to itself (the follower fell behind).
            let r = c.alter_partition(AlterPartitionRequest {
                broker_id: leader,
                broker_epoch: c.image().brokers()[&leader].broker_epoch,
                topic_id,
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                new_isr: vec![leader],
            });
            assert_eq!(r.error, None);
        }
        let clean = c.partition("clean", 0);
        let dirty = c.partition("dirty", 0);
        // Fence every ISR member: both leaders go silent, the other brokers keep beating.
        let silent = [clean.leader.0, dirty.leader.0];
        let alive: Vec<i32> = [1, 2].into_iter().filter(|b| !silent.contains(b)).collect();
        c.heartbeats_for(SESSION_MS + 4_000, &alive);

        let clean_now = c.partition("clean", 0);
        assert_eq!(clean_now.leader, NodeId::NONE, "clean topic elected an out-of-ISR replica");
        assert_eq!(clean_now.isr, clean.isr, "the last ISR member stays so it can lead again");
        assert_eq!(clean_now.leader_epoch, clean.leader_epoch.next());

        let dirty_now = c.partition("dirty", 0);
        if alive.is_empty() {
            assert_eq!(dirty_now.leader, NodeId::NONE);
        } else {
            let out_of_isr = dirty.replicas.iter().copied().find(|r| *r != dirty.leader).unwrap();
            assert_eq!(dirty_now.leader, out_of_isr, "unclean election did not pick the alive replica");
            assert_eq!(dirty_now.isr, vec![out_of_isr]);
            assert_eq!(dirty_now.leader_epoch, dirty.leader_epoch.next());
        }
        // The clean partition's last ISR member comes back and leads it again.
        c.start_brokers(&[clean.leader.0]);
        let back = c.partition("clean", 0);
        assert_eq!(back.leader, clean.leader);
        assert_eq!(back.leader_epoch, clean.leader_epoch.next().next());
    }

    // Guards ISR safety (KIP-497, KIP-841, KIP-903's stale-broker class): AlterPartition from a
    // deposed leader, built on an old partition state, sent by an old incarnation of the broker,
    // or adding a replica that is not alive, must be refused; a valid one bumps the partition
    // epoch only.
    #[test]
    fn stale_alter_partition_is_rejected() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2, 3]);
        c.create_topic("t", 1, 3, &[]);
        let topic_id = c.image().topic_by_name("t").unwrap().id;
        let p = c.partition("t", 0);
        let leader = p.leader;
        let followers: Vec<NodeId> = p.replicas.iter().copied().filter(|r| *r != leader).collect();
        let epoch_of = |c: &Cluster, b: NodeId| c.image().brokers()[&b].broker_epoch;
        let base = AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: epoch_of(&c, leader),
            topic_id,
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: vec![leader, followers[0]],
        };
        // Valid shrink: ISR loses followers[1]; partition epoch bumps, leader epoch stays.
        let ok = c.alter_partition(base.clone());
        assert_eq!(ok.error, None);
        let state = ok.state.unwrap();
        assert_eq!(state.isr, base.new_isr);
        assert_eq!(state.partition_epoch, PartitionEpoch(p.partition_epoch.0 + 1));
        assert_eq!(state.leader_epoch, p.leader_epoch);
        assert_eq!(c.partition("t", 0).isr, base.new_isr, "reply sent before the change committed");

        // Stale partition epoch: the same request again.
        let again = AlterPartitionRequest { new_isr: p.replicas.clone(), ..base.clone() };
        assert_eq!(c.alter_partition(again).error, Some(ControllerError::InvalidUpdateVersion));
        let current = AlterPartitionRequest { partition_epoch: state.partition_epoch, ..base.clone() };

        // Old broker epoch: the leader restarted and re-registered since.
        let old_epoch = AlterPartitionRequest { broker_epoch: BrokerEpoch(base.broker_epoch.0 - 1), ..current.clone() };
        assert_eq!(c.alter_partition(old_epoch).error, Some(ControllerError::StaleBrokerEpoch));

        // An ISR member that is not alive: fence followers[1] (missed heartbeats), then try to
        // add it back.
        c.heartbeats_for(SESSION_MS + 4_000, &[leader.0, followers[0].0]);
        assert!(!c.image().is_alive(followers[1]));
        let p = c.partition("t", 0);
        let expand = AlterPartitionRequest {
            partition_epoch: p.partition_epoch,
            leader_epoch: p.leader_epoch,
            new_isr: vec![leader, followers[0], followers[1]],
            ..base.clone()
        };
        assert_eq!(c.alter_partition(expand).error, Some(ControllerError::IneligibleReplica));

        // Old leader epoch: the leader is fenced, its leadership moves; it then proposes with
        // the epoch it knew, and its old broker epoch once re-registered.
        c.heartbeats_for(SESSION_MS + 4_000, &[followers[0].0]);
        let moved = c.partition("t", 0);
        assert_eq!(moved.leader, followers[0]);
        let deposed = AlterPartitionRequest {
            partition_epoch: p.partition_epoch,
            leader_epoch: p.leader_epoch,
            new_isr: vec![leader],
            ..base.clone()
        };
        assert_eq!(c.alter_partition(deposed.clone()).error, Some(ControllerError::FencedLeaderEpoch));
        c.start_brokers(&[leader.0]);
        assert_eq!(c.alter_partition(deposed).error, Some(ControllerError::StaleBrokerEpoch));
        // A follower claiming leadership with the current epochs is not the leader.
        let impostor = AlterPartitionRequest {
            broker_id: leader,
            broker_epoch: epoch_of(&c, leader),
            leader_epoch: moved.leader_epoch,
            partition_epoch: moved.partition_epoch,
            new_isr: vec![followers[0], leader],
            ..base.clone()
        };
        assert!(matches!(c.alter_partition(impostor).error, Some(ControllerError::InvalidRequest(_))));
        // A leader epoch newer than the controller's: NOT_CONTROLLER, so the leader looks again.
        let ahead = AlterPartitionRequest {
            broker_id: followers[0],
            broker_epoch: epoch_of(&c, followers[0]),
            leader_epoch: moved.leader_epoch.next(),
            partition_epoch: moved.partition_epoch,
            new_isr: vec![followers[0]],
            ..base.clone()
        };
        assert_eq!(c.alter_partition(ahead).error, Some(ControllerError::NotController));
        // Unknown topic id.
        let unknown = AlterPartitionRequest { topic_id: [9; 16], broker_epoch: epoch_of(&c, leader), ..base };
        assert_eq!(c.alter_partition(unknown).error, Some(ControllerError::UnknownTopicId));
    }

    // Guards load balance (Kafka's rack-unaware assignment, which StripedReplicaPlacer reduces
    // to without racks): with 3 brokers, 12 partitions and RF 3, every broker leads 4 partitions
    // and holds each replica position 4 times.
    #[test]
    fn placement_spreads_partitions_and_leaders_evenly() {
        let golden: [[i32; 3]; 12] = [
            [1, 2, 3],
            [2, 3, 1],
            [3, 1, 2],
            [1, 3, 2],
            [2, 1, 3],
            [3, 2, 1],
            [1, 2, 3],
            [2, 3, 1],
            [3, 1, 2],
            [1, 3, 2],
            [2, 1, 3],
            [3, 2, 1],
        ];
        let placed = place_replicas(&ids(&[1, 2, 3]), 12, 3, 0, 0);
        let expected: Vec<Vec<NodeId>> = golden.iter().map(|r| ids(r)).collect();
        assert_eq!(placed, expected);

        // Through CreateTopics: leaders and replicas spread over 4 brokers, RF 2.
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2, 3, 4]);
        c.create_topic("a", 12, 2, &[]);
        c.create_topic("b", 5, 2, &[]);
        let mut leaders = BTreeMap::<NodeId, usize>::new();
        let mut replicas = BTreeMap::<NodeId, usize>::new();
        for topic in ["a", "b"] {
            for p in &c.image().topic_by_name(topic).unwrap().partitions {
                *leaders.entry(p.leader).or_default() += 1;
                for r in &p.replicas {
                    *replicas.entry(*r).or_default() += 1;
                }
                assert_eq!(p.isr, p.replicas);
                assert_eq!(p.leader, p.replicas[0]);
            }
        }
        let spread = |m: &BTreeMap<NodeId, usize>| m.values().max().unwrap() - m.values().min().unwrap();
        assert_eq!(leaders.len(), 4);
        assert!(spread(&leaders) <= 1, "leaders {leaders:?}");
        assert!(spread(&replicas) <= 1, "replicas {replicas:?}");
    }

    // Guards CreateTopics validation (Kafka's INVALID_REPLICATION_FACTOR and friends): a
    // replication factor above the live brokers is refused and nothing is written.
    #[test]
    fn create_topics_with_replication_factor_above_live_brokers_fails() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2]);
        let r = c.create_topic("big", 3, 3, &[]);
        assert!(matches!(&r.error, Some(ControllerError::InvalidReplicationFactor(_))), "{r:?}");
        assert_eq!(r.error.unwrap().code(), ErrorCode::InvalidReplicationFactor);
        assert!(c.image().topic_by_name("big").is_none());
        // A registered but fenced broker does not count.
        c.register(3);
        let r = c.create_topic("big", 3, 3, &[]);
        assert!(matches!(r.error, Some(ControllerError::InvalidReplicationFactor(_))));
        // The other validations, and defaults.
        assert!(matches!(c.create_topic("zero", 0, 1, &[]).error, Some(ControllerError::InvalidPartitions(_))));
        assert!(matches!(c.create_topic("bad name", 1, 1, &[]).error, Some(ControllerError::InvalidTopic(_))));
        let bad_config = c.create_topic("cfg", 1, 1, &[("min.insync.replicas", "0")]);
        assert!(matches!(bad_config.error, Some(ControllerError::InvalidConfig(_))));
        let bad_unclean = c.create_topic("cfg", 1, 1, &[(UNCLEAN_LEADER_ELECTION_ENABLE, "maybe")]);
        assert!(matches!(bad_unclean.error, Some(ControllerError::InvalidConfig(_))));
        let defaults = c.create_topic("defaults", -1, -1, &[("min.insync.replicas", "2")]);
        assert_eq!((defaults.error, defaults.num_partitions, defaults.replication_factor), (None, 1, 1));
        assert_eq!(c.create_topic("defaults", 1, 1, &[]).error, Some(ControllerError::TopicAlreadyExists));
        let deleted = c.request(|ctl, now, id| ctl.handle_delete_topics(now, id, vec!["defaults".into(), "nope".into()]));
        let Response::DeleteTopics(results) = deleted else { panic!() };
        assert_eq!(results[0].error, None);
        assert_eq!(results[1].error, Some(ControllerError::UnknownTopicOrPartition));
        assert!(c.image().topic_by_name("defaults").is_none());
    }

    // Guards "metadata changes reach every broker": voters and an observer replaying the
    // committed log hold identical images, and after the active controller dies a new one
    // takes over with the same image, refusing nothing it committed.
    #[test]
    fn every_member_replays_the_same_image_and_a_new_active_controller_takes_over() {
        let mut c = Cluster::new(&[100, 101, 102], &[7]);
        c.start_brokers(&[1, 2, 3]);
        c.create_topic("t", 4, 3, &[]);
        c.heartbeats_for(5_000, &[1, 2, 3]);
        // One more heartbeat round carries the last commit index to followers and observers.
        let to = c.now_ms + 500;
        c.advance_to(to);
        let reference = c.image().clone();
        for (id, node) in &c.nodes {
            assert_eq!(node.controller.image(), &reference, "node {id} diverged");
        }
        let old = c.active().unwrap();
        c.nodes.get_mut(&old).unwrap().up = false;
        c.run_until(|c| c.active().is_some_and(|a| a != old));
        assert_eq!(c.image(), &reference);
        // The new active controller serves: brokers keep their sessions through the change.
        c.heartbeats_for(SESSION_MS + 2_000, &[1, 2, 3]);
        assert!([1, 2, 3].iter().all(|b| c.image().is_alive(NodeId(*b))));
        assert_eq!(c.create_topic("u", 2, 3, &[]).error, None);
        let to = c.now_ms + 500;
        c.advance_to(to);
        assert_eq!(c.nodes[&NodeId(7)].controller.image(), c.image());
    }

    // Guards KRaft's duplicate-registration fence without its start-up cost: a second
    // incarnation is refused while the first keeps heartbeating to this controller, but after a
    // controller change a broker that restarted (as a node alone does with its controller)
    // registers at once instead of waiting out the session the new controller granted.
    #[test]
    fn a_new_incarnation_waits_for_a_live_session_only_if_this_controller_heard_from_it() {
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        c.start_brokers(&[1]);
        let second = |c: &mut Cluster, incarnation: u8| {
            let req = BrokerRegistrationRequest { broker_id: NodeId(1), incarnation_id: [incarnation; 16], endpoints: vec![], rack: None };
            match c.request(|ctl, now, id| ctl.handle_register_broker(now, id, req)) {
                Response::RegisterBroker(r) => r.error,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(second(&mut c, 9), Some(ControllerError::DuplicateBrokerRegistration));
        let old = c.active().unwrap();
        c.nodes.get_mut(&old).unwrap().up = false;
        c.run_until(|c| c.active().is_some_and(|a| a != old));
        assert!(c.image().brokers()[&NodeId(1)].fenced == false, "the session lives on");
        assert_eq!(second(&mut c, 9), None, "nobody heartbeated to the new controller");
        assert_eq!(c.heartbeat(1).is_fenced, false);
        assert_eq!(second(&mut c, 10), Some(ControllerError::DuplicateBrokerRegistration));
    }

    // Guards answers decided on uncommitted state: a second CreateTopics of a topic whose
    // creation is still in flight is answered TOPIC_ALREADY_EXISTS only once that creation
    // commits, and NOT_CONTROLLER if the controller loses leadership first (the creation may
    // then be lost, and "already exists" would be a lie). Found by simulator seed 2352
    // (fsync-failure), whose topic was never created.
    #[test]
    fn an_answer_decided_on_uncommitted_state_waits_for_it_to_commit() {
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        c.start_brokers(&[1, 2, 3]);
        let topic = |name: &str| CreateTopicsRequest {
            topics: vec![CreatableTopic { name: name.into(), num_partitions: 1, replication_factor: 3, configs: BTreeMap::new(), assignments: Vec::new() }],
            validate_only: false,
        };
        let active = c.active().unwrap();
        let now_ms = c.now_ms;
        let ctl = &mut c.nodes.get_mut(&active).unwrap().controller;
        ctl.handle_create_topics(now_ms, 900, topic("t"));
        ctl.handle_create_topics(now_ms, 901, topic("t"));
        // The active controller's own actions, no message delivered: nothing has committed.
        c.pump(active);
        assert!(!c.replies.contains_key(&901), "answered from the pending view: {:?}", c.replies.get(&901));
        c.settle();
        let code = |r: Option<Response>| match r {
            Some(Response::CreateTopics(results)) => results[0].error.as_ref().map(|e| e.code()),
            other => panic!("{other:?}"),
        };
        assert_eq!(code(c.replies.remove(&900)), None);
        assert_eq!(code(c.replies.remove(&901)), Some(ErrorCode::TopicAlreadyExists));
        // Leadership lost before the creation commits: the second answer is NOT_CONTROLLER.
        let now_ms = c.now_ms;
        let ctl = &mut c.nodes.get_mut(&active).unwrap().controller;
        ctl.handle_create_topics(now_ms, 902, topic("u"));
        ctl.handle_create_topics(now_ms, 903, topic("u"));
        c.pump(active);
        c.nodes.get_mut(&active).unwrap().controller.handle_leader(now_ms, Term(999), None);
        c.pump(active);
        assert_eq!(code(c.replies.remove(&903)), Some(ErrorCode::NotController));
    }

    // Guards the standby path: a controller that is not active refuses with NOT_CONTROLLER
    // instead of deciding on an image that may be behind.
    #[test]
    fn standby_controller_refuses_requests_with_not_controller() {
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        let standby = c.nodes.keys().copied().find(|id| Some(*id) != c.active()).unwrap();
        let req = BrokerRegistrationRequest { broker_id: NodeId(1), incarnation_id: [1; 16], endpoints: vec![], rack: None };
        let now_ms = c.now_ms;
        c.nodes.get_mut(&standby).unwrap().controller.handle_register_broker(now_ms, 99, req);
        c.settle();
        let Some(Response::RegisterBroker(r)) = c.replies.remove(&99) else { panic!() };
        assert_eq!(r.error, Some(ControllerError::NotController));
    }

    fn report_offline(c: &mut Cluster, broker: i32, replicas: Vec<(TopicId, i32)>) -> BrokerHeartbeatResponse {
        let req = BrokerHeartbeatRequest {
            broker_id: NodeId(broker),
            broker_epoch: c.image().brokers()[&NodeId(broker)].broker_epoch,
            current_metadata_offset: c.controller().applied_index(),
            want_fence: false,
            want_shutdown: false,
            offline_replicas: replicas,
        };
        let Response::Heartbeat(r) = c.request(|ctl, now, id| ctl.handle_heartbeat(now, id, req)) else { panic!() };
        r
    }

    // Guards KIP-858's failed-directory handling: replicas a broker reports offline lose
    // their leaderships to in-sync replicas and leave their ISRs, while the broker keeps its
    // other partitions; a repeated report changes nothing, and the reported replicas are not
    // re-elected (by another broker's fencing or joining) nor let back into the ISR by
    // AlterPartition while the broker reports them.
    #[test]
    fn offline_replicas_lose_leadership_and_isr_and_are_not_elected_again() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2, 3]);
        assert_eq!(c.create_topic("t", 6, 3, &[]).error, None);
        assert_eq!(c.create_topic("kept", 3, 3, &[]).error, None);
        let t = c.image().topic_by_name("t").unwrap().id;
        let kept_before: Vec<PartitionState> = (0..3).map(|p| c.partition("kept", p)).collect();
        let led_by_one = (0..6).filter(|p| c.partition("t", *p).leader == NodeId(1)).count();
        assert!(led_by_one > 0, "placement gave broker 1 no leadership of t");
        let offline: Vec<(TopicId, i32)> = (0..6).map(|p| (t, p)).collect();
        let r = report_offline(&mut c, 1, offline.clone());
        assert_eq!((r.error, r.is_fenced), (None, false), "the broker stays unfenced for its other replicas");
        for p in 0..6 {
            let state = c.partition("t", p);
            assert_eq!(state.replicas.len(), 3, "the replica stays assigned");
            assert!(state.leader != NodeId(1) && state.leader != NodeId::NONE, "partition {p}: {state:?}");
            assert!(!state.isr.contains(&NodeId(1)), "partition {p}: {state:?}");
        }
        assert_eq!((0..3).map(|p| c.partition("kept", p)).collect::<Vec<_>>(), kept_before, "other partitions untouched");
        let before = c.image().clone();
        report_offline(&mut c, 1, offline.clone());
        assert_eq!(c.image(), &before, "a repeated report changes nothing");

        // The leader cannot add the offline replica back.
        let state = c.partition("t", 0);
        let mut new_isr = state.isr.clone();
        new_isr.push(NodeId(1));
        let r = c.alter_partition(AlterPartitionRequest {
            broker_id: state.leader,
            broker_epoch: c.image().brokers()[&state.leader].broker_epoch,
            topic_id: t,
            partition: 0,
            leader_epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            new_isr,
        });
        assert_eq!(r.error, Some(ControllerError::IneligibleReplica));

        // Broker 2 goes silent and is fenced: its leaderships of t go to 3, never to 1.
        let heartbeat_offline = |c: &mut Cluster| {
            report_offline(c, 1, offline.clone());
        };
        let end = c.now_ms + SESSION_MS + 4_000;
        while c.now_ms < end {
            heartbeat_offline(&mut c);
            c.heartbeat(3);
            let to = c.now_ms + 2_000;
            c.advance_to(to);
        }
        assert!(!c.image().is_alive(NodeId(2)));
        for p in 0..6 {
            let state = c.partition("t", p);
            assert_eq!((state.leader, state.isr.clone()), (NodeId(3), vec![NodeId(3)]), "partition {p}");
        }
        // Broker 3 fails too: nobody eligible is left, so t goes leaderless rather than to 1.
        let end = c.now_ms + SESSION_MS + 4_000;
        while c.now_ms < end {
            heartbeat_offline(&mut c);
            let to = c.now_ms + 2_000;
            c.advance_to(to);
        }
        for p in 0..6 {
            let state = c.partition("t", p);
            assert_eq!((state.leader, state.isr.clone()), (NodeId::NONE, vec![NodeId(3)]), "partition {p}");
        }
        // Broker 2 comes back; only 3 may lead cleanly, and 1 still reports its replicas offline.
        c.register(2);
        c.heartbeat(2);
        heartbeat_offline(&mut c);
        assert!((0..6).all(|p| c.partition("t", p).leader == NodeId::NONE));
        // Once restarted (a new registration) broker 1 is eligible again: it reports nothing.
        c.register(1);
        c.heartbeat(1);
        let state = c.partition("kept", 0);
        assert!(state.leader != NodeId::NONE);
        c.register(3);
        c.heartbeat(3);
        assert!((0..6).all(|p| c.partition("t", p).leader == NodeId(3)));
    }

    // Guards the offline report of a partition whose only in-sync replica is the reporting
    // broker: no clean leader exists, so it goes leaderless keeping its last ISR member (as
    // controlled shutdown does), unless unclean election lets another alive replica lead.
    #[test]
    fn an_offline_sole_isr_replica_leaves_its_partition_leaderless_unless_unclean() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2]);
        assert_eq!(c.create_topic("clean", 1, 2, &[]).error, None);
        assert_eq!(c.create_topic("dirty", 1, 2, &[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]).error, None);
        let mut offline = Vec::new();
        for name in ["clean", "dirty"] {
            let id = c.image().topic_by_name(name).unwrap().id;
            // Its leader alone in sync: the other replica lagged out.
            let state = c.partition(name, 0);
            let r = c.alter_partition(AlterPartitionRequest {
                broker_id: state.leader,
                broker_epoch: c.image().brokers()[&state.leader].broker_epoch,
                topic_id: id,
                partition: 0,
                leader_epoch: state.leader_epoch,
                partition_epoch: state.partition_epoch,
                new_isr: vec![state.leader],
            });
            assert_eq!(r.error, None);
            offline.push((state.leader, id));
        }
        for (leader, id) in &offline {
            report_offline(&mut c, leader.0, vec![(*id, 0)]);
        }
        let clean = c.partition("clean", 0);
        assert_eq!((clean.leader, clean.isr.clone()), (NodeId::NONE, vec![offline[0].0]));
        let dirty = c.partition("dirty", 0);
        let other = dirty.replicas.iter().copied().find(|b| *b != offline[1].0).unwrap();
        assert_eq!((dirty.leader, dirty.isr.clone()), (other, vec![other]));
        // Another replica's broker restarting and joining elects leaderless partitions from
        // their ISR, but not the replica still reported offline.
        let joining = clean.replicas.iter().copied().find(|b| *b != offline[0].0).unwrap();
        c.register(joining.0);
        report_offline(&mut c, offline[0].0 .0, vec![(offline[0].1, 0)]);
        assert!(!c.heartbeat(joining.0).is_fenced);
        assert_eq!(c.partition("clean", 0).leader, NodeId::NONE);
    }

    // Guards controlled shutdown: the broker asks to leave, its leaderships move before it
    // stops, and it is told it may shut down.
    #[test]
    fn controlled_shutdown_moves_leaderships_first() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2]);
        c.create_topic("t", 2, 2, &[]);
        let req = BrokerHeartbeatRequest {
            broker_id: NodeId(1),
            broker_epoch: c.image().brokers()[&NodeId(1)].broker_epoch,
            current_metadata_offset: c.controller().applied_index(),
            want_fence: false,
            want_shutdown: true,
            offline_replicas: Vec::new(),
        };
        let Response::Heartbeat(r) = c.request(|ctl, now, id| ctl.handle_heartbeat(now, id, req)) else { panic!() };
        assert!(r.should_shutdown && r.is_fenced);
        for p in 0..2 {
            let state = c.partition("t", p);
            assert_eq!((state.leader, state.isr.clone()), (NodeId(2), vec![NodeId(2)]));
        }
    }

    // Guards the broker's shutdown wait: a partition whose only ISR member is the leaving
    // broker cannot move (no clean leader exists), so it goes leaderless, as KRaft's
    // controlled shutdown does, and the broker need not wait for it. A repeated request (the
    // first answer was lost) is answered the same way and changes nothing.
    #[test]
    fn controlled_shutdown_offlines_sole_isr_partitions_and_is_idempotent() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers(&[1, 2]);
        c.create_topic("solo", 4, 1, &[]);
        let shutdown = |c: &Cluster| BrokerHeartbeatRequest {
            broker_id: NodeId(1),
            broker_epoch: c.image().brokers()[&NodeId(1)].broker_epoch,
            current_metadata_offset: c.controller().applied_index(),
            want_fence: false,
            want_shutdown: true,
            offline_replicas: Vec::new(),
        };
        let req = shutdown(&c);
        let Response::Heartbeat(r) = c.request(|ctl, now, id| ctl.handle_heartbeat(now, id, req)) else { panic!() };
        assert!(r.should_shutdown);
        let mut on_one = 0;
        for p in 0..4 {
            let state = c.partition("solo", p);
            if state.replicas == vec![NodeId(1)] {
                on_one += 1;
                assert_eq!((state.leader, state.isr.clone()), (NodeId::NONE, vec![NodeId(1)]));
            } else {
                assert_eq!(state.leader, NodeId(2));
            }
            assert_ne!(state.leader, NodeId(1), "the leaving broker leads nothing");
        }
        assert!(on_one > 0, "placement put no partition on broker 1");
        let before = c.image().clone();
        let req = shutdown(&c);
        let Response::Heartbeat(r) = c.request(|ctl, now, id| ctl.handle_heartbeat(now, id, req)) else { panic!() };
        assert!(r.should_shutdown && r.is_fenced);
        assert_eq!(c.image(), &before);
    }

    // Guards determinism and epoch monotonicity of the whole pipeline (Raft + controller +
    // replay) under controller failovers, broker churn and leader ISR changes drawn from a
    // seed: every node's image keeps its invariants, leader and partition epochs never go
    // back, and all images agree once the cluster settles.
    #[test]
    fn seeded_churn_keeps_images_equal_and_epochs_monotonic() {
        for seed in 0..40u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut random = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut c = Cluster::new(&[100, 101, 102], &[7]);
            let brokers = [1, 2, 3, 4];
            let mut beating: BTreeSet<i32> = brokers.into_iter().collect();
            let mut seen: BTreeMap<(NodeId, TopicId, usize), (LeaderEpoch, PartitionEpoch)> = BTreeMap::new();
            let mut topics = 0;
            for _ in 0..120 {
                let Some(active) = c.active() else {
                    let to = c.now_ms + 500;
                    c.advance_to(to);
                    continue;
                };
                let id = c.next_request;
                c.next_request += 1;
                let now_ms = c.now_ms;
                let image = c.nodes[&active].controller.image().clone();
                let applied = c.nodes[&active].controller.applied_index();
                let ctl = &mut c.nodes.get_mut(&active).unwrap().controller;
                match random() % 10 {
                    0 => {
                        let b = brokers[(random() % 4) as usize];
                        let req = BrokerRegistrationRequest { broker_id: NodeId(b), incarnation_id: [random() as u8; 16], endpoints: vec![], rack: None };
                        ctl.handle_register_broker(now_ms, id, req);
                    }
                    1 => {
                        topics += 1;
                        let topic = CreatableTopic {
                            name: format!("t{topics}"),
                            num_partitions: 1 + (random() % 4) as i32,
                            replication_factor: 1 + (random() % 3) as i16,
                            configs: if random().is_multiple_of(2) {
                                [(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "true".to_string())].into()
                            } else {
                                BTreeMap::new()
                            },
                            assignments: Vec::new(),
                        };
                        ctl.handle_create_topics(now_ms, id, CreateTopicsRequest { topics: vec![topic], validate_only: false });
                    }
                    2 => {
                        // A broker stops or resumes heartbeating.
                        let b = brokers[(random() % 4) as usize];
                        if !beating.remove(&b) {
                            beating.insert(b);
                        }
                    }
                    3 => {
                        // A controller pauses or resumes (at most one down).
                        let node = [100, 101, 102][(random() % 3) as usize];
                        let down = c.nodes.values().filter(|n| !n.up).count();
                        let n = c.nodes.get_mut(&NodeId(node)).unwrap();
                        if !n.up {
                            n.up = true;
                        } else if down == 0 {
                            n.up = false;
                        }
                    }
                    4..=6 => {
                        // A partition leader shrinks or expands its ISR as it sees fit.
                        let parts: Vec<(TopicId, usize, PartitionState)> = image
                            .topics()
                            .values()
                            .flat_map(|t| t.partitions.iter().enumerate().map(|(i, p)| (t.id, i, p.clone())))
                            .filter(|(_, _, p)| p.leader != NodeId::NONE)
                            .collect();
                        if !parts.is_empty() {
                            let (topic_id, p, state) = parts[(random() as usize) % parts.len()].clone();
                            let mut new_isr: Vec<NodeId> =
                                state.replicas.iter().copied().filter(|r| *r == state.leader || random().is_multiple_of(2)).collect();
                            new_isr.sort();
                            let req = AlterPartitionRequest {
                                broker_id: state.leader,
                                broker_epoch: image.brokers().get(&state.leader).map_or(BrokerEpoch(-1), |b| b.broker_epoch),
                                topic_id,
                                partition: p as i32,
                                leader_epoch: state.leader_epoch,
                                partition_epoch: state.partition_epoch,
                                new_isr,
                            };
                            ctl.handle_alter_partition(now_ms, id, req);
                        }
                    }
                    _ => {}
                }
                for b in beating.iter().copied().collect::<Vec<_>>() {
                    if let Some(reg) = image.brokers().get(&NodeId(b)) {
                        let req = BrokerHeartbeatRequest {
                            broker_id: NodeId(b),
                            broker_epoch: reg.broker_epoch,
                            current_metadata_offset: applied,
                            want_fence: false,
                            want_shutdown: false,
                            offline_replicas: Vec::new(),
                        };
                        let id = c.next_request;
                        c.next_request += 1;
                        c.nodes.get_mut(&active).unwrap().controller.handle_heartbeat(now_ms, id, req);
                    }
                }
                let to = c.now_ms + (random() % 3_000) as i64;
                c.advance_to(to);
                for (node_id, node) in &c.nodes {
                    for topic in node.controller.image().topics().values() {
                        for (i, p) in topic.partitions.iter().enumerate() {
                            let now = (p.leader_epoch, p.partition_epoch);
                            let before = seen.insert((*node_id, topic.id, i), now);
                            if let Some(before) = before {
                                assert!(now >= before, "seed {seed}: node {node_id} epochs went back {before:?} -> {now:?}");
                            }
                        }
                    }
                }
            }
            for node in c.nodes.values_mut() {
                node.up = true;
            }
            c.run_until(|c| c.active().is_some());
            let to = c.now_ms + 2_000;
            c.advance_to(to);
            let reference = c.image().clone();
            assert!(!reference.topics().is_empty() || topics == 0, "seed {seed}: nothing created");
            for (id, node) in &c.nodes {
                assert_eq!(node.controller.image(), &reference, "seed {seed}: node {id} diverged");
            }
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let records = vec![
            MetadataRecord::RegisterBroker {
                broker_id: NodeId(1),
                broker_epoch: BrokerEpoch(4),
                incarnation_id: [3; 16],
                endpoints: vec![Endpoint { name: "PLAINTEXT".into(), host: "h".into(), port: 9092 }],
                rack: None,
            },
            MetadataRecord::RegisterBroker {
                broker_id: NodeId(2),
                broker_epoch: BrokerEpoch(5),
                incarnation_id: [4; 16],
                endpoints: vec![],
                rack: Some("eu-west-1a".into()),
            },
            MetadataRecord::FenceBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(4) },
            MetadataRecord::UnfenceBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(4) },
            MetadataRecord::Topic { name: "t".into(), topic_id: [5; 16], configs: [("a".into(), "b".into())].into() },
            MetadataRecord::Partition {
                topic_id: [5; 16],
                partition: 0,
                replicas: ids(&[1, 2]),
                isr: ids(&[1]),
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(3),
                partition_epoch: PartitionEpoch(9),
            },
            MetadataRecord::PartitionChange { topic_id: [5; 16], partition: 0, leader: Some(NodeId::NONE), isr: None },
            MetadataRecord::PartitionChange { topic_id: [5; 16], partition: 0, leader: None, isr: Some(ids(&[2])) },
            MetadataRecord::Reassign {
                topic_id: [5; 16],
                partition: 0,
                replicas: ids(&[3, 2, 1]),
                isr: ids(&[2]),
                leader: NodeId(2),
                reassignment: Some(Reassignment { original: ids(&[1, 2]), target: ids(&[3, 2]) }),
            },
            MetadataRecord::Config { resource: ConfigResource::Topic("t".into()), name: "retention.ms".into(), value: Some("1".into()) },
            MetadataRecord::Config { resource: ConfigResource::Broker(None), name: "log.retention.ms".into(), value: None },
            MetadataRecord::Config { resource: ConfigResource::Broker(Some(NodeId(2))), name: "x".into(), value: Some(String::new()) },
            MetadataRecord::ClientQuota {
                entity: QuotaEntity::new(vec![("user".into(), Some("u".into())), ("client-id".into(), None)]).unwrap(),
                key: "producer_byte_rate".into(),
                value: Some(QuotaValue::new(1024.0)),
            },
            MetadataRecord::ClientQuota { entity: QuotaEntity::new(vec![("ip".into(), None)]).unwrap(), key: "connection_creation_rate".into(), value: None },
            MetadataRecord::RemoveTopic { topic_id: [5; 16] },
        ];
        let bytes = encode_records(&records);
        assert_eq!(decode_records(&bytes), Ok(records));
        for cut in 0..bytes.len() {
            assert!(decode_records(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_records(&[1, 0, 0, 0, 0]), Err(DecodeError::Version(1)));
        assert!(decode_records(&[0, 255, 255, 255, 255]).is_err());
    }

    // Guards log compatibility across the rack field: a registration without a rack is still
    // written at record version 0 (which nodes that predate racks read), only tag 0 knows
    // version 1, and a version-0 registration decodes without a rack.
    #[test]
    fn register_broker_without_rack_keeps_record_version_zero() {
        let record = |rack: Option<&str>| MetadataRecord::RegisterBroker {
            broker_id: NodeId(1),
            broker_epoch: BrokerEpoch(1),
            incarnation_id: [1; 16],
            endpoints: vec![],
            rack: rack.map(str::to_owned),
        };
        // [batch version][count: u32] then the record's [tag][version].
        let at = 1 + 4 + 1;
        let plain = encode_records(&[record(None)]);
        assert_eq!((plain[at - 1], plain[at]), (0, RECORD_VERSION));
        let racked = encode_records(&[record(Some("r1"))]);
        assert_eq!(racked[at], REGISTER_BROKER_RACK_VERSION);
        assert_eq!(decode_records(&racked), Ok(vec![record(Some("r1"))]));
        // Version 1 on another record is unknown.
        let fence = encode_records(&[MetadataRecord::FenceBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1) }]);
        let mut bumped = fence.to_vec();
        bumped[at] = REGISTER_BROKER_RACK_VERSION;
        assert_eq!(decode_records(&bumped), Err(DecodeError::Version(REGISTER_BROKER_RACK_VERSION)));
    }

    fn racked<'a>(brokers: &[(i32, &'a str)]) -> Vec<(NodeId, Option<&'a str>)> {
        brokers.iter().map(|(id, rack)| (NodeId(*id), Some(*rack))).collect()
    }

    // Guards KIP-36's promise: with as many racks as replicas, no rack holds two replicas of a
    // partition (losing a rack loses one replica), and leaders still spread evenly.
    #[test]
    fn rack_aware_placement_puts_each_replica_on_its_own_rack() {
        let brokers = racked(&[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]);
        let rack_of: BTreeMap<NodeId, &str> = brokers.iter().map(|(id, r)| (*id, r.unwrap())).collect();
        for (start, shift) in [(0, 0), (1, 0), (2, 3), (5, 4)] {
            let placed = assign_replicas(&brokers, 24, 3, start, shift).unwrap();
            let mut leaders = BTreeMap::<NodeId, usize>::new();
            let mut replicas = BTreeMap::<NodeId, usize>::new();
            for partition in &placed {
                let racks: BTreeSet<&str> = partition.iter().map(|r| rack_of[r]).collect();
                assert_eq!(racks.len(), 3, "{partition:?} from start {start}, shift {shift}");
                *leaders.entry(partition[0]).or_default() += 1;
                for r in partition {
                    *replicas.entry(*r).or_default() += 1;
                }
            }
            assert_eq!(leaders.len(), 6);
            assert!(leaders.values().all(|n| *n == 4), "leaders {leaders:?}");
            assert!(replicas.values().all(|n| *n == 12), "replicas {replicas:?}");
        }
        // Kafka's getRackAlternatedBrokerList: racks by name, brokers by id within a rack.
        let alternated = rack_alternated_brokers(&[(NodeId(4), "b"), (NodeId(1), "a"), (NodeId(3), "b"), (NodeId(2), "a"), (NodeId(5), "c")]);
        let order: Vec<i32> = alternated.iter().map(|(id, _)| id.0).collect();
        assert_eq!(order, [1, 3, 5, 2, 4]);
        // Kafka's golden case (AdminRackAwareTest.testGetRackAlternatedBrokerListAndAssignReplicasToBrokers).
        let brokers = racked(&[(0, "rack1"), (1, "rack3"), (2, "rack3"), (3, "rack2"), (4, "rack2"), (5, "rack1")]);
        let placed = assign_replicas(&brokers, 7, 3, 0, 0).unwrap();
        let golden = [[0, 3, 1], [3, 1, 5], [1, 5, 4], [5, 4, 2], [4, 2, 0], [2, 0, 3], [0, 4, 2]];
        let expected: Vec<Vec<NodeId>> = golden.iter().map(|r| ids(r)).collect();
        assert_eq!(placed, expected);
    }

    // Guards Kafka's refusal to place when only some brokers have a rack ("Not all brokers have
    // rack information"): a half-racked placement would silently give up rack safety.
    #[test]
    fn create_topics_refuses_when_only_some_brokers_have_racks() {
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers_in(&[(1, Some("a")), (2, Some("b")), (3, None)]);
        let result = c.create_topic("t", 3, 2, &[]);
        assert!(matches!(&result.error, Some(ControllerError::InvalidReplicaAssignment(m)) if m.contains("Not all brokers have rack")), "{result:?}");
        assert!(c.image().topic_by_name("t").is_none());

        // Every broker racked: each partition spans three racks, through CreateTopics and
        // CreatePartitions alike.
        let mut c = Cluster::new(&[100], &[]);
        c.start_brokers_in(&[(1, Some("a")), (2, Some("a")), (3, Some("b")), (4, Some("b")), (5, Some("c")), (6, Some("c"))]);
        assert_eq!(c.image().brokers()[&NodeId(3)].rack.as_deref(), Some("b"));
        assert_eq!(c.create_topic("t", 6, 3, &[]).error, None);
        let req = CreatePartitionsRequest {
            topics: vec![CreatePartitionsTopic { name: "t".into(), count: 12, assignments: None }],
            validate_only: false,
        };
        assert!(matches!(c.request(|ctl, now, id| ctl.handle_create_partitions(now, id, req)), Response::CreatePartitions(r) if r == [None]));
        let rack = |id: &NodeId| c.image().brokers()[id].rack.clone().unwrap();
        let topic = c.image().topic_by_name("t").unwrap();
        assert_eq!(topic.partitions.len(), 12);
        for p in &topic.partitions {
            let racks: BTreeSet<String> = p.replicas.iter().map(rack).collect();
            assert_eq!(racks.len(), 3, "{:?}", p.replicas);
        }
    }

    // Guards "untrusted input never panics": every decoder of bytes that cross sockets or come
    // off disk returns an error on mutated and random input instead of panicking or allocating
    // what a forged count asks for.
    #[test]
    fn decoders_survive_mutated_and_random_bytes() {
        let valid = [
            encode_records(&[MetadataRecord::Partition {
                topic_id: [5; 16],
                partition: 0,
                replicas: ids(&[1, 2]),
                isr: ids(&[1]),
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(3),
                partition_epoch: PartitionEpoch(9),
            }]),
            Message::Append {
                term: Term(2),
                prev_log_index: Index(1),
                prev_log_term: Term(1),
                leader_commit: Index(1),
                entries: vec![Entry { index: Index(2), term: Term(2), data: Bytes::from_static(b"xy") }],
            }
            .encode(),
            Entry { index: Index(3), term: Term(1), data: Bytes::from_static(b"z") }.encode(),
            HardState { term: Term(1), voted_for: Some(NodeId(1)) }.encode(),
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut random = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let mut bytes = valid[round % valid.len()].to_vec();
            if round % 5 == 4 {
                bytes = (0..random() % 64).map(|_| random() as u8).collect();
            } else {
                for _ in 0..1 + random() % 4 {
                    let i = (random() as usize) % bytes.len();
                    bytes[i] = random() as u8;
                }
            }
            let bytes = Bytes::from(bytes);
            let _ = decode_records(&bytes);
            let _ = Message::decode(&bytes);
            let _ = Entry::decode(&bytes);
            let _ = HardState::decode(&bytes);
        }
    }

    // Guards determinism of replay: a record that does not fit the image is refused and
    // changes nothing, the same way on every replica.
    #[test]
    fn apply_refuses_inconsistent_records_and_leaves_the_image_unchanged() {
        let mut image = MetadataImage::default();
        let topic = MetadataRecord::Topic { name: "t".into(), topic_id: [1; 16], configs: BTreeMap::new() };
        image.apply(&topic).unwrap();
        let before = image.clone();
        let bad = [
            MetadataRecord::Partition {
                topic_id: [1; 16],
                partition: 1,
                replicas: ids(&[1]),
                isr: ids(&[1]),
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            },
            MetadataRecord::Partition {
                topic_id: [1; 16],
                partition: 0,
                replicas: ids(&[1, 2]),
                isr: ids(&[3]),
                leader: NodeId(3),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: PartitionEpoch(0),
            },
            MetadataRecord::PartitionChange { topic_id: [1; 16], partition: 0, leader: None, isr: None },
            MetadataRecord::FenceBroker { broker_id: NodeId(1), broker_epoch: BrokerEpoch(1) },
            topic,
        ];
        for record in bad {
            assert!(image.apply(&record).is_err(), "{record:?}");
            assert_eq!(image, before);
        }
    }

    // ---- SCRAM credentials (KIP-554) ----

    const SHA256: i8 = 1;
    const SHA512: i8 = 2;

    fn scram_credential(tag: u8, iterations: i32) -> ScramCredential {
        ScramCredential { salt: vec![tag; 16], stored_key: vec![tag; 32], server_key: vec![tag ^ 0xff; 32], iterations }
    }

    fn upsert(name: &str, mechanism: i8, tag: u8, iterations: i32) -> ScramCredentialUpsertion {
        ScramCredentialUpsertion { name: name.into(), mechanism, credential: scram_credential(tag, iterations) }
    }

    fn delete(name: &str, mechanism: i8) -> ScramCredentialDeletion {
        ScramCredentialDeletion { name: name.into(), mechanism }
    }

    impl Cluster {
        /// Each user's result, in the order of the answer.
        fn alter_scram(
            &mut self,
            deletions: Vec<ScramCredentialDeletion>,
            upsertions: Vec<ScramCredentialUpsertion>,
        ) -> Vec<(String, Option<ErrorCode>, String)> {
            let req = AlterUserScramCredentialsRequest { deletions, upsertions };
            match self.request(|c, now, id| c.handle_alter_user_scram_credentials(now, id, req)) {
                Response::AlterUserScramCredentials(results) => results
                    .into_iter()
                    .map(|r| (r.user, r.error.as_ref().map(|e| e.code()), r.error.map(|e| e.to_string()).unwrap_or_default()))
                    .collect(),
                other => panic!("{other:?}"),
            }
        }

        fn scram_of(&self, user: &str) -> Vec<(Mechanism, i32)> {
            self.image().scram_credentials_of(user).map(|(m, c)| (m, c.iterations)).collect()
        }
    }

    fn ok(user: &str) -> (String, Option<ErrorCode>, String) {
        (user.into(), None, String::new())
    }

    fn failed(user: &str, code: ErrorCode, message: &str) -> (String, Option<ErrorCode>, String) {
        (user.into(), Some(code), message.into())
    }

    // Guards KIP-554's storage: credentials reach every member's image only through committed
    // metadata records, replace one another per (user, mechanism), are removed by deletion, and
    // survive a change of active controller (replayed from the log like every record).
    #[test]
    fn scram_credentials_upsert_replace_and_delete_through_the_metadata_log() {
        let mut c = Cluster::new(&[100, 101, 102], &[7]);
        let results = c.alter_scram(vec![], vec![upsert("alice", SHA256, 1, 4096), upsert("bob", SHA512, 2, 8192)]);
        assert_eq!(results, vec![ok("alice"), ok("bob")]);
        assert_eq!(c.image().scram_credential(Mechanism::ScramSha256, "alice"), Some(&scram_credential(1, 4096)));
        assert_eq!(c.image().scram_credential(Mechanism::ScramSha512, "alice"), None);
        assert_eq!(c.scram_of("bob"), vec![(Mechanism::ScramSha512, 8192)]);
        // A second mechanism for alice, then a replacement of her first.
        assert_eq!(c.alter_scram(vec![], vec![upsert("alice", SHA512, 3, 10_000)]), vec![ok("alice")]);
        assert_eq!(c.alter_scram(vec![], vec![upsert("alice", SHA256, 4, 16_384)]), vec![ok("alice")]);
        assert_eq!(c.scram_of("alice"), vec![(Mechanism::ScramSha256, 16_384), (Mechanism::ScramSha512, 10_000)]);
        assert_eq!(c.alter_scram(vec![delete("bob", SHA512)], vec![]), vec![ok("bob")]);
        assert_eq!(c.scram_of("bob"), vec![]);
        let listed: Vec<(&str, Mechanism, i32)> = c.image().scram_credentials().map(|(u, m, cr)| (u, m, cr.iterations)).collect();
        assert_eq!(listed, vec![("alice", Mechanism::ScramSha256, 16_384), ("alice", Mechanism::ScramSha512, 10_000)]);

        let to = c.now_ms + 500;
        c.advance_to(to);
        let reference = c.image().clone();
        for (id, node) in &c.nodes {
            assert_eq!(node.controller.image(), &reference, "node {id} diverged");
        }
        let old = c.active().unwrap();
        c.nodes.get_mut(&old).unwrap().up = false;
        c.run_until(|c| c.active().is_some_and(|a| a != old));
        assert_eq!(c.scram_of("alice"), vec![(Mechanism::ScramSha256, 16_384), (Mechanism::ScramSha512, 10_000)]);
        // The new controller's pending view holds them too: deleting one works at once.
        assert_eq!(c.alter_scram(vec![delete("alice", SHA512)], vec![]), vec![ok("alice")]);
        assert_eq!(c.scram_of("alice"), vec![(Mechanism::ScramSha256, 16_384)]);
    }

    // Guards Kafka's ScramControlManager validation: codes and messages per user, a user named
    // twice failing whole with DUPLICATE_RESOURCE (whatever the mechanisms), and the other
    // users of the request unaffected.
    #[test]
    fn scram_alterations_are_validated_per_user_as_kafka_does() {
        use ErrorCode::{DuplicateResource, ResourceNotFound, UnacceptableCredential, UnsupportedSaslMechanism};
        let mut c = Cluster::new(&[100], &[]);
        let set = vec![upsert("keep", SHA256, 1, 4096), upsert("twice-deleted", SHA256, 1, 4096)];
        assert_eq!(c.alter_scram(vec![], set), vec![ok("keep"), ok("twice-deleted")]);
        let set = vec![upsert("twice-deleted", SHA512, 1, 4096)];
        assert_eq!(c.alter_scram(vec![], set), vec![ok("twice-deleted")]);
        let duplicate = "A user credential cannot be altered twice in the same request";
        let results = c.alter_scram(
            vec![
                delete("nobody", SHA256),
                delete("keep", SHA512),
                delete("", SHA256),
                delete("twice-deleted", SHA256),
                delete("twice-deleted", SHA512),
                delete("keep-and-set", SHA256),
                delete("odd", 3),
            ],
            vec![
                upsert("few", SHA256, 2, 4095),
                upsert("many", SHA512, 2, 16_385),
                upsert("lowest", SHA256, 2, 4096),
                upsert("highest", SHA512, 2, 16_384),
                upsert("both", SHA256, 2, 4096),
                upsert("both", SHA512, 2, 4096),
                upsert("keep-and-set", SHA256, 2, 4096),
                upsert("", 9, 2, 1),
                upsert("plain", 0, 2, 4096),
            ],
        );
        assert_eq!(
            results,
            vec![
                failed("nobody", ResourceNotFound, "Attempt to delete a user credential that does not exist"),
                failed("keep", ResourceNotFound, "Attempt to delete a user credential that does not exist"),
                failed("", UnacceptableCredential, "Username must not be empty"),
                failed("twice-deleted", DuplicateResource, duplicate),
                failed("keep-and-set", ResourceNotFound, "Attempt to delete a user credential that does not exist"),
                failed("odd", UnsupportedSaslMechanism, "Unknown SCRAM mechanism"),
                failed("few", UnacceptableCredential, "Too few iterations"),
                failed("many", UnacceptableCredential, "Too many iterations"),
                ok("lowest"),
                ok("highest"),
                failed("both", DuplicateResource, duplicate),
                failed("plain", UnsupportedSaslMechanism, "Unknown SCRAM mechanism"),
            ]
        );
        // Only the valid users were written; "both" lost its first (valid) upsertion too, and
        // "twice-deleted" kept both credentials.
        let users: Vec<&str> = c.image().scram_credentials().map(|(u, _, _)| u).collect();
        assert_eq!(users, vec!["highest", "keep", "lowest", "twice-deleted", "twice-deleted"]);
        // A user whose first alteration already failed keeps that error, not DUPLICATE_RESOURCE
        // (Kafka skips users with an error).
        let results = c.alter_scram(vec![delete("nobody", SHA256), delete("nobody", SHA512)], vec![]);
        assert_eq!(results, vec![failed("nobody", ResourceNotFound, "Attempt to delete a user credential that does not exist")]);

        // A user deleted and set in one request is a duplicate: its credential stays.
        let results = c.alter_scram(vec![delete("keep", SHA256)], vec![upsert("keep", SHA512, 5, 4096)]);
        assert_eq!(results, vec![failed("keep", DuplicateResource, duplicate)]);
        assert_eq!(c.scram_of("keep"), vec![(Mechanism::ScramSha256, 4096)]);
        // A third mention keeps the duplicate error; the user appears once in the answer.
        let results = c.alter_scram(
            vec![delete("keep", SHA256), delete("keep", SHA256)],
            vec![upsert("keep", SHA256, 6, 4096)],
        );
        assert_eq!(results, vec![failed("keep", DuplicateResource, duplicate)]);
        assert_eq!(c.image().scram_credential(Mechanism::ScramSha256, "keep"), Some(&scram_credential(1, 4096)));
    }

    // Guards the forwarding contract: only the active controller alters credentials; a standby
    // answers NOT_CONTROLLER for every user so the broker retries elsewhere.
    #[test]
    fn standby_controller_refuses_scram_alterations_with_not_controller() {
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        let standby = *c.nodes.keys().find(|id| Some(**id) != c.active()).unwrap();
        let req = AlterUserScramCredentialsRequest { deletions: vec![delete("a", SHA256)], upsertions: vec![upsert("b", SHA256, 1, 4096)] };
        let ctl = &mut c.nodes.get_mut(&standby).unwrap().controller;
        ctl.handle_alter_user_scram_credentials(0, 5, req);
        let Some(Action::Reply(5, Response::AlterUserScramCredentials(results))) = ctl.poll_action() else { panic!() };
        let users: Vec<(&str, Option<ErrorCode>)> = results.iter().map(|r| (r.user.as_str(), r.error.as_ref().map(|e| e.code()))).collect();
        assert_eq!(users, vec![("a", Some(ErrorCode::NotController)), ("b", Some(ErrorCode::NotController))]);
    }

    // Guards the metadata log's format: SCRAM records round-trip beside the older records
    // (whose tags and encodings are unchanged), an unknown mechanism byte is a decode error,
    // and replay refuses what Kafka's replay would throw on, leaving the image unchanged.
    #[test]
    fn scram_records_round_trip_and_bad_ones_are_refused() {
        let records = vec![
            MetadataRecord::ProducerIds { broker_id: NodeId(1), broker_epoch: BrokerEpoch(2), next_producer_id: 1000 },
            MetadataRecord::UserScramCredential { name: "alice".into(), mechanism: Mechanism::ScramSha256, credential: scram_credential(1, 4096) },
            MetadataRecord::UserScramCredential { name: "bob".into(), mechanism: Mechanism::ScramSha512, credential: scram_credential(2, 16_384) },
            MetadataRecord::RemoveUserScramCredential { name: "alice".into(), mechanism: Mechanism::ScramSha256 },
        ];
        let bytes = encode_records(&records);
        assert_eq!(decode_records(&bytes), Ok(records.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_records(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // An entry written before SCRAM records existed still decodes to the same records.
        let old = encode_records(&records[..1]);
        assert_eq!(&old[..], &[0, 1, 0, 0, 0, 7, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 232, 3, 0, 0, 0, 0, 0, 0]);
        let remove = encode_records(&records[3..]);
        let mechanism_at = remove.len() - 1;
        assert_eq!(remove[mechanism_at], 1);
        for bad in [0u8, 3, 255] {
            let mut mutated = remove.to_vec();
            mutated[mechanism_at] = bad;
            assert_eq!(decode_records(&mutated), Err(DecodeError::Invalid("unknown SCRAM mechanism")));
        }

        let mut image = MetadataImage::default();
        for record in &records {
            image.apply(record).unwrap();
        }
        image.check_invariants();
        assert_eq!(image.scram_credential(Mechanism::ScramSha256, "alice"), None);
        assert_eq!(image.scram_credential(Mechanism::ScramSha512, "bob"), Some(&scram_credential(2, 16_384)));
        let before = image.clone();
        let bad = [
            MetadataRecord::RemoveUserScramCredential { name: "alice".into(), mechanism: Mechanism::ScramSha256 },
            MetadataRecord::RemoveUserScramCredential { name: "bob".into(), mechanism: Mechanism::ScramSha256 },
            MetadataRecord::UserScramCredential { name: "carol".into(), mechanism: Mechanism::Plain, credential: scram_credential(3, 4096) },
            MetadataRecord::UserScramCredential { name: "carol".into(), mechanism: Mechanism::ScramSha256, credential: scram_credential(3, 0) },
        ];
        for record in bad {
            assert!(image.apply(&record).is_err(), "{record:?}");
            assert_eq!(image, before);
        }
    }

    // ---- ACLs (KIP-140 APIs, KRaft's AclControlManager) ----

    use crate::acl::PatternFilter;

    fn binding(
        resource_type: ResourceType,
        name: &str,
        pattern_type: PatternType,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.into(),
            pattern_type,
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn topic_acl(name: &str, pattern_type: PatternType, principal: &str, operation: Operation) -> AclBinding {
        binding(ResourceType::Topic, name, pattern_type, principal, operation, Permission::Allow)
    }

    impl Cluster {
        /// Each binding's error code and message, in request order.
        fn create_acls(&mut self, acls: Vec<AclBinding>) -> Vec<Option<(ErrorCode, String)>> {
            match self.request(|c, now, id| c.handle_create_acls(now, id, acls)) {
                Response::CreateAcls(results) => results.into_iter().map(|r| r.error.map(|e| (e.code(), e.to_string()))).collect(),
                other => panic!("{other:?}"),
            }
        }

        /// Each filter's deleted bindings, in request order.
        fn delete_acls(&mut self, filters: Vec<AclBindingFilter>) -> Vec<Vec<AclBinding>> {
            match self.request(|c, now, id| c.handle_delete_acls(now, id, filters)) {
                Response::DeleteAcls(results) => results
                    .into_iter()
                    .map(|r| {
                        assert_eq!(r.error, None);
                        r.deleted
                    })
                    .collect(),
                other => panic!("{other:?}"),
            }
        }

        fn acls(&self) -> Vec<AclBinding> {
            self.image().acls().iter().cloned().collect()
        }
    }

    // Guards KIP-140 on KRaft: ACLs reach every member's image only through committed records,
    // an ACL created twice is stored (and written) once, DescribeAcls' filters select from the
    // image, DeleteAcls lists a binding under every filter that matched it, and the ACLs survive
    // a change of active controller.
    #[test]
    fn acls_are_created_described_and_deleted_by_filter_through_the_metadata_log() {
        use Operation::{Read, Write};
        use PatternType::{Literal, Prefixed};
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        let orders = topic_acl("orders", Literal, "User:alice", Read);
        let pay = topic_acl("pay", Prefixed, "User:alice", Write);
        let group = binding(ResourceType::Group, "g1", Literal, "User:bob", Read, Permission::Deny);
        let results = c.create_acls(vec![orders.clone(), pay.clone(), group.clone(), orders.clone()]);
        assert_eq!(results, vec![None; 4]);
        assert_eq!(c.acls(), vec![orders.clone(), pay.clone(), group.clone()]);

        let applied = c.controller().applied_index();
        assert_eq!(c.create_acls(vec![pay.clone()]), vec![None]);
        assert_eq!(c.controller().applied_index(), applied, "an existing ACL is not written again");

        let match_payments = AclBindingFilter {
            resource_type: Some(ResourceType::Topic),
            resource_name: Some("payments".into()),
            pattern: PatternFilter::Match,
            ..AclBindingFilter::any()
        };
        assert_eq!(c.image().acls().matching(&match_payments).collect::<Vec<_>>(), vec![&pay]);
        let alice = AclBindingFilter { principal: Some("User:alice".into()), ..AclBindingFilter::any() };
        assert_eq!(c.image().acls().matching(&alice).count(), 2);

        let literal_topics =
            AclBindingFilter { resource_type: Some(ResourceType::Topic), pattern: PatternFilter::Literal, ..AclBindingFilter::any() };
        let nobody = AclBindingFilter { principal: Some("User:nobody".into()), ..AclBindingFilter::any() };
        let deleted = c.delete_acls(vec![literal_topics, alice.clone(), nobody]);
        assert_eq!(deleted, vec![vec![orders.clone()], vec![orders.clone(), pay.clone()], vec![]]);
        assert_eq!(c.acls(), vec![group.clone()]);
        let applied = c.controller().applied_index();
        assert_eq!(c.delete_acls(vec![alice]), vec![vec![]]);
        assert_eq!(c.controller().applied_index(), applied, "a delete that matched nothing writes nothing");

        let to = c.now_ms + 500;
        c.advance_to(to);
        let reference = c.image().clone();
        for (id, node) in &c.nodes {
            assert_eq!(node.controller.image(), &reference, "node {id} diverged");
        }
        let old = c.active().unwrap();
        c.nodes.get_mut(&old).unwrap().up = false;
        c.run_until(|c| c.active().is_some_and(|a| a != old));
        assert_eq!(c.acls(), vec![group.clone()]);
        assert_eq!(c.delete_acls(vec![AclBindingFilter::any()]), vec![vec![group]]);
        assert!(c.image().acls().is_empty());
    }

    // Guards AclControlManager.validateNewAcl: a bad binding fails alone with INVALID_REQUEST and
    // its message, and the request's good bindings are still created.
    #[test]
    fn invalid_acl_bindings_are_refused_one_by_one() {
        let mut c = Cluster::new(&[100], &[]);
        let good = topic_acl("orders", PatternType::Literal, "User:alice", Operation::Read);
        let cluster = |name: &str| {
            binding(ResourceType::Cluster, name, PatternType::Literal, "User:alice", Operation::Alter, Permission::Allow)
        };
        let results = c.create_acls(vec![
            cluster("my-cluster"),
            good.clone(),
            topic_acl("", PatternType::Literal, "User:alice", Operation::Read),
            topic_acl("orders", PatternType::Literal, "alice", Operation::Read),
            cluster(crate::acl::CLUSTER_NAME),
        ]);
        let invalid = |m: &str| Some((ErrorCode::InvalidRequest, m.to_string()));
        assert_eq!(
            results,
            vec![
                invalid("The only valid name for the CLUSTER resource is kafka-cluster"),
                None,
                invalid("Invalid empty resource name"),
                invalid("expected a string in format principalType:principalName but got alice"),
                None,
            ]
        );
        assert_eq!(c.acls(), vec![good, cluster(crate::acl::CLUSTER_NAME)]);
        let applied = c.controller().applied_index();
        assert_eq!(c.create_acls(vec![cluster("other")]), vec![invalid("The only valid name for the CLUSTER resource is kafka-cluster")]);
        assert_eq!(c.controller().applied_index(), applied);
    }

    // Guards KIP-546 on KRaft: quotas reach the image through committed records, a bad key or
    // value refuses only its own entity, validate_only commits nothing, and removing an
    // entity's last key removes the entity.
    #[test]
    fn client_quotas_are_set_validated_and_removed_through_the_metadata_log() {
        use crate::quota::{QuotaEntity, QuotaValue};
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        let user = QuotaEntity::new(vec![("user".into(), Some("alice".into()))]).unwrap();
        let ip = QuotaEntity::new(vec![("ip".into(), None)]).unwrap();
        let set = |entity: &QuotaEntity, key: &str, value: Option<f64>| QuotaAlteration {
            entity: entity.clone(),
            ops: vec![(key.to_owned(), value.map(QuotaValue::new))],
        };
        let mut alter = |c: &mut Cluster, entries: Vec<QuotaAlteration>, validate_only: bool| {
            match c.request(|ctl, now, id| ctl.handle_alter_client_quotas(now, id, AlterClientQuotasRequest { entries, validate_only })) {
                Response::AlterClientQuotas(results) => results.into_iter().map(|r| r.map(|e| e.code())).collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            }
        };
        let results = alter(
            &mut c,
            vec![set(&user, "producer_byte_rate", Some(1024.0)), set(&ip, "producer_byte_rate", Some(5.0)), set(&user, "request_percentage", Some(-1.0))],
            false,
        );
        assert_eq!(results, vec![None, Some(ErrorCode::InvalidRequest), Some(ErrorCode::InvalidRequest)]);
        for node in c.nodes.values() {
            let quotas = node.controller.image().client_quotas();
            assert_eq!(quotas.len(), 1);
            assert_eq!(quotas[&user]["producer_byte_rate"].get(), 1024.0);
        }
        let applied = c.controller().applied_index();
        assert_eq!(alter(&mut c, vec![set(&user, "producer_byte_rate", None)], true), vec![None]);
        assert_eq!(c.controller().applied_index(), applied);
        assert_eq!(alter(&mut c, vec![set(&user, "producer_byte_rate", None)], false), vec![None]);
        assert!(c.image().client_quotas().is_empty());
    }

    #[test]
    fn standby_controller_refuses_acl_requests_with_not_controller() {
        let mut c = Cluster::new(&[100, 101, 102], &[]);
        let standby = *c.nodes.keys().find(|id| Some(**id) != c.active()).unwrap();
        let ctl = &mut c.nodes.get_mut(&standby).unwrap().controller;
        let acl = topic_acl("t", PatternType::Literal, "User:a", Operation::Read);
        ctl.handle_create_acls(0, 5, vec![acl.clone(), acl]);
        let Some(Action::Reply(5, Response::CreateAcls(results))) = ctl.poll_action() else { panic!() };
        assert_eq!(results, vec![AclCreateResult { error: Some(ControllerError::NotController) }; 2]);
        ctl.handle_delete_acls(0, 6, vec![AclBindingFilter::any()]);
        let Some(Action::Reply(6, Response::DeleteAcls(results))) = ctl.poll_action() else { panic!() };
        assert_eq!(results, vec![AclDeleteResult { error: Some(ControllerError::NotController), deleted: vec![] }]);
    }

    // Guards the metadata log's format: ACL records round-trip beside the older records, codes
    // a binding cannot hold are decode errors, and replay refuses a duplicate, a removal of an
    // absent ACL and an invalid binding, leaving the image unchanged.
    #[test]
    fn acl_records_round_trip_and_bad_ones_are_refused() {
        let pay = topic_acl("pay", PatternType::Prefixed, "User:alice", Operation::Write);
        let all = binding(ResourceType::TransactionalId, "*", PatternType::Literal, "User:*", Operation::All, Permission::Deny);
        let records = vec![
            MetadataRecord::RemoveUserScramCredential { name: "alice".into(), mechanism: Mechanism::ScramSha256 },
            MetadataRecord::AccessControlEntry { acl: pay.clone() },
            MetadataRecord::AccessControlEntry { acl: all.clone() },
            MetadataRecord::RemoveAccessControlEntry { acl: pay.clone() },
        ];
        let bytes = encode_records(&records);
        assert_eq!(decode_records(&bytes), Ok(records.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_records(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let entry = encode_records(&records[1..2]);
        // [batch version][count u32][tag 10][record version][resource type]...
        assert_eq!(&entry[..8], &[0, 1, 0, 0, 0, 10, 0, ResourceType::Topic.code() as u8]);
        let permission_at = entry.len() - 1;
        assert_eq!(entry[permission_at], Permission::Allow.code() as u8);
        for (at, bad, why) in [(7, 1u8, "unknown ACL resource type"), (permission_at, 1, "unknown ACL permission"), (permission_at - 1, 15, "unknown ACL operation")] {
            let mut mutated = entry.to_vec();
            mutated[at] = bad;
            assert_eq!(decode_records(&mutated), Err(DecodeError::Invalid(why)));
        }

        let mut image = MetadataImage::default();
        for record in &records[1..] {
            image.apply(record).unwrap();
        }
        image.check_invariants();
        assert_eq!(image.acls().iter().collect::<Vec<_>>(), vec![&all]);
        let before = image.clone();
        let bad = [
            MetadataRecord::AccessControlEntry { acl: all.clone() },
            MetadataRecord::RemoveAccessControlEntry { acl: pay.clone() },
            MetadataRecord::AccessControlEntry {
                acl: binding(ResourceType::Cluster, "c", PatternType::Literal, "User:a", Operation::Alter, Permission::Allow),
            },
        ];
        for record in bad {
            assert!(image.apply(&record).is_err(), "{record:?}");
            assert_eq!(image, before);
        }
    }
}
