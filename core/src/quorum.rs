//! A quorum member: the metadata log's [`Raft`] and the [`Controller`] over it, joined by the
//! rules both executors used to repeat (the broker's `io/src/cluster.rs`, the simulator's
//! nodes): every committed entry goes to the controller, every controller proposal to Raft,
//! a new Raft leader to the controller. What leaves is what needs IO: the metadata log's disk
//! actions, Raft messages, and the answers to controller requests.
//!
//! Driving it (the executor's part):
//! 1. Hand in messages, requests ([`Quorum::request`]), completions and timeouts; then drain
//!    [`Quorum::poll_output`] until it is `None`.
//! 2. Perform the disk outputs in the order given: [`Output::PersistVote`] and
//!    [`Output::Append`] (written and synced) are reported with [`Quorum::handle_completion`]
//!    once durable; [`Output::Truncate`] needs no report.
//! 3. Call [`Quorum::handle_timeout`] at [`Quorum::poll_timeout`].

use std::collections::VecDeque;

use crate::controller::{Controller, RequestId, Response};
use crate::controller_rpc::ControllerRequest;
use crate::ids::{NodeId, Term};
use crate::raft::{self, Completion, Entry, Index, Message, Raft};

/// What the executor performs for the quorum member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Persist the vote atomically; then [`Completion::VotePersisted`].
    PersistVote { term: Term, voted_for: Option<NodeId> },
    /// Remove entries `from..` from the metadata log.
    Truncate { from: Index },
    /// Write and sync these entries (right after the log's end); then
    /// [`Completion::Persisted`] through the last.
    Append { entries: Vec<Entry> },
    Send { to: NodeId, message: Message },
    /// The answer to the controller request handed in as `id`.
    Reply { id: RequestId, response: Response },
    /// These committed entries are now in the controller's image.
    Applied { entries: Vec<Entry> },
    /// Raft's view of the leader changed (the controller has been told).
    Leader { term: Term, leader: Option<NodeId> },
}

pub struct Quorum {
    raft: Raft,
    controller: Controller,
    outputs: VecDeque<Output>,
}

