//! The controller quorum's Raft, sans IO: leader election and replication of the metadata log
//! among 1, 3 (or any odd number of) voters, plus observers that only receive the log.
//!
//! One [`Raft`] per process that holds the metadata log. Replication is **push-style**
//! (AppendEntries, as in the Raft paper), not KRaft's pull-style Fetch (KIP-595): with one
//! state machine driving both election and replication the safety argument is the paper's,
//! the leader alone decides what to send and when, and observers (broker-only processes, which
//! replay the metadata log) are just peers that the leader also replicates to and that never
//! vote or stand. Snapshots are out of scope for now: the log is kept whole, in memory and on
//! disk, and a restart replays it.
//!
//! Elections start with a pre-vote (Raft thesis §9.6, KIP-996), so a node cut off from the
//! quorum keeps its term and does not depose a healthy leader on return; a leader that has not
//! heard from a majority for an election timeout steps down (check quorum), so a partitioned
//! leader stops acting as the active controller. See `docs/controller.md`.
//!
//! # Inputs
//! - [`Raft::restore`] builds a node from what the driver persisted (term, vote, log).
//! - [`Raft::handle_message`], [`Raft::handle_timeout`] (a spurious call is a no-op),
//!   [`Raft::propose`] (leader only), [`Raft::handle_completion`] (an IO finished).
//!
//! # Outputs, and the order the driver must keep (the runbook)
//! Drain [`Raft::poll_action`] after every input, then re-arm the timer with
//! [`Raft::poll_timeout`].
//! 1. [`Action::PersistVote`]: write `(term, voted_for)` durably (overwrite; only the latest
//!    matters), then call `handle_completion(Completion::VotePersisted { term, voted_for })`.
//!    The node sends nothing while a new term or vote is not yet durable: every
//!    [`Action::Send`] it emits is already safe to send, and a vote is only ever granted (or
//!    counted for itself) once it is durable, so a restart cannot vote twice in one term.
//! 2. [`Action::Truncate`] and [`Action::Append`]: apply them to the local log **in queue
//!    order**. Once everything up to index `i` is durable, call
//!    `handle_completion(Completion::Persisted { through: i, term })` with the term of entry
//!    `i`; the node ignores a report that no longer matches its log (a later truncation
//!    overtook it). The leader counts itself towards a commit only for persisted entries, and
//!    a follower acknowledges only persisted entries.
//! 3. [`Action::Send`]: send at once, in any order; the network may lose or reorder them.
//! 4. [`Action::Apply`]: committed entries, in index order, each exactly once per process
//!    lifetime (after a restart they start again from index 1: there are no snapshots).
//!    Entries with empty `data` are the leader's no-op at the start of its term.
//! 5. [`Action::Leader`]: the known leader or term changed; tell whoever routes requests.
//!
//! Message and entry byte encodings are versioned and their decoders return errors; the
//! driver decodes, this type never sees bytes off the network.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::ids::{NodeId, Term};

/// A position in the metadata log; entries start at 1, `Index(0)` is "before the first".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Index(pub u64);

impl Index {
    /// Saturating: an index off the network must not overflow.
    pub fn next(self) -> Index {
        Index(self.0.saturating_add(1))
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One metadata-log entry. Empty `data` is a leader's no-op (Raft §8: a new leader commits an
/// entry of its own term to learn what is committed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub data: Bytes,
}

/// The state that must survive a restart besides the log (Raft's `currentTerm`, `votedFor`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    pub node_id: NodeId,
    /// The voters, same list on every node. A node not in it is an observer.
    pub voters: Vec<NodeId>,
    /// Non-voting nodes the leader replicates to (brokers that replay the metadata log).
    pub observers: Vec<NodeId>,
    /// Election timeouts are drawn from `[election_timeout_ms, 2 * election_timeout_ms)`.
    pub election_timeout_ms: i64,
    pub heartbeat_interval_ms: i64,
    pub max_entries_per_message: usize,
    pub max_bytes_per_message: usize,
    /// `propose` answers [`ProposeError::Busy`] beyond this many uncommitted entries.
    pub max_uncommitted_entries: usize,
    pub max_entry_bytes: usize,
}

impl RaftConfig {
    pub fn new(node_id: NodeId, voters: Vec<NodeId>, observers: Vec<NodeId>) -> RaftConfig {
        RaftConfig {
            node_id,
            voters,
            observers,
            election_timeout_ms: 1_000,
            heartbeat_interval_ms: 200,
            max_entries_per_message: 256,
            max_bytes_per_message: 1 << 20,
            max_uncommitted_entries: 4096,
            max_entry_bytes: 8 << 20,
        }
    }
}

/// Messages between quorum members. The sender is the `from` of `handle_message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Would you vote for me in `term` (our term + 1)? Changes no state on either side.
    PreVote { term: Term, last_log_index: Index, last_log_term: Term },
    /// `term`: the asked term if granted, else the responder's own.
    PreVoteResponse { term: Term, granted: bool },
    /// RequestVote.
    Vote { term: Term, last_log_index: Index, last_log_term: Term },
    VoteResponse { term: Term, granted: bool },
    /// AppendEntries; `entries` continue the log right after `prev_log_index`.
    Append {
        term: Term,
        prev_log_index: Index,
        prev_log_term: Term,
        leader_commit: Index,
        entries: Vec<Entry>,
    },
    /// `match_index`: on success, the log matches the leader's and is durable through it; on
    /// failure, a hint: the leader retries from `match_index + 1` at most.
    AppendResponse { term: Term, success: bool, match_index: Index },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::Append { term, .. }
            | Message::AppendResponse { term, .. } => *term,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion {
    /// The log is durable through `through`, whose entry has `term`.
    Persisted { through: Index, term: Term },
    VotePersisted { term: Term, voted_for: Option<NodeId> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    PersistVote { term: Term, voted_for: Option<NodeId> },
    /// Remove entries `from..` from the local log.
    Truncate { from: Index },
    /// Append these (contiguous, right after the current end of the log).
    Append { entries: Vec<Entry> },
    Send { to: NodeId, message: Message },
    Apply { entries: Vec<Entry> },
    Leader { term: Term, leader: Option<NodeId> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    #[error("too many uncommitted entries")]
    Busy,
    #[error("entry larger than max_entry_bytes")]
    TooLarge,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("log entry {position} has index {found}, expected {expected}")]
    Gap { position: usize, found: Index, expected: Index },
    #[error("log entry {index} has term {term}, below the previous entry's {previous}")]
    TermDecreases { index: Index, term: Term, previous: Term },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Asking whether it could win before disturbing anyone (Raft thesis §9.6, KIP-996).
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Debug)]
struct Progress {
    match_index: Index,
    next_index: Index,
    /// An Append is out and unanswered: send no other until it is, or the heartbeat fires.
    in_flight: bool,
    last_response_ms: i64,
    /// The commit index last sent to this peer.
    sent_commit: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// Follower/candidate: start an election.
    Election = 0,
    /// Leader: send Appends to every peer.
    Heartbeat = 1,
    /// Leader: step down without a majority heard from lately (KRaft's check quorum).
    CheckQuorum = 2,
}

const TIMERS: [Timer; 3] = [Timer::Election, Timer::Heartbeat, Timer::CheckQuorum];

/// A member of the controller quorum; see the module docs for the driver's runbook.
pub struct Raft {
    config: RaftConfig,
    rng: u64,
    hard: HardState,
    /// The hard state last reported durable. While it differs from `hard`, sends are held.
    hard_durable: HardState,
    held: Vec<(NodeId, Message)>,
    role: Role,
    leader: Option<NodeId>,
    /// `log[i]` has index `i + 1`.
    log: Vec<Entry>,
    persisted: Index,
    commit: Index,
    applied: Index,
    /// Follower: an acknowledgement waiting for entries to become durable `(leader, through)`.
    pending_ack: Option<(NodeId, Index)>,
    votes: BTreeSet<NodeId>,
    progress: BTreeMap<NodeId, Progress>,
    timers: [Option<i64>; 3],
    last_leader_report: Option<(Term, Option<NodeId>)>,
    last_leader_contact_ms: i64,
    actions: VecDeque<Action>,
}