impl Quorum {
    pub fn new(raft: Raft, controller: Controller) -> Quorum {
        Quorum { raft, controller, outputs: VecDeque::new() }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn handle_message(&mut self, now_ms: i64, from: NodeId, message: Message) {
        self.raft.handle_message(now_ms, from, message);
    }

    pub fn handle_completion(&mut self, now_ms: i64, completion: Completion) {
        self.raft.handle_completion(now_ms, completion);
    }

    /// A request for the controller, answered as [`Output::Reply`] with `id` (NOT_CONTROLLER
    /// unless this member is the active controller).
    pub fn request(&mut self, now_ms: i64, id: RequestId, request: ControllerRequest) {
        let c = &mut self.controller;
        match request {
            ControllerRequest::RegisterBroker(r) => c.handle_register_broker(now_ms, id, r),
            ControllerRequest::Heartbeat(r) => c.handle_heartbeat(now_ms, id, r),
            ControllerRequest::CreateTopics(r) => c.handle_create_topics(now_ms, id, r),
            ControllerRequest::DeleteTopics(r) => c.handle_delete_topics(now_ms, id, r),
            ControllerRequest::AlterPartition(r) => c.handle_alter_partition(now_ms, id, r),
            ControllerRequest::AllocateProducerIds(r) => c.handle_allocate_producer_ids(now_ms, id, r),
            ControllerRequest::AlterUserScramCredentials(r) => c.handle_alter_user_scram_credentials(now_ms, id, r),
            ControllerRequest::CreateAcls(r) => c.handle_create_acls(now_ms, id, r),
            ControllerRequest::DeleteAcls(r) => c.handle_delete_acls(now_ms, id, r),
            ControllerRequest::AlterConfigs(r) => c.handle_alter_configs(now_ms, id, r),
            ControllerRequest::CreatePartitions(r) => c.handle_create_partitions(now_ms, id, r),
            ControllerRequest::AlterPartitionReassignments(r) => c.handle_alter_partition_reassignments(now_ms, id, r),
            ControllerRequest::ElectLeaders(r) => c.handle_elect_leaders(now_ms, id, r),
            ControllerRequest::AlterClientQuotas(r) => c.handle_alter_client_quotas(now_ms, id, r),
        }
    }

    pub fn poll_timeout(&self) -> Option<i64> {
        [self.raft.poll_timeout(), self.controller.poll_timeout()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now_ms: i64) {
        if self.raft.poll_timeout().is_some_and(|t| t <= now_ms) {
            self.raft.handle_timeout(now_ms);
        }
        if self.controller.poll_timeout().is_some_and(|t| t <= now_ms) {
            self.controller.handle_timeout(now_ms);
        }
    }

    /// The next output, after running the rules between Raft and the controller to quiet.
    pub fn poll_output(&mut self, now_ms: i64) -> Option<Output> {
        loop {
            if let Some(output) = self.outputs.pop_front() {
                return Some(output);
            }
            let mut progress = false;
            while let Some(action) = self.raft.poll_action() {
                progress = true;
                let output = match action {
                    raft::Action::PersistVote { term, voted_for } => Output::PersistVote { term, voted_for },
                    raft::Action::Truncate { from } => Output::Truncate { from },
                    raft::Action::Append { entries } => Output::Append { entries },
                    raft::Action::Send { to, message } => Output::Send { to, message },
                    raft::Action::Apply { entries } => {
                        for entry in &entries {
                            self.controller.handle_committed(now_ms, entry);
                        }
                        Output::Applied { entries }
                    }
                    raft::Action::Leader { term, leader } => {
                        self.controller.handle_leader(now_ms, term, leader);
                        Output::Leader { term, leader }
                    }
                };
                self.outputs.push_back(output);
            }
            while let Some(action) = self.controller.poll_action() {
                progress = true;
                match action {
                    crate::controller::Action::Propose(bytes) => {
                        // Refused only while Raft is not (or no longer) leader, or full: the
                        // controller learns of that through `Leader`, and its requesters
                        // through their timeouts.
                        if let Err(error) = self.raft.propose(now_ms, bytes) {
                            tracing::debug!(%error, "metadata proposal dropped");
                        }
                    }
                    crate::controller::Action::Reply(id, response) => self.outputs.push_back(Output::Reply { id, response }),
                }
            }
            if !progress && self.outputs.is_empty() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{BrokerHeartbeatRequest, BrokerRegistrationRequest, ControllerConfig, CreatableTopic, CreateTopicsRequest, Endpoint};
    use crate::raft::{HardState, RaftConfig};

    /// Drains `quorum`, performing its disk outputs at once; -> the replies and applied indexes.
    fn drain(quorum: &mut Quorum, now_ms: i64, log: &mut Vec<Entry>) -> (Vec<(RequestId, Response)>, Vec<Index>) {
        let (mut replies, mut applied) = (Vec::new(), Vec::new());
        while let Some(output) = quorum.poll_output(now_ms) {
            match output {
                Output::PersistVote { term, voted_for } => {
                    quorum.handle_completion(now_ms, Completion::VotePersisted { term, voted_for })
                }
                Output::Truncate { from } => log.truncate(from.0 as usize - 1),
                Output::Append { entries } => {
                    let last = entries.last().expect("non-empty");
                    let completion = Completion::Persisted { through: last.index, term: last.term };
                    log.extend(entries);
                    quorum.handle_completion(now_ms, completion);
                }
                Output::Send { .. } | Output::Leader { .. } => {}
                Output::Reply { id, response } => replies.push((id, response)),
                Output::Applied { entries } => applied.extend(entries.iter().map(|e| e.index)),
            }
        }
        (replies, applied)
    }

    // Guards the glue both executors share: a one-voter quorum elects itself, activates its
    // controller, and answers a registration and a CreateTopics only once their records are
    // committed and applied to the image.
    #[test]
    fn a_single_voter_quorum_answers_requests_once_their_records_apply() {
        let me = NodeId(1);
        let raft = Raft::restore(RaftConfig::new(me, vec![me], Vec::new()), 7, 0, HardState::default(), Vec::new()).unwrap();
        let mut quorum = Quorum::new(raft, Controller::new(ControllerConfig::new(me), 7));
        let mut log = Vec::new();
        let mut now = 0;
        while !quorum.controller().is_active() {
            now = quorum.poll_timeout().expect("an election timer").max(now);
            quorum.handle_timeout(now);
            drain(&mut quorum, now, &mut log);
            assert!(now < 60_000, "no election");
        }
        let registration = BrokerRegistrationRequest {
            broker_id: me,
            incarnation_id: [1; 16],
            endpoints: vec![Endpoint { name: "PLAINTEXT".into(), host: "h".into(), port: 1 }],
            rack: None,
        };
        quorum.request(now, 10, ControllerRequest::RegisterBroker(registration));
        let (replies, applied) = drain(&mut quorum, now, &mut log);
        assert!(matches!(&replies[..], [(10, Response::RegisterBroker(r))] if r.error.is_none()), "{replies:?}");
        assert!(!applied.is_empty() && quorum.controller().image().brokers().contains_key(&me));
        let Some((_, Response::RegisterBroker(registered))) = replies.first() else { unreachable!() };
        let broker_epoch = registered.broker_epoch;
        for id in 20.. {
            if !quorum.controller().image().brokers()[&me].fenced {
                break;
            }
            assert!(id < 25, "never unfenced");
            let heartbeat = BrokerHeartbeatRequest {
                broker_id: me,
                broker_epoch,
                current_metadata_offset: quorum.controller().applied_index(),
                want_fence: false,
                want_shutdown: false,
                offline_replicas: Vec::new(),
            };
            quorum.request(now, id, ControllerRequest::Heartbeat(heartbeat));
            drain(&mut quorum, now, &mut log);
        }
        let topic = CreatableTopic { name: "t".into(), num_partitions: 2, replication_factor: 1, configs: Default::default(), assignments: Vec::new() };
        quorum.request(now, 11, ControllerRequest::CreateTopics(CreateTopicsRequest { topics: vec![topic], validate_only: false }));
        let (replies, _) = drain(&mut quorum, now, &mut log);
        assert!(matches!(&replies[..], [(11, Response::CreateTopics(r))] if r[0].error.is_none()), "{replies:?}");
        assert_eq!(quorum.controller().image().topic_by_name("t").map(|t| t.partitions.len()), Some(2));
        assert_eq!(log.len() as u64, quorum.controller().applied_index().0);
    }
}