impl Raft {
    /// Builds a node from its durable state. `log` comes off disk: an inconsistent one is an
    /// error, not a panic. `seed` drives the randomized election timeouts.
    pub fn restore(
        config: RaftConfig,
        seed: u64,
        now_ms: i64,
        hard: HardState,
        log: Vec<Entry>,
    ) -> Result<Raft, RestoreError> {
        assert!(!config.voters.is_empty(), "a quorum needs voters");
        assert!(config.voters.windows(2).all(|w| w[0] < w[1]), "voters sorted and unique: {:?}", config.voters);
        assert!(!config.observers.iter().any(|o| config.voters.contains(o)), "observer also a voter");
        assert!(config.heartbeat_interval_ms > 0 && config.heartbeat_interval_ms < config.election_timeout_ms);
        assert!(config.max_entries_per_message > 0 && config.max_uncommitted_entries > 0);
        let mut previous = Term(0);
        for (position, entry) in log.iter().enumerate() {
            let expected = Index(position as u64 + 1);
            if entry.index != expected {
                return Err(RestoreError::Gap { position, found: entry.index, expected });
            }
            if entry.term < previous {
                return Err(RestoreError::TermDecreases { index: entry.index, term: entry.term, previous });
            }
            previous = entry.term;
        }
        // The log may hold entries of a term whose hard state did not reach the disk (both are
        // written independently). This node never voted in that term (a vote is sent only once
        // durable), so adopting the term with no vote is safe.
        let mut hard = hard;
        let mut rewrite = false;
        if previous > hard.term {
            hard = HardState { term: previous, voted_for: None };
            rewrite = true;
        }
        let persisted = Index(log.len() as u64);
        let mut raft = Raft {
            config,
            rng: seed ^ 0x005e_ed0f_4af7,
            hard,
            hard_durable: hard,
            held: Vec::new(),
            role: Role::Follower,
            leader: None,
            log,
            persisted,
            commit: Index(0),
            applied: Index(0),
            pending_ack: None,
            votes: BTreeSet::new(),
            progress: BTreeMap::new(),
            timers: [None; 3],
            last_leader_report: None,
            last_leader_contact_ms: i64::MIN / 2,
            actions: VecDeque::new(),
        };
        if rewrite {
            raft.hard_durable = HardState::default();
            raft.actions.push_back(Action::PersistVote { term: hard.term, voted_for: None });
        }
        raft.reset_election_timer(now_ms);
        raft.report_leader();
        raft.check_invariants();
        Ok(raft)
    }

    // ---- getters ----

    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn term(&self) -> Term {
        self.hard.term
    }
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn last_index(&self) -> Index {
        Index(self.log.len() as u64)
    }
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        index.0.checked_sub(1).and_then(|i| self.log.get(i as usize))
    }
    fn is_voter(&self) -> bool {
        self.config.voters.contains(&self.config.node_id)
    }

    // ---- inputs ----

    /// Appends `data` to the log as leader and returns its index. It is committed when an
    /// [`Action::Apply`] carries it; if leadership is lost first it may or may not be.
    pub fn propose(&mut self, now_ms: i64, data: Bytes) -> Result<Index, ProposeError> {
        assert!(!data.is_empty(), "empty entries are reserved for the leader's no-op");
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader { leader: self.leader });
        }
        if data.len() > self.config.max_entry_bytes {
            return Err(ProposeError::TooLarge);
        }
        if (self.last_index().0 - self.commit.0) as usize >= self.config.max_uncommitted_entries {
            return Err(ProposeError::Busy);
        }
        let index = self.append_as_leader(now_ms, data);
        self.check_invariants();
        Ok(index)
    }

    pub fn handle_message(&mut self, now_ms: i64, from: NodeId, message: Message) {
        let from_voter = self.config.voters.contains(&from);
        let known = from_voter || self.config.observers.contains(&from);
        let needs_voter = !matches!(message, Message::AppendResponse { .. });
        if from == self.config.node_id || !known || (needs_voter && !from_voter) {
            tracing::warn!(%from, "raft message from self, an unknown node or a non-voter ignored");
            return;
        }
        let term = message.term();
        // A pre-vote (or a grant of one) carries a term nobody has entered yet.
        let pre_vote = matches!(message, Message::PreVote { .. } | Message::PreVoteResponse { granted: true, .. });
        if term > self.hard.term && !pre_vote {
            // A newer term: whoever we were, we follow now (leader unknown until it speaks).
            self.become_follower(now_ms, term, None);
        }
        match message {
            Message::PreVote { term, last_log_index, last_log_term } => {
                self.on_pre_vote(now_ms, from, term, last_log_index, last_log_term)
            }
            Message::PreVoteResponse { term, granted } => self.on_pre_vote_response(now_ms, from, term, granted),
            Message::Vote { term, last_log_index, last_log_term } => {
                self.on_vote(now_ms, from, term, last_log_index, last_log_term)
            }
            Message::VoteResponse { term, granted } => self.on_vote_response(now_ms, from, term, granted),
            Message::Append { term, prev_log_index, prev_log_term, leader_commit, entries } => {
                self.on_append(now_ms, from, term, prev_log_index, prev_log_term, leader_commit, entries)
            }
            Message::AppendResponse { term, success, match_index } => {
                self.on_append_response(now_ms, from, term, success, match_index)
            }
        }
        self.report_leader();
        self.check_invariants();
    }

    pub fn handle_timeout(&mut self, now_ms: i64) {
        for timer in TIMERS {
            match self.timers[timer as usize] {
                Some(deadline) if deadline <= now_ms => {
                    self.timers[timer as usize] = None;
                    match timer {
                        Timer::Election => self.on_election_timeout(now_ms),
                        Timer::Heartbeat => self.on_heartbeat_timeout(now_ms),
                        Timer::CheckQuorum => self.on_check_quorum_timeout(now_ms),
                    }
                }
                _ => {}
            }
        }
        self.report_leader();
        self.check_invariants();
    }

    pub fn handle_completion(&mut self, now_ms: i64, completion: Completion) {
        match completion {
            Completion::VotePersisted { term, voted_for } => {
                let reported = HardState { term, voted_for };
                if reported == self.hard {
                    self.hard_durable = reported;
                    for (to, message) in std::mem::take(&mut self.held) {
                        self.actions.push_back(Action::Send { to, message });
                    }
                    if self.role == Role::Candidate && voted_for == Some(self.config.node_id) {
                        // Our own vote counts only now that it cannot be forgotten.
                        self.votes.insert(self.config.node_id);
                        self.maybe_win(now_ms);
                    }
                }
            }
            Completion::Persisted { through, term } => {
                // Ignore a report overtaken by a truncation: (index, term) names a whole prefix.
                if self.entry(through).is_some_and(|e| e.term == term) && through > self.persisted {
                    self.persisted = through;
                    match self.role {
                        Role::Leader => self.advance_commit(),
                        Role::Follower => {
                            if let Some((leader, verified)) = self.pending_ack {
                                if self.persisted >= verified {
                                    self.pending_ack = None;
                                    let message = Message::AppendResponse {
                                        term: self.hard.term,
                                        success: true,
                                        match_index: verified,
                                    };
                                    self.send(leader, message);
                                }
                            }
                        }
                        Role::PreCandidate | Role::Candidate => {}
                    }
                }
            }
        }
        self.report_leader();
        self.check_invariants();
    }

    // ---- outputs ----

    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    #[must_use]
    pub fn poll_timeout(&self) -> Option<i64> {
        self.timers.iter().flatten().copied().min()
    }

    // ---- handlers ----

    fn on_vote(&mut self, now_ms: i64, candidate: NodeId, term: Term, last_log_index: Index, last_log_term: Term) {
        let our_last_term = self.log.last().map_or(Term(0), |e| e.term);
        let up_to_date =
            (last_log_term, last_log_index) >= (our_last_term, self.last_index());
        let granted = term == self.hard.term
            && self.is_voter()
            && self.config.voters.contains(&candidate)
            && matches!(self.role, Role::Follower | Role::PreCandidate)
            && self.hard.voted_for.is_none_or(|v| v == candidate)
            && up_to_date;
        if granted && self.role == Role::PreCandidate {
            self.role = Role::Follower;
            self.votes.clear();
        }
        if granted && self.hard.voted_for.is_none() {
            self.set_hard_state(HardState { term, voted_for: Some(candidate) });
            // Granting a vote resets the timer (Raft §5.2), so we do not stand against it.
            self.reset_election_timer(now_ms);
        }
        // Sent only once the vote is durable: `send` holds it until VotePersisted.
        self.send(candidate, Message::VoteResponse { term: self.hard.term, granted });
    }

    fn on_pre_vote(&mut self, now_ms: i64, candidate: NodeId, term: Term, last_log_index: Index, last_log_term: Term) {
        let our_last_term = self.log.last().map_or(Term(0), |e| e.term);
        let up_to_date = (last_log_term, last_log_index) >= (our_last_term, self.last_index());
        // A follower that heard from its leader within an election timeout keeps it.
        let leader_alive = self.role == Role::Leader
            || (self.leader.is_some() && now_ms - self.last_leader_contact_ms < self.config.election_timeout_ms);
        let granted = term > self.hard.term && self.is_voter() && up_to_date && !leader_alive;
        let term = if granted { term } else { self.hard.term };
        self.send(candidate, Message::PreVoteResponse { term, granted });
    }

    fn on_pre_vote_response(&mut self, now_ms: i64, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::PreCandidate || !granted || term != self.hard.term.next() {
            return;
        }
        if self.config.voters.contains(&from) {
            self.votes.insert(from);
            if self.votes.len() >= self.majority() {
                self.start_election(now_ms);
            }
        }
    }

    fn on_vote_response(&mut self, now_ms: i64, from: NodeId, term: Term, granted: bool) {
        if self.role != Role::Candidate || term != self.hard.term || !granted {
            return;
        }
        if self.config.voters.contains(&from) {
            self.votes.insert(from);
            self.maybe_win(now_ms);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_append(
        &mut self,
        now_ms: i64,
        leader: NodeId,
        term: Term,
        prev_log_index: Index,
        prev_log_term: Term,
        leader_commit: Index,
        entries: Vec<Entry>,
    ) {
        if term < self.hard.term {
            let message = Message::AppendResponse { term: self.hard.term, success: false, match_index: Index(0) };
            self.send(leader, message);
            return;
        }
        // Same term: there is one leader per term, and it is `leader`.
        if self.role != Role::Follower || self.leader != Some(leader) {
            if self.role == Role::Leader {
                tracing::error!(%leader, term = %term, "two leaders claim one term; message dropped");
                return;
            }
            self.become_follower(now_ms, term, Some(leader));
        }
        self.last_leader_contact_ms = now_ms;
        self.reset_election_timer(now_ms);

        // The entries must follow prev_log_index contiguously, with terms that never decrease
        // and never pass the leader's; reject malformed input.
        let contiguous = entries.iter().enumerate().all(|(i, e)| Some(e.index.0) == prev_log_index.0.checked_add(1 + i as u64));
        let mut previous_term = prev_log_term;
        let terms_ok = prev_log_term <= term
            && entries.iter().all(|e| {
                let ok = e.term >= previous_term && e.term <= term;
                previous_term = e.term;
                ok
            });
        if !contiguous || !terms_ok {
            tracing::warn!(%leader, "malformed append dropped");
            return;
        }
        let matches = prev_log_index.0 == 0 || self.entry(prev_log_index).is_some_and(|e| e.term == prev_log_term);
        if !matches {
            let hint = if prev_log_index > self.last_index() {
                self.last_index()
            } else {
                // Skip back over our whole conflicting term in one round trip (Raft §5.3).
                let conflict_term = self.entry(prev_log_index).map(|e| e.term);
                let mut i = prev_log_index.0;
                while i > self.commit.0 + 1 && self.entry(Index(i - 1)).map(|e| e.term) == conflict_term {
                    i -= 1;
                }
                Index(i - 1)
            };
            let message = Message::AppendResponse { term: self.hard.term, success: false, match_index: hint };
            self.send(leader, message);
            return;
        }
        let verified = Index(prev_log_index.0 + entries.len() as u64);
        let mut new_entries = Vec::new();
        for entry in entries {
            match self.entry(entry.index) {
                Some(ours) if ours.term == entry.term => {}
                Some(_) => {
                    if entry.index <= self.commit {
                        tracing::error!(%leader, index = %entry.index, "leader would truncate committed entry; dropped");
                        return;
                    }
                    self.log.truncate(entry.index.0 as usize - 1);
                    self.persisted = self.persisted.min(Index(entry.index.0 - 1));
                    self.actions.push_back(Action::Truncate { from: entry.index });
                    new_entries.push(entry.clone());
                    self.log.push(entry);
                }
                None => {
                    new_entries.push(entry.clone());
                    self.log.push(entry);
                }
            }
        }
        if !new_entries.is_empty() {
            self.actions.push_back(Action::Append { entries: new_entries });
        }
        let commit = leader_commit.min(verified);
        if commit > self.commit {
            self.commit = commit;
            self.emit_apply();
        }
        // Acknowledge only what is durable; the rest is acknowledged on `Persisted`.
        if self.persisted >= verified {
            self.pending_ack = None;
            let message = Message::AppendResponse { term: self.hard.term, success: true, match_index: verified };
            self.send(leader, message);
        } else {
            self.pending_ack = Some((leader, verified));
        }
    }

    fn on_append_response(&mut self, now_ms: i64, from: NodeId, term: Term, success: bool, match_index: Index) {
        if self.role != Role::Leader || term != self.hard.term {
            return;
        }
        let last_index = self.last_index();
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        progress.last_response_ms = now_ms;
        progress.in_flight = false;
        if success {
            if match_index > last_index {
                tracing::warn!(%from, %match_index, "append response beyond our log ignored");
                return;
            }
            progress.match_index = progress.match_index.max(match_index);
            progress.next_index = progress.next_index.max(progress.match_index.next());
            self.advance_commit();
        } else {
            let floor = progress.match_index.next();
            progress.next_index = match_index.next().min(progress.next_index).max(floor);
        }
        let progress = &self.progress[&from];
        if progress.next_index <= self.last_index() || progress.sent_commit < self.commit {
            self.send_append(from);
        }
    }

    fn on_election_timeout(&mut self, now_ms: i64) {
        if self.role == Role::Leader || !self.is_voter() {
            return;
        }
        // Pre-vote first: a node cut off from the quorum keeps its term, so it does not depose
        // a healthy leader when it comes back.
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.node_id);
        self.pending_ack = None;
        self.timers = [None; 3];
        self.reset_election_timer(now_ms);
        if self.votes.len() >= self.majority() {
            return self.start_election(now_ms);
        }
        let term = self.hard.term.next();
        let last_log_index = self.last_index();
        let last_log_term = self.log.last().map_or(Term(0), |e| e.term);
        for voter in self.config.voters.clone() {
            if voter != self.config.node_id {
                self.send(voter, Message::PreVote { term, last_log_index, last_log_term });
            }
        }
    }

    fn start_election(&mut self, now_ms: i64) {
        let term = self.hard.term.next();
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.progress.clear();
        self.pending_ack = None;
        self.timers = [None; 3];
        self.set_hard_state(HardState { term, voted_for: Some(self.config.node_id) });
        self.reset_election_timer(now_ms);
        let last_log_index = self.last_index();
        let last_log_term = self.log.last().map_or(Term(0), |e| e.term);
        for voter in self.config.voters.clone() {
            if voter != self.config.node_id {
                self.send(voter, Message::Vote { term, last_log_index, last_log_term });
            }
        }
    }

    fn on_heartbeat_timeout(&mut self, now_ms: i64) {
        if self.role != Role::Leader {
            return;
        }
        for peer in self.progress.keys().copied().collect::<Vec<_>>() {
            self.send_append(peer);
        }
        self.timers[Timer::Heartbeat as usize] = Some(now_ms + self.config.heartbeat_interval_ms);
    }

    fn on_check_quorum_timeout(&mut self, now_ms: i64) {
        if self.role != Role::Leader {
            return;
        }
        let since = now_ms - self.config.election_timeout_ms;
        let heard = self
            .config
            .voters
            .iter()
            .filter(|v| **v == self.config.node_id || self.progress.get(v).is_some_and(|p| p.last_response_ms >= since))
            .count();
        if heard < self.majority() {
            tracing::info!(term = %self.hard.term, "leader lost contact with a majority; resigning");
            self.become_follower(now_ms, self.hard.term, None);
        } else {
            self.timers[Timer::CheckQuorum as usize] = Some(now_ms + self.config.election_timeout_ms);
        }
    }

    // ---- helpers ----

    fn majority(&self) -> usize {
        self.config.voters.len() / 2 + 1
    }

    fn become_follower(&mut self, now_ms: i64, term: Term, leader: Option<NodeId>) {
        if term > self.hard.term {
            self.set_hard_state(HardState { term, voted_for: None });
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.pending_ack = None;
        self.timers = [None; 3];
        self.reset_election_timer(now_ms);
    }

    fn maybe_win(&mut self, now_ms: i64) {
        if self.role != Role::Candidate || self.votes.len() < self.majority() {
            return;
        }
        assert!(self.votes.contains(&self.config.node_id), "won without our own durable vote: {:?}", self.votes);
        self.role = Role::Leader;
        self.leader = Some(self.config.node_id);
        self.timers = [None; 3];
        let next_index = self.last_index().next();
        let peers = self.config.voters.iter().chain(&self.config.observers).copied();
        self.progress = peers
            .filter(|p| *p != self.config.node_id)
            .map(|p| (p, Progress { match_index: Index(0), next_index, in_flight: false, last_response_ms: now_ms, sent_commit: Index(0) }))
            .collect();
        self.timers[Timer::Heartbeat as usize] = Some(now_ms + self.config.heartbeat_interval_ms);
        self.timers[Timer::CheckQuorum as usize] = Some(now_ms + self.config.election_timeout_ms);
        self.append_as_leader(now_ms, Bytes::new());
    }

    fn append_as_leader(&mut self, _now_ms: i64, data: Bytes) -> Index {
        let entry = Entry { index: self.last_index().next(), term: self.hard.term, data };
        let index = entry.index;
        self.log.push(entry.clone());
        self.actions.push_back(Action::Append { entries: vec![entry] });
        for peer in self.progress.keys().copied().collect::<Vec<_>>() {
            if !self.progress[&peer].in_flight {
                self.send_append(peer);
            }
        }
        index
    }

    fn send_append(&mut self, peer: NodeId) {
        let progress = &self.progress[&peer];
        let prev_log_index = Index(progress.next_index.0 - 1);
        let prev_log_term = self.entry(prev_log_index).map_or(Term(0), |e| e.term);
        let mut entries = Vec::new();
        let mut bytes = 0;
        for entry in self.log.iter().skip(prev_log_index.0 as usize) {
            if entries.len() == self.config.max_entries_per_message
                || (!entries.is_empty() && bytes + entry.data.len() > self.config.max_bytes_per_message)
            {
                break;
            }
            bytes += entry.data.len();
            entries.push(entry.clone());
        }
        let message =
            Message::Append { term: self.hard.term, prev_log_index, prev_log_term, leader_commit: self.commit, entries };
        let progress = self.progress.get_mut(&peer).expect("peer has progress");
        progress.in_flight = true;
        progress.sent_commit = self.commit;
        self.send(peer, message);
    }

    fn advance_commit(&mut self) {
        // The highest index a majority of voters holds durably (the leader: `persisted`).
        let mut matched: Vec<Index> = self
            .config
            .voters
            .iter()
            .map(|v| {
                if *v == self.config.node_id {
                    self.persisted
                } else {
                    self.progress.get(v).map_or(Index(0), |p| p.match_index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.majority() - 1];
        // Only an entry of the current term commits by counting (Raft §5.4.2, figure 8).
        if candidate > self.commit && self.entry(candidate).is_some_and(|e| e.term == self.hard.term) {
            self.commit = candidate;
            self.emit_apply();
            // Followers apply a committed entry when they learn the commit index: tell them
            // now rather than at the next heartbeat, so every node's metadata image follows
            // the leader's within a round trip (a client told "node 3 leads" by one node must
            // find node 3 knowing it).
            for peer in self.progress.keys().copied().collect::<Vec<_>>() {
                if !self.progress[&peer].in_flight {
                    self.send_append(peer);
                }
            }
        }
    }

    fn emit_apply(&mut self) {
        if self.commit > self.applied {
            // Whoever routes requests hears of a new term before its entries: a deposed leader
            // whose first word of the new term is an Append that also commits would otherwise
            // apply entries of that term while its controller still acts for the old one.
            self.report_leader();
            let entries = self.log[self.applied.0 as usize..self.commit.0 as usize].to_vec();
            self.applied = self.commit;
            self.actions.push_back(Action::Apply { entries });
        }
    }

    fn set_hard_state(&mut self, hard: HardState) {
        assert!(hard.term >= self.hard.term, "term going back: {:?} -> {hard:?}", self.hard);
        assert!(
            hard.term > self.hard.term || self.hard.voted_for.is_none_or(|v| Some(v) == hard.voted_for),
            "second vote in term {}: {:?} -> {hard:?}",
            hard.term,
            self.hard
        );
        self.hard = hard;
        self.actions.push_back(Action::PersistVote { term: hard.term, voted_for: hard.voted_for });
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if self.hard_durable == self.hard {
            self.actions.push_back(Action::Send { to, message });
        } else {
            // Bounded: at most one message per peer per input between persists, and stale
            // ones are harmless (the receiver checks terms).
            if self.held.len() >= 4 * (self.config.voters.len() + self.config.observers.len()) {
                self.held.remove(0);
            }
            self.held.push((to, message));
        }
    }

    fn reset_election_timer(&mut self, now_ms: i64) {
        if !self.is_voter() || self.role == Role::Leader {
            return;
        }
        if self.config.voters.len() == 1 && self.hard_durable == self.hard {
            // The only voter: no other leader can exist or split the vote, so waiting out a
            // timeout would only delay a standalone node's start. Not while its own vote is
            // still being persisted: a new term then would only overtake that vote, again and
            // again, on a driver whose writes complete later (the broker's do).
            self.timers[Timer::Election as usize] = Some(now_ms);
            return;
        }
        let base = self.config.election_timeout_ms;
        let jitter = (self.next_random() % base as u64) as i64;
        self.timers[Timer::Election as usize] = Some(now_ms + base + jitter);
    }

    /// splitmix64: one stream per node, from the seed the driver passed in.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn report_leader(&mut self) {
        let now = (self.hard.term, self.leader);
        if self.last_leader_report != Some(now) {
            self.last_leader_report = Some(now);
            self.actions.push_back(Action::Leader { term: now.0, leader: now.1 });
        }
    }

    fn check_invariants(&self) {
        if !crate::INVARIANTS {
            return;
        }
        for (i, entry) in self.log.iter().enumerate() {
            assert_eq!(entry.index.0, i as u64 + 1, "log index gap at position {i}");
            if i > 0 {
                assert!(entry.term >= self.log[i - 1].term, "log terms decrease at {}", entry.index);
            }
        }
        let last_term = self.log.last().map_or(Term(0), |e| e.term);
        assert!(last_term <= self.hard.term, "log term {last_term} beyond current {}", self.hard.term);
        assert!(self.applied <= self.commit && self.commit <= self.last_index());
        assert!(self.persisted <= self.last_index());
        match self.role {
            Role::Leader => {
                assert_eq!(self.hard.voted_for, Some(self.config.node_id), "leader without own vote");
                assert_eq!(self.hard_durable, self.hard, "leader with an unpersisted vote");
                assert_eq!(self.leader, Some(self.config.node_id));
                assert!(self.is_voter());
            }
            Role::Candidate => {
                assert_eq!(self.hard.voted_for, Some(self.config.node_id));
                assert!(self.leader.is_none() && self.is_voter());
            }
            Role::PreCandidate => assert!(self.leader.is_none() && self.is_voter() && self.progress.is_empty()),
            Role::Follower => assert!(self.progress.is_empty() && self.leader != Some(self.config.node_id)),
        }
    }
}

// ---- byte encodings ----

/// Why bytes off the network or disk did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unknown version {0}")]
    Version(u8),
    #[error("unknown tag {0}")]
    Tag(u8),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("invalid: {0}")]
    Invalid(&'static str),
}

pub(crate) mod codec {
    //! Checked little-endian reads and writes for the quorum's and the metadata log's encodings.

    use bytes::{BufMut, Bytes, BytesMut};

    use super::DecodeError;

    pub struct Reader<'a> {
        bytes: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(bytes: &'a [u8]) -> Reader<'a> {
            Reader { bytes }
        }
        pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
            if self.bytes.len() < n {
                return Err(DecodeError::Truncated { needed: n - self.bytes.len() });
            }
            let (head, tail) = self.bytes.split_at(n);
            self.bytes = tail;
            Ok(head)
        }
        pub fn u8(&mut self) -> Result<u8, DecodeError> {
            Ok(self.take(1)?[0])
        }
        pub fn bool(&mut self) -> Result<bool, DecodeError> {
            match self.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(DecodeError::Invalid("boolean not 0 or 1")),
            }
        }
        pub fn u16(&mut self) -> Result<u16, DecodeError> {
            Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
        }
        pub fn i32(&mut self) -> Result<i32, DecodeError> {
            Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
        }
        pub fn u32(&mut self) -> Result<u32, DecodeError> {
            Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
        }
        pub fn i64(&mut self) -> Result<i64, DecodeError> {
            Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
        }
        pub fn u64(&mut self) -> Result<u64, DecodeError> {
            Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
        }
        pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
            let len = self.u32()? as usize;
            self.take(len)
        }
        pub fn string(&mut self) -> Result<String, DecodeError> {
            let len = self.u16()? as usize;
            let raw = self.take(len)?;
            String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Invalid("string not UTF-8"))
        }
        /// A count of items each at least `min_item_bytes` long: refuses counts the remaining
        /// bytes cannot hold, so a forged count cannot make us allocate.
        pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
            let n = self.u32()? as usize;
            if n.saturating_mul(min_item_bytes.max(1)) > self.bytes.len() {
                return Err(DecodeError::Invalid("count larger than the bytes left"));
            }
            Ok(n)
        }
        pub fn finish(self) -> Result<(), DecodeError> {
            if self.bytes.is_empty() {
                Ok(())
            } else {
                Err(DecodeError::Trailing(self.bytes.len()))
            }
        }
    }

    pub fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
        out.put_u32_le(u32::try_from(bytes.len()).expect("field below 4 GiB"));
        out.put_slice(bytes);
    }

    pub fn put_string(out: &mut BytesMut, s: &str) {
        out.put_u16_le(u16::try_from(s.len()).expect("string below 64 KiB"));
        out.put_slice(s.as_bytes());
    }

    pub fn put_count(out: &mut BytesMut, n: usize) {
        out.put_u32_le(u32::try_from(n).expect("count below 2^32"));
    }

    pub fn freeze(out: BytesMut) -> Bytes {
        out.freeze()
    }
}

use codec::Reader;

const MESSAGE_VERSION: u8 = 0;
const ENTRY_VERSION: u8 = 0;

impl Message {
    /// `[version][tag][fields]`, little-endian.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(MESSAGE_VERSION);
        match self {
            Message::PreVote { term, last_log_index, last_log_term } => {
                out.put_u8(4);
                out.put_i32_le(term.0);
                out.put_u64_le(last_log_index.0);
                out.put_i32_le(last_log_term.0);
            }
            Message::PreVoteResponse { term, granted } => {
                out.put_u8(5);
                out.put_i32_le(term.0);
                out.put_u8(u8::from(*granted));
            }
            Message::Vote { term, last_log_index, last_log_term } => {
                out.put_u8(0);
                out.put_i32_le(term.0);
                out.put_u64_le(last_log_index.0);
                out.put_i32_le(last_log_term.0);
            }
            Message::VoteResponse { term, granted } => {
                out.put_u8(1);
                out.put_i32_le(term.0);
                out.put_u8(u8::from(*granted));
            }
            Message::Append { term, prev_log_index, prev_log_term, leader_commit, entries } => {
                out.put_u8(2);
                out.put_i32_le(term.0);
                out.put_u64_le(prev_log_index.0);
                out.put_i32_le(prev_log_term.0);
                out.put_u64_le(leader_commit.0);
                codec::put_count(&mut out, entries.len());
                for entry in entries {
                    // The index is implied by prev_log_index.
                    out.put_i32_le(entry.term.0);
                    codec::put_bytes(&mut out, &entry.data);
                }
            }
            Message::AppendResponse { term, success, match_index } => {
                out.put_u8(3);
                out.put_i32_le(term.0);
                out.put_u8(u8::from(*success));
                out.put_u64_le(match_index.0);
            }
        }
        codec::freeze(out)
    }

    pub fn decode(bytes: &Bytes) -> Result<Message, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != MESSAGE_VERSION {
            return Err(DecodeError::Version(version));
        }
        let term = |r: &mut Reader| -> Result<Term, DecodeError> {
            let t = r.i32()?;
            // i32::MAX is refused so that `Term::next` can never overflow on a peer's term.
            if !(0..i32::MAX).contains(&t) {
                return Err(DecodeError::Invalid("term out of range"));
            }
            Ok(Term(t))
        };
        let message = match r.u8()? {
            0 => Message::Vote { term: term(&mut r)?, last_log_index: Index(r.u64()?), last_log_term: term(&mut r)? },
            1 => Message::VoteResponse { term: term(&mut r)?, granted: r.bool()? },
            2 => {
                let t = term(&mut r)?;
                let prev_log_index = Index(r.u64()?);
                let prev_log_term = term(&mut r)?;
                let leader_commit = Index(r.u64()?);
                let n = r.count(8)?;
                if prev_log_index.0.checked_add(n as u64).is_none() {
                    return Err(DecodeError::Invalid("index overflow"));
                }
                let mut entries = Vec::with_capacity(n);
                for i in 0..n {
                    let entry_term = term(&mut r)?;
                    let data = r.bytes()?;
                    let index = Index(prev_log_index.0 + 1 + i as u64);
                    entries.push(Entry { index, term: entry_term, data: bytes.slice_ref(data) });
                }
                Message::Append { term: t, prev_log_index, prev_log_term, leader_commit, entries }
            }
            3 => Message::AppendResponse { term: term(&mut r)?, success: r.bool()?, match_index: Index(r.u64()?) },
            4 => Message::PreVote { term: term(&mut r)?, last_log_index: Index(r.u64()?), last_log_term: term(&mut r)? },
            5 => Message::PreVoteResponse { term: term(&mut r)?, granted: r.bool()? },
            tag => return Err(DecodeError::Tag(tag)),
        };
        r.finish()?;
        Ok(message)
    }
}

impl Entry {
    /// The on-disk form of one entry: `[version][index u64][term i32][len u32][data]`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(17 + self.data.len());
        out.put_u8(ENTRY_VERSION);
        out.put_u64_le(self.index.0);
        out.put_i32_le(self.term.0);
        codec::put_bytes(&mut out, &self.data);
        codec::freeze(out)
    }

    pub fn decode(bytes: &Bytes) -> Result<Entry, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(DecodeError::Version(version));
        }
        let index = Index(r.u64()?);
        let term = r.i32()?;
        if !(0..i32::MAX).contains(&term) || index.0 == 0 {
            return Err(DecodeError::Invalid("entry index 0 or term out of range"));
        }
        let data = bytes.slice_ref(r.bytes()?);
        r.finish()?;
        Ok(Entry { index, term: Term(term), data })
    }
}

impl HardState {
    /// `[version][term i32][has_vote u8][voted_for i32]`.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(10);
        out.put_u8(ENTRY_VERSION);
        out.put_i32_le(self.term.0);
        out.put_u8(u8::from(self.voted_for.is_some()));
        out.put_i32_le(self.voted_for.map_or(-1, |v| v.0));
        codec::freeze(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<HardState, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENTRY_VERSION {
            return Err(DecodeError::Version(version));
        }
        let term = r.i32()?;
        let has_vote = r.bool()?;
        let voted_for = r.i32()?;
        r.finish()?;
        if !(0..i32::MAX).contains(&term) {
            return Err(DecodeError::Invalid("term out of range"));
        }
        Ok(HardState { term: Term(term), voted_for: has_vote.then_some(NodeId(voted_for)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- an in-memory cluster: each node's disk, a network that may lose and reorder, and
    // virtual time that jumps to the next timer ----

    enum Io {
        Vote(HardState),
        Truncate(Index),
        Append(Vec<Entry>),
    }

    struct Node {
        raft: Option<Raft>,
        disk_hard: HardState,
        disk_log: Vec<Entry>,
        pending_io: VecDeque<Io>,
        applied: Vec<Entry>,
        restarts: u64,
    }

    struct Sim {
        now_ms: i64,
        seed: u64,
        rng: u64,
        voters: Vec<NodeId>,
        observers: Vec<NodeId>,
        nodes: BTreeMap<NodeId, Node>,
        net: Vec<(NodeId, NodeId, Message)>,
        /// Links that drop everything: (from, to).
        cut: BTreeSet<(NodeId, NodeId)>,
        /// Durable IO completes as soon as it is queued.
        sync_io: bool,
        leaders: BTreeMap<Term, NodeId>,
        /// index -> (entry, smallest term of a node that had applied it).
        committed: BTreeMap<Index, (Entry, Term)>,
    }

    impl Sim {
        fn new(seed: u64, voters: &[i32], observers: &[i32]) -> Sim {
            let voters: Vec<NodeId> = voters.iter().map(|v| NodeId(*v)).collect();
            let observers: Vec<NodeId> = observers.iter().map(|v| NodeId(*v)).collect();
            let mut sim = Sim {
                now_ms: 0,
                seed,
                rng: seed,
                voters: voters.clone(),
                observers: observers.clone(),
                nodes: BTreeMap::new(),
                net: Vec::new(),
                cut: BTreeSet::new(),
                sync_io: true,
                leaders: BTreeMap::new(),
                committed: BTreeMap::new(),
            };
            for id in voters.iter().chain(&observers) {
                let node = Node {
                    raft: None,
                    disk_hard: HardState::default(),
                    disk_log: Vec::new(),
                    pending_io: VecDeque::new(),
                    applied: Vec::new(),
                    restarts: 0,
                };
                sim.nodes.insert(*id, node);
                sim.start(*id);
            }
            sim
        }

        fn random(&mut self) -> u64 {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn start(&mut self, id: NodeId) {
            let config = RaftConfig::new(id, self.voters.clone(), self.observers.clone());
            let node = self.nodes.get_mut(&id).unwrap();
            node.restarts += 1;
            let seed = self.seed ^ (u64::from(id.0 as u32) << 32) ^ node.restarts;
            let raft = Raft::restore(config, seed, self.now_ms, node.disk_hard, node.disk_log.clone()).unwrap();
            node.raft = Some(raft);
            node.applied.clear();
            self.drain(id);
        }

        fn crash(&mut self, id: NodeId) {
            let node = self.nodes.get_mut(&id).unwrap();
            node.raft = None;
            // Unsynced writes are lost.
            node.pending_io.clear();
        }

        fn raft(&self, id: i32) -> &Raft {
            self.nodes[&NodeId(id)].raft.as_ref().unwrap()
        }

        fn raft_mut(&mut self, id: i32) -> &mut Raft {
            self.nodes.get_mut(&NodeId(id)).unwrap().raft.as_mut().unwrap()
        }

        fn propose(&mut self, id: impl Into<NodeId>, data: Bytes) -> Result<Index, ProposeError> {
            let id = id.into();
            let now_ms = self.now_ms;
            let result = self.nodes.get_mut(&id).unwrap().raft.as_mut().unwrap().propose(now_ms, data);
            self.drain(id);
            result
        }

        fn drain(&mut self, id: NodeId) {
            loop {
                let Some(raft) = self.nodes.get_mut(&id).unwrap().raft.as_mut() else { return };
                let Some(action) = raft.poll_action() else { break };
                let term = raft.term();
                let is_leader = raft.role() == Role::Leader;
                let node = self.nodes.get_mut(&id).unwrap();
                match action {
                    Action::PersistVote { term, voted_for } => {
                        node.pending_io.push_back(Io::Vote(HardState { term, voted_for }))
                    }
                    Action::Truncate { from } => node.pending_io.push_back(Io::Truncate(from)),
                    Action::Append { entries } => node.pending_io.push_back(Io::Append(entries)),
                    Action::Send { to, message } => {
                        if !self.cut.contains(&(id, to)) {
                            self.net.push((id, to, message));
                        }
                    }
                    Action::Apply { entries } => {
                        for entry in entries {
                            assert_eq!(entry.index.0, node.applied.len() as u64 + 1, "applied out of order");
                            node.applied.push(entry.clone());
                            let known = self.committed.entry(entry.index).or_insert((entry.clone(), term));
                            // State machine safety: one entry per committed index, everywhere.
                            assert_eq!(known.0, entry, "node {id} applied a different entry (seed {})", self.seed);
                            known.1 = known.1.min(term);
                        }
                    }
                    Action::Leader { term, leader } => {
                        if leader == Some(id) {
                            assert!(is_leader);
                            self.on_new_leader(id, term);
                        }
                    }
                }
            }
            if self.sync_io {
                while self.complete_io(id) {}
            }
        }

        fn on_new_leader(&mut self, id: NodeId, term: Term) {
            // Election safety: at most one leader per term.
            let first = *self.leaders.entry(term).or_insert(id);
            assert_eq!(first, id, "two leaders in term {term} (seed {})", self.seed);
            // Leader completeness: everything committed in an earlier term is in its log.
            let raft = self.nodes[&id].raft.as_ref().unwrap();
            for (index, (entry, seen_term)) in &self.committed {
                if *seen_term < term {
                    assert_eq!(raft.entry(*index), Some(entry), "leader {id} of {term} lacks committed {index} (seed {})", self.seed);
                }
            }
        }

        /// Makes the oldest queued write of `id` durable and reports it; false if none.
        fn complete_io(&mut self, id: NodeId) -> bool {
            let node = self.nodes.get_mut(&id).unwrap();
            if node.raft.is_none() {
                return false;
            }
            let Some(io) = node.pending_io.pop_front() else { return false };
            let completion = match io {
                Io::Vote(hard) => {
                    node.disk_hard = hard;
                    Some(Completion::VotePersisted { term: hard.term, voted_for: hard.voted_for })
                }
                Io::Truncate(from) => {
                    node.disk_log.truncate(from.0 as usize - 1);
                    None
                }
                Io::Append(entries) => {
                    let last = entries.last().unwrap().clone();
                    assert_eq!(entries[0].index.0, node.disk_log.len() as u64 + 1, "append leaves a gap");
                    node.disk_log.extend(entries);
                    Some(Completion::Persisted { through: last.index, term: last.term })
                }
            };
            if let Some(completion) = completion {
                let now_ms = self.now_ms;
                node.raft.as_mut().unwrap().handle_completion(now_ms, completion);
                self.drain(id);
            }
            true
        }

        fn deliver(&mut self, i: usize) {
            let (from, to, message) = self.net.remove(i);
            // Round-trip the wire encoding on every delivery.
            let message = Message::decode(&message.encode()).unwrap();
            let now_ms = self.now_ms;
            if let Some(raft) = self.nodes.get_mut(&to).unwrap().raft.as_mut() {
                raft.handle_message(now_ms, from, message);
                self.drain(to);
            }
        }

        /// Jumps virtual time to the next timer of a live node and fires it.
        fn advance(&mut self) {
            let next = self.nodes.values().filter_map(|n| n.raft.as_ref()?.poll_timeout()).min();
            let Some(next) = next else { return };
            self.now_ms = self.now_ms.max(next);
            for id in self.nodes.keys().copied().collect::<Vec<_>>() {
                let now_ms = self.now_ms;
                if let Some(raft) = self.nodes.get_mut(&id).unwrap().raft.as_mut() {
                    if raft.poll_timeout().is_some_and(|t| t <= now_ms) {
                        raft.handle_timeout(now_ms);
                        self.drain(id);
                    }
                }
            }
        }

        /// Reliable network: deliver everything in order, then let time pass; until `done`.
        fn run_until(&mut self, steps_max: usize, done: impl Fn(&Sim) -> bool) {
            for _ in 0..steps_max {
                if done(self) {
                    return;
                }
                if self.net.is_empty() {
                    let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                    // One write per node, every node (not short-circuiting).
                    let mut any = false;
                    for id in ids {
                        any |= self.complete_io(id);
                    }
                    if !any {
                        self.advance();
                    }
                } else {
                    self.deliver(0);
                }
            }
            panic!("condition not reached within {steps_max} steps (seed {})", self.seed);
        }

        fn leader(&self) -> Option<NodeId> {
            self.nodes
                .iter()
                .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
                .max_by_key(|(_, n)| n.raft.as_ref().unwrap().term())
                .map(|(id, _)| *id)
        }

        fn leader_ready(&self) -> Option<NodeId> {
            // A leader that has committed its no-op knows the whole committed log.
            let id = self.leader()?;
            let raft = self.nodes[&id].raft.as_ref()?;
            (raft.entry(raft.commit_index()).map(|e| e.term) == Some(raft.term())).then_some(id)
        }

        fn applied(&self, id: i32) -> Vec<Bytes> {
            self.nodes[&NodeId(id)].applied.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.clone()).collect()
        }
    }

    fn data(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    // Guards liveness of the basic election (Raft §5.2): three voters agree on one leader, and
    // observers follow it without standing.
    #[test]
    fn leader_is_elected_among_three_voters_and_observers_follow() {
        let mut sim = Sim::new(1, &[1, 2, 3], &[10]);
        sim.run_until(10_000, |s| s.leader_ready().is_some());
        let leader = sim.leader().unwrap();
        sim.propose(leader.0, data("x")).unwrap();
        sim.run_until(10_000, |s| [1, 2, 3, 10].iter().all(|n| s.applied(*n) == vec![data("x")]));
        assert_eq!(sim.raft(10).role(), Role::Follower);
        assert_eq!(sim.raft(10).leader(), Some(leader));
        assert_eq!(sim.raft(10).term(), sim.raft(leader.0).term());
    }

    // Guards the single-node dev setup: a 1-voter quorum must elect itself and commit alone.
    #[test]
    fn single_voter_quorum_elects_itself_and_commits() {
        let mut sim = Sim::new(2, &[1], &[]);
        let started_ms = sim.now_ms;
        sim.run_until(100, |s| s.leader_ready().is_some());
        assert_eq!(sim.leader(), Some(NodeId(1)));
        // Nothing to wait for: a standalone node starts without an election timeout.
        assert!(sim.now_ms - started_ms < RaftConfig::new(NodeId(1), vec![NodeId(1)], vec![]).election_timeout_ms);
        let index = sim.propose(1, data("a")).unwrap();
        assert_eq!(index, Index(2));
        sim.run_until(100, |s| s.applied(1) == vec![data("a")]);
        assert_eq!(sim.raft_mut(1).propose(0, data("b")).map(|_| ()), Ok(()));
    }

    // A standalone node whose vote persists asynchronously: one term, not a new term on every
    // timer tick while the vote is on its way to disk.
    #[test]
    fn single_voter_with_slow_disk_elects_in_its_first_term() {
        let config = RaftConfig::new(NodeId(1), vec![NodeId(1)], vec![]);
        let mut raft = Raft::restore(config, 7, 0, HardState::default(), Vec::new()).unwrap();
        let mut votes = Vec::new();
        // The driver's timer fires again and again while the vote is still being written.
        for now in 0..50 {
            if let Some(due) = raft.poll_timeout().filter(|&due| due <= now) {
                raft.handle_timeout(due);
            }
            while let Some(action) = raft.poll_action() {
                if let Action::PersistVote { term, voted_for } = action {
                    votes.push(HardState { term, voted_for });
                }
            }
        }
        assert_eq!(votes.len(), 1, "elections overtook their own vote: {votes:?}");
        raft.handle_completion(50, Completion::VotePersisted { term: votes[0].term, voted_for: votes[0].voted_for });
        assert_eq!((raft.role(), raft.term()), (Role::Leader, votes[0].term));
    }

    // Guards election safety (at most one leader per term), state machine safety and leader
    // completeness under message loss, reordering, slow disks and crashes with lost unsynced
    // writes, each drawn from a seed; then checks the cluster recovers once faults stop.
    #[test]
    fn one_leader_per_term_and_agreeing_logs_under_seeded_faults() {
        for seed in 0..300u64 {
            let mut sim = Sim::new(seed, &[1, 2, 3], &[9]);
            sim.sync_io = false;
            let ids: Vec<NodeId> = sim.nodes.keys().copied().collect();
            let mut proposed = 0;
            // Swarm testing: each seed draws its own fault rates (per mille).
            let drop_pm = sim.random() % 150;
            let crash_pm = sim.random() % 15;
            let advance_pm = 10 + sim.random() % 40;
            for _ in 0..3000 {
                let r = sim.random() % 1000;
                let pending_io: Vec<NodeId> =
                    ids.iter().copied().filter(|id| !sim.nodes[id].pending_io.is_empty()).collect();
                if r < crash_pm {
                    let id = ids[(sim.random() % ids.len() as u64) as usize];
                    if sim.nodes[&id].raft.is_some() {
                        sim.crash(id);
                    } else {
                        sim.start(id);
                    }
                } else if r < crash_pm + 40 {
                    if let Some(leader) = sim.leader() {
                        proposed += 1;
                        let payload = data(&format!("{seed}-{proposed}"));
                        let _ = sim.propose(leader, payload);
                    }
                } else if r < crash_pm + 40 + advance_pm || (sim.net.is_empty() && pending_io.is_empty()) {
                    sim.advance();
                } else if !pending_io.is_empty() && (sim.net.is_empty() || sim.random().is_multiple_of(3)) {
                    let id = pending_io[(sim.random() % pending_io.len() as u64) as usize];
                    sim.complete_io(id);
                } else if !sim.net.is_empty() {
                    let i = (sim.random() % sim.net.len() as u64) as usize;
                    if sim.random() % 1000 < drop_pm {
                        sim.net.remove(i);
                    } else {
                        sim.deliver(i);
                    }
                }
            }
            // Liveness phase: everyone up, reliable network; a leader commits a new entry.
            for id in ids.clone() {
                if sim.nodes[&id].raft.is_none() {
                    sim.start(id);
                }
            }
            sim.sync_io = true;
            for id in ids.clone() {
                while sim.complete_io(id) {}
            }
            sim.run_until(50_000, |s| s.leader_ready().is_some());
            let leader = sim.leader().unwrap();
            let now_ms = sim.now_ms;
            sim.nodes.get_mut(&leader).unwrap().raft.as_mut().unwrap().propose(now_ms, data("final")).unwrap();
            sim.drain(leader);
            sim.run_until(50_000, |s| {
                [1, 2, 3, 9].iter().all(|n| s.applied(*n).last() == Some(&data("final")))
            });
            assert!(!sim.leaders.is_empty());
        }
    }

    // Guards log matching and leader completeness (Raft §5.4): an entry acknowledged as
    // committed survives its leader's crash and is in the log of every later leader.
    #[test]
    fn committed_entry_survives_leader_crash_and_is_in_every_later_leader_log() {
        let mut sim = Sim::new(3, &[1, 2, 3], &[]);
        sim.run_until(10_000, |s| s.leader_ready().is_some());
        let first = sim.leader().unwrap();
        sim.propose(first.0, data("kept")).unwrap();
        sim.drain(first);
        sim.run_until(10_000, |s| s.applied(first.0) == vec![data("kept")]);
        let committed = sim.raft(first.0).commit_index();
        for round in 0..3 {
            let leader = sim.leader().unwrap();
            sim.crash(leader);
            sim.run_until(20_000, |s| s.leader_ready().is_some_and(|l| l != leader));
            let next = sim.leader().unwrap();
            for i in 1..=committed.0 {
                assert_eq!(sim.raft(next.0).entry(Index(i)), sim.nodes[&first].disk_log.get(i as usize - 1), "round {round}");
            }
            sim.start(leader);
        }
        sim.run_until(20_000, |s| [1, 2, 3].iter().all(|n| s.applied(*n).first() == Some(&data("kept"))));
    }

    // Guards against split brain: a leader cut off from the majority cannot commit what it is
    // given, resigns after an election timeout (check quorum), and its entry is overwritten.
    #[test]
    fn partitioned_old_leader_cannot_commit() {
        let mut sim = Sim::new(4, &[1, 2, 3], &[]);
        sim.run_until(10_000, |s| s.leader_ready().is_some());
        let old = sim.leader().unwrap();
        for other in [1, 2, 3].map(NodeId) {
            if other != old {
                sim.cut.insert((old, other));
                sim.cut.insert((other, old));
            }
        }
        sim.net.clear();
        let before = sim.raft(old.0).commit_index();
        sim.propose(old.0, data("lost")).unwrap();
        sim.drain(old);
        sim.run_until(20_000, |s| s.leader().is_some_and(|l| l != old) && s.leader_ready().is_some());
        let new = sim.leader().unwrap();
        sim.propose(new.0, data("won")).unwrap();
        sim.drain(new);
        sim.run_until(20_000, |s| s.applied(new.0) == vec![data("won")]);
        assert_eq!(sim.raft(old.0).commit_index(), before, "the old leader committed alone");
        // Within one election timeout of losing its majority it resigns.
        let deadline_ms = sim.now_ms + 1_000;
        sim.run_until(20_000, |s| s.raft(old.0).role() != Role::Leader);
        assert!(sim.now_ms <= deadline_ms, "check quorum did not depose the old leader in time");
        assert_eq!(sim.raft(old.0).commit_index(), before, "the old leader committed alone");
        // It stays in its term while cut off (pre-vote), so healing does not depose the new
        // leader: the old one just follows and its uncommitted entry is overwritten.
        let term = sim.raft(new.0).term();
        sim.advance();
        sim.advance();
        assert!(sim.raft(old.0).term() <= term, "the cut-off node inflated its term");
        sim.cut.clear();
        sim.run_until(50_000, |s| s.leader_ready().is_some() && s.applied(old.0) == vec![data("won")]);
        assert!(!sim.applied(old.0).contains(&data("lost")));
        assert_eq!((sim.leader(), sim.raft(new.0).term()), (Some(new), term), "healing deposed the leader");
    }

    // Guards the vote's durability (Raft figure 2: votedFor is persisted before responding): a
    // voter that restarts remembers its term and vote and does not vote twice in that term.
    #[test]
    fn persisted_term_and_vote_survive_restart_without_double_vote() {
        let mut sim = Sim::new(5, &[1, 2, 3], &[]);
        sim.sync_io = false;
        // Node 1 stands for term 1.
        let candidate = NodeId(1);
        let now_ms = sim.raft(1).poll_timeout().unwrap();
        sim.now_ms = now_ms;
        sim.raft_mut(1).handle_timeout(now_ms);
        sim.drain(candidate);
        // Pre-vote round: nobody's term or vote changes.
        while !sim.net.iter().any(|(_, to, m)| *to == NodeId(2) && matches!(m, Message::Vote { .. })) {
            let i = sim.net.iter().position(|(_, to, _)| *to != NodeId(3)).expect("pre-vote stalled");
            sim.deliver(i);
            while sim.complete_io(candidate) {}
        }
        assert_eq!((sim.raft(2).term(), sim.raft(3).term()), (Term(0), Term(0)));
        sim.net.retain(|(_, to, m)| *to == NodeId(2) && matches!(m, Message::Vote { .. }));
        let vote_to_2 = sim.net.iter().position(|(_, to, _)| *to == NodeId(2)).unwrap();
        sim.deliver(vote_to_2);
        // Node 2 granted, but the grant is held until its vote is durable.
        assert!(sim.net.iter().all(|(from, _, _)| *from != NodeId(2)), "vote sent before persisted");
        assert!(matches!(sim.nodes[&NodeId(2)].pending_io.back(), Some(Io::Vote(h)) if h.voted_for == Some(candidate)));
        while sim.complete_io(NodeId(2)) {}
        let grant = sim.net.iter().find(|(from, _, _)| *from == NodeId(2)).map(|m| m.2.clone());
        assert_eq!(grant, Some(Message::VoteResponse { term: Term(1), granted: true }));
        // Node 2 restarts: it must still be in term 1 with its vote for node 1.
        sim.crash(NodeId(2));
        sim.start(NodeId(2));
        assert_eq!(sim.raft(2).term(), Term(1));
        assert_eq!(sim.nodes[&NodeId(2)].disk_hard, HardState { term: Term(1), voted_for: Some(candidate) });
        // Node 3 asks for node 2's vote in the same term: refused.
        sim.net.clear();
        sim.raft_mut(2).handle_message(now_ms, NodeId(3), Message::Vote { term: Term(1), last_log_index: Index(5), last_log_term: Term(1) });
        sim.drain(NodeId(2));
        assert_eq!(sim.net.pop().map(|m| m.2), Some(Message::VoteResponse { term: Term(1), granted: false }));
        // A crash before the vote is durable loses the vote, and no grant ever left.
        sim.raft_mut(3).handle_message(now_ms, NodeId(1), Message::Vote { term: Term(2), last_log_index: Index(0), last_log_term: Term(0) });
        sim.drain(NodeId(3));
        assert!(sim.net.is_empty(), "grant left before the vote was durable");
        sim.crash(NodeId(3));
        sim.start(NodeId(3));
        assert_eq!(sim.raft(3).term(), Term(0));
    }

    // Guards "network input never panics": a node in every role fed random but well-formed
    // messages from its peers keeps its invariants (checked after every input).
    #[test]
    fn random_messages_from_peers_never_break_invariants() {
        for seed in 0..50u64 {
            let mut sim = Sim::new(seed, &[1, 2, 3], &[9]);
            sim.run_until(10_000, |s| s.leader_ready().is_some());
            sim.propose(sim.leader().unwrap(), data("a")).unwrap();
            sim.run_until(10_000, |s| s.applied(1).len() == 1 && s.applied(2).len() == 1 && s.applied(3).len() == 1);
            for _ in 0..300 {
                let to = [1, 2, 3, 9][(sim.random() % 4) as usize];
                let from = [1, 2, 3, 9][(sim.random() % 4) as usize];
                let term = Term((sim.random() % 6) as i32);
                let index = Index(sim.random() % 6);
                let other = Term((sim.random() % 6) as i32);
                let message = match sim.random() % 6 {
                    0 => Message::PreVote { term, last_log_index: index, last_log_term: other },
                    1 => Message::PreVoteResponse { term, granted: sim.random().is_multiple_of(2) },
                    2 => Message::Vote { term, last_log_index: index, last_log_term: other },
                    3 => Message::VoteResponse { term, granted: sim.random().is_multiple_of(2) },
                    4 => {
                        let n = sim.random() % 3;
                        let entries = (0..n)
                            .map(|i| Entry { index: Index(index.0 + 1 + i), term: Term((sim.random() % 6) as i32), data: data("r") })
                            .collect();
                        Message::Append { term, prev_log_index: index, prev_log_term: other, leader_commit: Index(sim.random() % 8), entries }
                    }
                    _ => Message::AppendResponse { term, success: sim.random().is_multiple_of(2), match_index: Index(sim.random() % 8) },
                };
                // Forged messages break cluster-level safety by design (Raft is not Byzantine
                // tolerant), so only the node's own invariants are checked: drive it alone.
                let fire = sim.random().is_multiple_of(10);
                let raft = sim.raft_mut(to);
                // Virtual time: the node's next timer (deadlines only move forward).
                let now_ms = raft.poll_timeout().unwrap_or(0);
                raft.handle_message(now_ms, NodeId(from), message);
                if fire {
                    raft.handle_timeout(raft.poll_timeout().unwrap_or(now_ms).max(now_ms));
                }
                while let Some(action) = raft.poll_action() {
                    let completion = match action {
                        Action::PersistVote { term, voted_for } => Completion::VotePersisted { term, voted_for },
                        Action::Append { entries } => {
                            let last = entries.last().unwrap();
                            Completion::Persisted { through: last.index, term: last.term }
                        }
                        _ => continue,
                    };
                    raft.handle_completion(now_ms, completion);
                }
            }
        }
    }

    #[test]
    fn messages_entries_and_hard_state_round_trip_and_garbage_is_an_error() {
        let entry = Entry { index: Index(8), term: Term(3), data: data("payload") };
        let messages = [
            Message::Vote { term: Term(4), last_log_index: Index(7), last_log_term: Term(3) },
            Message::VoteResponse { term: Term(4), granted: true },
            Message::PreVote { term: Term(4), last_log_index: Index(7), last_log_term: Term(3) },
            Message::PreVoteResponse { term: Term(4), granted: false },
            Message::Append {
                term: Term(4),
                prev_log_index: Index(7),
                prev_log_term: Term(3),
                leader_commit: Index(6),
                entries: vec![entry.clone(), Entry { index: Index(9), term: Term(4), data: Bytes::new() }],
            },
            Message::AppendResponse { term: Term(4), success: false, match_index: Index(2) },
        ];
        for message in messages {
            let bytes = message.encode();
            assert_eq!(Message::decode(&bytes), Ok(message.clone()));
            for cut in 0..bytes.len() {
                assert!(Message::decode(&bytes.slice(..cut)).is_err(), "{message:?} cut at {cut}");
            }
        }
        assert_eq!(Entry::decode(&entry.encode()), Ok(entry));
        let hard = HardState { term: Term(9), voted_for: Some(NodeId(2)) };
        assert_eq!(HardState::decode(&hard.encode()), Ok(hard));
        assert_eq!(Message::decode(&Bytes::from_static(&[0, 9])), Err(DecodeError::Tag(9)));
        assert_eq!(Message::decode(&Bytes::from_static(&[7])), Err(DecodeError::Version(7)));
        // A forged entry count cannot make the decoder allocate.
        let forged = Bytes::from_static(&[0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255]);
        assert!(Message::decode(&forged).is_err());
    }
}
