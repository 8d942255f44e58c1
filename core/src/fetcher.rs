//! The follower side of replication between brokers, as Kafka's `ReplicaFetcherThread`: one
//! fetcher per source broker gathers the next fetch of every partition this broker follows
//! there into one multi-partition Fetch (v12: follower id, current leader epoch, last fetched
//! epoch), keeps at most one such request in flight per source broker, and hands each
//! partition of the answer back to its [`Replica`](crate::replica::Replica).
//!
//! Sans-IO: the driver sends [`Fetchers::poll_request`]'s requests on one connection per source
//! broker and feeds answers (or the transport failure) to [`Fetchers::handle_response`]. The
//! replicas keep every replication rule; the fetcher only batches and routes, and treats the
//! answer as untrusted (a partition the answer leaves out is a failed fetch for its replica,
//! which must get exactly one answer per fetch).
//!
//! The leader's side of the same exchange is [`partition_request`] and [`partition_data`]: a
//! Fetch partition in, a replica's answer out, shared by every broker that answers fetches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{self, PartitionData};
use kafka_protocol::messages::{FetchRequest as WireFetchRequest, FetchResponse as WireFetchResponse};
use kafka_protocol::protocol::StrBytes;

use crate::error::ErrorCode;
use crate::ids::{LeaderEpoch, NodeId, Offset};
use crate::replica::{EpochEndOffset, FetchRequest, FetchResponse};
use crate::replication_quota::{QuotaWindow, ReplicationQuota};

/// The Fetch version followers send: the first with `last_fetched_epoch` and
/// `diverging_epoch` (KIP-320/595) that still names topics (v13 moved to topic ids).
pub const FOLLOWER_FETCH_VERSION: i16 = 12;
pub const CLIENT_ID: &str = "odradek-replica-fetcher";
/// `replica.fetch.response.max.bytes`.
pub const DEFAULT_RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
/// How long a source broker's next request waits for the partitions its last answer fed to
/// queue their next fetch (each appends and, with fsync on, syncs first). Kafka's fetcher
/// thread appends before it builds the next request, so every partition rides every round;
/// here the replicas append on their own, and a request sent before they are back would
/// leave them behind it for up to its `max_wait_ms`.
pub const ROUND_GRACE_MS: i64 = 100;
/// odradek's own tagged field of a follower's fetch partition (Fetch v12+ is flexible; Kafka
/// defines tags 0 and 1 there and ignores unknown ones): the follower's durable end, 8 bytes
/// big-endian, when it fetches ahead of its fsync (`replica` rule 3).
pub const DURABLE_OFFSET_TAG: i32 = 0x4F44;
/// How long a source broker whose queued partitions are all held back by the follower's
/// replication throttle waits before looking again (the quota's samples move by the second).
pub const THROTTLE_RECHECK_MS: i64 = 100;

/// A partition by topic name. The name is shared: a partition is named in every parked long
/// poll, dirty set, timer and request part, and a clone must not copy the string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }
}

/// A multi-partition fetch for the driver to send to `leader`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub leader: NodeId,
    /// Names the request in [`Fetchers::handle_response`]; the driver may use its low bits as
    /// the Kafka correlation id.
    pub request_id: u64,
    pub request: WireFetchRequest,
    /// When the exchange counts as failed if no answer came (the driver's `now_ms` clock).
    pub deadline_ms: i64,
}

/// One partition of the answer, for its replica's `handle_fetch_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub partition: TopicPartition,
    pub fetch_id: u64,
    pub response: FetchResponse,
}

#[derive(Debug, Default)]
struct Session {
    /// Each partition's next fetch (its replica's fetch id and request), for the next request.
    queued: BTreeMap<TopicPartition, (u64, FetchRequest)>,
    in_flight: Option<InFlight>,
    /// Partitions the last answer fed, not yet queued again, and until when to wait for them.
    awaited: BTreeSet<TopicPartition>,
    awaited_until: i64,
    /// Every queued partition was held back by the throttle: nothing goes before this.
    held_until: i64,
}

impl Session {
    fn ready(&self, now_ms: i64) -> bool {
        self.in_flight.is_none()
            && !self.queued.is_empty()
            && (self.awaited.is_empty() || now_ms >= self.awaited_until)
            && now_ms >= self.held_until
    }
}

/// The follower side of the replication throttles (KIP-73): this core's share of
/// `follower.replication.throttled.rate`, the partitions `follower.replication.throttled.replicas`
/// names for this broker, and each partition's last high watermark from its leader, which
/// tells whether it is in sync (Kafka's `PartitionFetchState.isReplicaInSync`: no lag at the
/// last answer).
#[derive(Debug, Default)]
struct FollowerThrottle {
    quota: ReplicationQuota,
    throttled: BTreeSet<TopicPartition>,
    high_watermarks: BTreeMap<TopicPartition, Offset>,
}

impl FollowerThrottle {
    /// Kafka's `shouldFollowerThrottle`: a throttled partition not in sync waits while the
    /// quota is exceeded.
    fn holds_back(&mut self, now_ms: i64, partition: &TopicPartition, request: &FetchRequest) -> bool {
        self.throttled.contains(partition)
            && self.high_watermarks.get(partition).is_none_or(|hw| request.fetch_offset < *hw)
            && self.quota.is_exceeded(now_ms)
    }
}

#[derive(Debug)]
struct InFlight {
    request_id: u64,
    deadline_ms: i64,
    parts: Vec<(TopicPartition, u64)>,
}

/// The fetchers of one broker (of one core, in the thread-per-core broker), keyed by source
/// broker.
#[derive(Debug)]
pub struct Fetchers {
    local: NodeId,
    response_max_bytes: i32,
    /// How long past its `max_wait_ms` a request may go unanswered (`replica.socket.timeout.ms`);
    /// a lost request or answer must not stall its source broker's partitions for good.
    request_timeout_ms: i64,
    sessions: BTreeMap<NodeId, Session>,
    next_request_id: u64,
    throttle: FollowerThrottle,
}

impl Fetchers {
    pub fn new(local: NodeId, response_max_bytes: i32, request_timeout_ms: i64) -> Self {
        Fetchers {
            local,
            response_max_bytes,
            request_timeout_ms,
            sessions: BTreeMap::new(),
            next_request_id: 0,
            throttle: FollowerThrottle::default(),
        }
    }

    /// `follower.replication.throttled.rate` (this core's share; `None`: no throttle).
    pub fn set_throttle_bound(&mut self, bytes_per_s: Option<u64>) {
        self.throttle.quota.set_bound(bytes_per_s);
    }

    /// The samples the follower's throttle rate is measured over; the bound stays.
    pub fn set_throttle_window(&mut self, window: QuotaWindow) {
        let bound = self.throttle.quota.bound();
        self.throttle.quota = ReplicationQuota::new(window);
        self.throttle.quota.set_bound(bound);
    }

    pub fn throttle_bound(&self) -> Option<u64> {
        self.throttle.quota.bound()
    }

    /// Whether `follower.replication.throttled.replicas` names the partition on this broker;
    /// true when that changed.
    pub fn set_throttled(&mut self, partition: &TopicPartition, throttled: bool) -> bool {
        if throttled {
            self.throttle.throttled.insert(partition.clone())
        } else {
            self.throttle.throttled.remove(partition)
        }
    }

    /// A replica's `SendFetch`: it joins its leader's next request. A partition queued for
    /// another leader moves (its leader changed before that request went out).
    pub fn enqueue(&mut self, leader: NodeId, partition: TopicPartition, fetch_id: u64, request: FetchRequest) {
        // Also no longer awaited: it is back.
        self.unqueue(&partition);
        self.sessions.entry(leader).or_default().queued.insert(partition, (fetch_id, request));
    }

    /// Forgets a partition's queued fetch (the replica stopped, or leads now). A fetch already
    /// in flight is still answered; the replica ignores answers to fetches it no longer waits for.
    pub fn remove(&mut self, partition: &TopicPartition) {
        self.unqueue(partition);
        self.throttle.throttled.remove(partition);
        self.throttle.high_watermarks.remove(partition);
    }

    fn unqueue(&mut self, partition: &TopicPartition) {
        for session in self.sessions.values_mut() {
            session.queued.remove(partition);
            session.awaited.remove(partition);
        }
    }

    /// The next request to send: for a source broker with queued partitions, none in flight,
    /// and every partition its last answer fed queued again (or [`ROUND_GRACE_MS`] passed).
    /// Partitions the follower's throttle holds back stay queued for a later request; a source
    /// broker with only those waits [`THROTTLE_RECHECK_MS`].
    pub fn poll_request(&mut self, now_ms: i64) -> Option<Outgoing> {
        let throttle = &mut self.throttle;
        let (leader, session, queued) = self.sessions.iter_mut().filter(|(_, s)| s.ready(now_ms)).find_map(|(&leader, session)| {
            let (held, queued): (BTreeMap<_, _>, BTreeMap<_, _>) =
                std::mem::take(&mut session.queued).into_iter().partition(|(tp, (_, r))| throttle.holds_back(now_ms, tp, r));
            session.queued = held;
            if queued.is_empty() {
                session.held_until = now_ms + THROTTLE_RECHECK_MS;
                return None;
            }
            Some((leader, session, queued))
        })?;
        session.awaited.clear();
        session.held_until = 0;
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let max_wait_ms = queued.values().map(|(_, r)| r.max_wait_ms).min().unwrap_or(0);
        let mut topics: Vec<FetchTopic> = Vec::new();
        let mut parts = Vec::with_capacity(queued.len());
        for (tp, (fetch_id, r)) in queued {
            let partition = FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(r.current_leader_epoch.0)
                .with_fetch_offset(r.fetch_offset.0)
                .with_last_fetched_epoch(r.last_fetched_epoch.0)
                .with_log_start_offset(r.log_start_offset.0)
                .with_partition_max_bytes(r.max_bytes)
                .with_unknown_tagged_fields(
                    r.durable_offset
                        .map(|durable| (DURABLE_OFFSET_TAG, Bytes::copy_from_slice(&durable.0.to_be_bytes())))
                        .into_iter()
                        .collect(),
                );
            // Queued in (topic, partition) order: a topic's partitions are adjacent.
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == &*tp.topic => t.partitions.push(partition),
                _ => topics.push(
                    FetchTopic::default()
                        .with_topic(StrBytes::from_string(tp.topic.to_string()).into())
                        .with_partitions(vec![partition]),
                ),
            }
            parts.push((tp, fetch_id));
        }
        let deadline_ms = now_ms + i64::from(max_wait_ms.max(0)) + self.request_timeout_ms;
        session.in_flight = Some(InFlight { request_id, deadline_ms, parts });
        let request = WireFetchRequest::default()
            .with_replica_id(self.local.0.into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(self.response_max_bytes)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(topics);
        Some(Outgoing { leader, request_id, request, deadline_ms })
    }

    /// The answer to `request_id` from `leader` (`Err`: no answer came, the connection failed
    /// or timed out) → one answer for each partition it asked for. An answer to a request that
    /// is not in flight (a stale one) yields nothing. The partitions answered without an error
    /// are expected back for the next request; one that failed backs off instead.
    pub fn handle_response(
        &mut self,
        now_ms: i64,
        leader: NodeId,
        request_id: u64,
        answer: Result<WireFetchResponse, ErrorCode>,
    ) -> Vec<Delivery> {
        let Some(session) = self.sessions.get_mut(&leader) else { return Vec::new() };
        if session.in_flight.as_ref().is_none_or(|f| f.request_id != request_id) {
            return Vec::new();
        }
        let parts = session.in_flight.take().expect("checked above").parts;
        let throttle = &mut self.throttle;
        let mut answered: BTreeMap<(String, i32), PartitionData> = BTreeMap::new();
        let whole_error = match answer {
            Err(e) => Some(e),
            Ok(r) if r.error_code != 0 => Some(code(r.error_code)),
            Ok(r) => {
                for topic in r.responses {
                    let name = topic.topic.0.to_string();
                    for p in topic.partitions {
                        answered.entry((name.clone(), p.partition_index)).or_insert(p);
                    }
                }
                None
            }
        };
        let deliveries: Vec<Delivery> = parts
            .into_iter()
            .map(|(partition, fetch_id)| {
                let response = match (whole_error, answered.remove(&(partition.topic.to_string(), partition.partition))) {
                    (Some(e), _) => failed(e, Offset(-1)),
                    (None, None) => failed(ErrorCode::UnknownServerError, Offset(-1)),
                    (None, Some(p)) => partition_response(p),
                };
                if response.error.is_none() {
                    throttle.high_watermarks.insert(partition.clone(), response.high_watermark);
                    if throttle.throttled.contains(&partition) {
                        throttle.quota.record(now_ms, response.records.len() as u64);
                    }
                }
                Delivery { partition, fetch_id, response }
            })
            .collect();
        let session = self.sessions.get_mut(&leader).expect("found above");
        session.awaited = deliveries.iter().filter(|d| d.response.error.is_none()).map(|d| d.partition.clone()).collect();
        session.awaited_until = now_ms + ROUND_GRACE_MS;
        deliveries
    }

    /// When [`Fetchers::handle_timeout`] should next run (a request's deadline), or
    /// [`Fetchers::poll_request`] may have something new (a round's grace ends), if ever.
    pub fn poll_timeout(&self) -> Option<i64> {
        let deadlines = self.sessions.values().filter_map(|s| s.in_flight.as_ref().map(|f| f.deadline_ms));
        let rounds = self
            .sessions
            .values()
            .filter(|s| s.in_flight.is_none() && !s.queued.is_empty() && (!s.awaited.is_empty() || s.held_until > 0))
            .map(|s| if s.awaited.is_empty() { s.held_until } else { s.awaited_until.max(s.held_until) });
        deadlines.chain(rounds).min()
    }

    /// Requests past their deadline fail, each partition with REQUEST_TIMED_OUT; a late answer
    /// to one is then stale.
    pub fn handle_timeout(&mut self, now_ms: i64) -> Vec<Delivery> {
        let expired: Vec<(NodeId, u64)> = self
            .sessions
            .iter()
            .filter_map(|(&leader, s)| s.in_flight.as_ref().filter(|f| f.deadline_ms <= now_ms).map(|f| (leader, f.request_id)))
            .collect();
        expired
            .into_iter()
            .flat_map(|(leader, id)| self.handle_response(now_ms, leader, id, Err(ErrorCode::RequestTimedOut)))
            .collect()
    }

    /// Whether any source broker has a request to send or in flight.
    pub fn is_idle(&self) -> bool {
        self.sessions.values().all(|s| s.queued.is_empty() && s.in_flight.is_none())
    }
}

fn code(error_code: i16) -> ErrorCode {
    ErrorCode::try_from_code(error_code).unwrap_or(ErrorCode::UnknownServerError)
}

fn failed(error: ErrorCode, log_start_offset: Offset) -> FetchResponse {
    FetchResponse {
        error: Some(error),
        high_watermark: Offset(-1),
        last_stable_offset: Offset(-1),
        aborted_transactions: None,
        log_start_offset,
        diverging_epoch: None,
        records: Bytes::new(),
    }
}

/// One partition of a Fetch answer, as its replica takes it.
fn partition_response(p: PartitionData) -> FetchResponse {
    if p.error_code != 0 {
        // The log start lets a follower that fell behind it start over there.
        return failed(code(p.error_code), Offset(p.log_start_offset));
    }
    let diverging = (p.diverging_epoch.epoch >= 0 && p.diverging_epoch.end_offset >= 0).then_some(EpochEndOffset {
        epoch: LeaderEpoch(p.diverging_epoch.epoch),
        end_offset: Offset(p.diverging_epoch.end_offset),
    });
    FetchResponse {
        error: None,
        high_watermark: Offset(p.high_watermark),
        last_stable_offset: Offset(p.last_stable_offset),
        aborted_transactions: None,
        log_start_offset: Offset(p.log_start_offset),
        diverging_epoch: diverging,
        records: p.records.unwrap_or_default(),
    }
}

/// The leader's side: one partition of a decoded Fetch of `version`, as a replica's request.
pub fn partition_request(request: &WireFetchRequest, version: i16, partition: &FetchPartition) -> FetchRequest {
    FetchRequest {
        // Fetch v15+ moved the follower's id into replica_state; odradek serves up to v12.
        replica_id: NodeId(request.replica_id.0),
        current_leader_epoch: LeaderEpoch(if version >= 9 { partition.current_leader_epoch } else { -1 }),
        fetch_offset: Offset(partition.fetch_offset),
        last_fetched_epoch: LeaderEpoch(if version >= 12 { partition.last_fetched_epoch } else { -1 }),
        log_start_offset: Offset(partition.log_start_offset),
        max_wait_ms: request.max_wait_ms,
        max_bytes: partition.partition_max_bytes.max(0),
        read_committed: version >= 4 && request.isolation_level == 1,
        durable_offset: (request.replica_id.0 >= 0)
            .then(|| partition.unknown_tagged_fields.get(&DURABLE_OFFSET_TAG))
            .flatten()
            .and_then(|bytes| <[u8; 8]>::try_from(&bytes[..]).ok())
            .map(|bytes| Offset(i64::from_be_bytes(bytes))),
    }
}

/// The leader's side: a replica's answer (with the records read for it) as one partition of
/// a Fetch response of `version`.
pub fn partition_data(index: i32, version: i16, answer: FetchResponse) -> PartitionData {
    let diverging = answer.diverging_epoch.map_or_else(fetch_response::EpochEndOffset::default, |d| {
        fetch_response::EpochEndOffset::default().with_epoch(d.epoch.0).with_end_offset(d.end_offset.0)
    });
    PartitionData::default()
        .with_partition_index(index)
        .with_error_code(answer.error.map_or(0, |e| e.code()))
        .with_high_watermark(answer.high_watermark.0)
        .with_last_stable_offset(if version >= 4 { answer.last_stable_offset.0 } else { -1 })
        .with_aborted_transactions(answer.aborted_transactions.filter(|_| version >= 4).map(|list| {
            list.into_iter()
                .map(|t| {
                    fetch_response::AbortedTransaction::default()
                        .with_producer_id(t.producer_id.into())
                        .with_first_offset(t.first_offset.0)
                })
                .collect()
        }))
        .with_log_start_offset(if version >= 5 { answer.log_start_offset.0 } else { -1 })
        .with_diverging_epoch(diverging)
        .with_records(Some(answer.records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::FetchableTopicResponse;

    fn request(offset: i64, last_epoch: i32) -> FetchRequest {
        FetchRequest {
            replica_id: NodeId(2),
            current_leader_epoch: LeaderEpoch(4),
            fetch_offset: Offset(offset),
            last_fetched_epoch: LeaderEpoch(last_epoch),
            log_start_offset: Offset(0),
            max_wait_ms: 500,
            max_bytes: 1 << 20,
            read_committed: false,
            durable_offset: None,
        }
    }

    fn answer(parts: &[(&str, i32, FetchResponse)]) -> WireFetchResponse {
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        for (topic, index, r) in parts {
            let data = partition_data(*index, FOLLOWER_FETCH_VERSION, r.clone());
            match topics.last_mut() {
                Some(t) if t.topic.0.as_str() == *topic => t.partitions.push(data),
                _ => topics.push(
                    FetchableTopicResponse::default()
                        .with_topic(StrBytes::from_string(topic.to_string()).into())
                        .with_partitions(vec![data]),
                ),
            }
        }
        WireFetchResponse::default().with_responses(topics)
    }

    fn read(hw: i64, records: &'static [u8]) -> FetchResponse {
        FetchResponse {
            error: None,
            high_watermark: Offset(hw),
            last_stable_offset: Offset(-1),
            aborted_transactions: None,
            log_start_offset: Offset(0),
            diverging_epoch: None,
            records: Bytes::from_static(records),
        }
    }

    fn requested(outgoing: &Outgoing) -> Vec<(String, i32)> {
        outgoing.request.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), p.partition))).collect()
    }

    // Guards KIP-73 on the follower: over its rate, a throttled partition that lags stays
    // queued while the unthrottled one (and a throttled one in sync) still goes out, and the
    // held partition goes once the rate has fallen.
    #[test]
    fn follower_throttle_holds_back_only_lagging_throttled_partitions() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        f.set_throttle_window(QuotaWindow { samples: 2, window_ms: 1_000 });
        f.set_throttle_bound(Some(1_000));
        let (slow, synced, free) = (TopicPartition::new("a", 0), TopicPartition::new("a", 1), TopicPartition::new("b", 0));
        assert!(f.set_throttled(&slow, true) && f.set_throttled(&synced, true));
        for (tp, id) in [(&slow, 1), (&synced, 2), (&free, 3)] {
            f.enqueue(NodeId(1), tp.clone(), id, request(0, 4));
        }
        let sent = f.poll_request(0).unwrap();
        assert_eq!(requested(&sent).len(), 3, "under the rate everything goes");
        static BIG: [u8; 3_000] = [0; 3_000];
        let delivered = f.handle_response(
            10,
            NodeId(1),
            sent.request_id,
            Ok(answer(&[("a", 0, read(100, &BIG)), ("a", 1, read(0, b"")), ("b", 0, read(100, &BIG))])),
        );
        assert_eq!(delivered.len(), 3);
        // 3 000 throttled bytes over the minimum 1 s window: over the 1 000 B/s bound.
        f.enqueue(NodeId(1), slow.clone(), 4, request(0, 4));
        f.enqueue(NodeId(1), synced.clone(), 5, request(0, 4));
        f.enqueue(NodeId(1), free.clone(), 6, request(3, 4));
        let sent = f.poll_request(200).unwrap();
        assert_eq!(requested(&sent), [("a".to_owned(), 1), ("b".to_owned(), 0)]);
        f.handle_response(210, NodeId(1), sent.request_id, Ok(answer(&[("a", 1, read(0, b"")), ("b", 0, read(100, b""))])));
        // Only the held partition is queued: nothing goes, and the fetcher looks again later.
        assert!(f.poll_request(320).is_none());
        assert_eq!(f.poll_timeout(), Some(320 + THROTTLE_RECHECK_MS));
        assert!(f.poll_request(400).is_none(), "not before the recheck");
        // Two windows on, the samples have aged out.
        let sent = f.poll_request(2_100).unwrap();
        assert_eq!(requested(&sent), [("a".to_owned(), 0)]);
        // Unthrottled, nothing is held.
        f.handle_response(2_110, NodeId(1), sent.request_id, Ok(answer(&[("a", 0, read(100, &BIG))])));
        f.set_throttle_bound(None);
        f.enqueue(NodeId(1), slow, 7, request(3, 4));
        assert!(f.poll_request(2_120).is_some());
    }

    #[test]
    fn a_followers_durable_offset_crosses_the_wire_and_counts_only_from_a_follower() {
        use kafka_protocol::protocol::{Decodable, Encodable};
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        let mut ahead = request(9, 4);
        ahead.durable_offset = Some(Offset(6));
        f.enqueue(NodeId(1), TopicPartition::new("a", 0), 10, ahead);
        f.enqueue(NodeId(1), TopicPartition::new("a", 1), 11, request(7, 4));
        let sent = f.poll_request(0).unwrap().request;
        let mut bytes = bytes::BytesMut::new();
        sent.encode(&mut bytes, FOLLOWER_FETCH_VERSION).unwrap();
        let received = WireFetchRequest::decode(&mut bytes.freeze(), FOLLOWER_FETCH_VERSION).unwrap();
        let parts = &received.topics[0].partitions;
        let durable: Vec<_> =
            parts.iter().map(|p| partition_request(&received, FOLLOWER_FETCH_VERSION, p).durable_offset).collect();
        assert_eq!(durable, [Some(Offset(6)), None]);
        let consumer = received.clone().with_replica_id((-1).into());
        assert_eq!(partition_request(&consumer, FOLLOWER_FETCH_VERSION, &parts[0]).durable_offset, None);
    }

    #[test]
    fn one_request_per_leader_carries_every_queued_partition() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        f.enqueue(NodeId(1), TopicPartition::new("b", 0), 10, request(5, 3));
        f.enqueue(NodeId(1), TopicPartition::new("a", 1), 11, request(7, 4));
        f.enqueue(NodeId(1), TopicPartition::new("a", 0), 12, request(9, 4));
        f.enqueue(NodeId(3), TopicPartition::new("c", 0), 13, request(0, -1));
        let first = f.poll_request(0).unwrap();
        let second = f.poll_request(0).unwrap();
        assert!(f.poll_request(0).is_none(), "one request in flight per leader");
        assert_eq!((first.leader, second.leader), (NodeId(1), NodeId(3)));
        let r = &first.request;
        assert_eq!(r.replica_id.0, 2);
        let shape: Vec<(String, Vec<(i32, i64, i32, i32)>)> = r
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition, p.fetch_offset, p.last_fetched_epoch, p.current_leader_epoch))
                    .collect();
                (t.topic.0.to_string(), parts)
            })
            .collect();
        assert_eq!(
            shape,
            vec![("a".into(), vec![(0, 9, 4, 4), (1, 7, 4, 4)]), ("b".into(), vec![(0, 5, 3, 4)])]
        );
        // The encoded request is a valid Fetch v12.
        crate::wire::encode_request(kafka_protocol::messages::ApiKey::Fetch, FOLLOWER_FETCH_VERSION, 0, CLIENT_ID, r)
            .unwrap();
    }

    #[test]
    fn every_partition_asked_for_gets_exactly_one_answer() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        for (p, id) in [(0, 20), (1, 21), (2, 22)] {
            f.enqueue(NodeId(1), TopicPartition::new("t", p), id, request(0, -1));
        }
        let out = f.poll_request(0).unwrap();
        let diverging = FetchResponse {
            diverging_epoch: Some(EpochEndOffset { epoch: LeaderEpoch(3), end_offset: Offset(40) }),
            ..read(50, b"")
        };
        let not_leader = FetchResponse { error: Some(ErrorCode::NotLeaderOrFollower), ..read(-1, b"") };
        // Partition 1 is left out of the answer, and a partition never asked for is in it.
        let wire = answer(&[("t", 0, diverging.clone()), ("t", 2, not_leader), ("t", 9, read(1, b"x"))]);
        let deliveries = f.handle_response(0, NodeId(1), out.request_id, Ok(wire));
        let got: Vec<(i32, u64, Option<ErrorCode>, Option<EpochEndOffset>)> = deliveries
            .iter()
            .map(|d| (d.partition.partition, d.fetch_id, d.response.error, d.response.diverging_epoch))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 20, None, diverging.diverging_epoch),
                (1, 21, Some(ErrorCode::UnknownServerError), None),
                (2, 22, Some(ErrorCode::NotLeaderOrFollower), None),
            ]
        );
        assert!(f.is_idle());
        assert!(f.handle_response(0, NodeId(1), out.request_id, Err(ErrorCode::NetworkException)).is_empty(), "stale");
    }

    #[test]
    fn a_failed_exchange_fails_every_partition_and_frees_the_session() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        f.enqueue(NodeId(1), TopicPartition::new("t", 0), 1, request(0, -1));
        let out = f.poll_request(0).unwrap();
        // Queued while the first is in flight: waits for it.
        f.enqueue(NodeId(1), TopicPartition::new("t", 1), 2, request(0, -1));
        assert!(f.poll_request(0).is_none());
        let d = f.handle_response(0, NodeId(1), out.request_id, Err(ErrorCode::NetworkException));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].response.error, Some(ErrorCode::NetworkException));
        let next = f.poll_request(0).unwrap();
        assert_eq!(next.request.topics[0].partitions[0].partition, 1);
    }

    #[test]
    fn an_unanswered_request_times_out_and_its_late_answer_is_stale() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 1_000);
        f.enqueue(NodeId(1), TopicPartition::new("t", 0), 7, request(0, -1));
        let out = f.poll_request(100).unwrap();
        assert_eq!(out.deadline_ms, 100 + 500 + 1_000);
        assert_eq!(f.poll_timeout(), Some(out.deadline_ms));
        assert!(f.handle_timeout(out.deadline_ms - 1).is_empty());
        let d = f.handle_timeout(out.deadline_ms);
        assert_eq!((d.len(), d[0].fetch_id, d[0].response.error), (1, 7, Some(ErrorCode::RequestTimedOut)));
        assert_eq!(f.poll_timeout(), None);
        assert!(f.handle_response(0, NodeId(1), out.request_id, Ok(answer(&[("t", 0, read(1, b""))]))).is_empty());
    }

    #[test]
    fn the_next_round_waits_for_the_partitions_the_last_answer_fed() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        for p in 0..3 {
            f.enqueue(NodeId(1), TopicPartition::new("t", p), p as u64, request(0, -1));
        }
        let out = f.poll_request(0).unwrap();
        let not_leader = FetchResponse { error: Some(ErrorCode::NotLeaderOrFollower), ..read(-1, b"") };
        let wire = answer(&[("t", 0, read(1, b"x")), ("t", 1, read(1, b"")), ("t", 2, not_leader)]);
        assert_eq!(f.handle_response(10, NodeId(1), out.request_id, Ok(wire)).len(), 3);
        // Partition 1 is back at once; partition 0 still appends; 2 backs off (not awaited).
        f.enqueue(NodeId(1), TopicPartition::new("t", 1), 11, request(0, -1));
        assert!(f.poll_request(20).is_none(), "partition 0 is not back yet");
        assert_eq!(f.poll_timeout(), Some(10 + ROUND_GRACE_MS));
        f.enqueue(NodeId(1), TopicPartition::new("t", 0), 10, request(1, -1));
        let next = f.poll_request(20).unwrap();
        assert_eq!(next.request.topics[0].partitions.len(), 2);
        // A partition that never comes back holds a round up for the grace only.
        let wire = answer(&[("t", 0, read(2, b"")), ("t", 1, read(2, b""))]);
        f.handle_response(30, NodeId(1), next.request_id, Ok(wire));
        f.enqueue(NodeId(1), TopicPartition::new("t", 1), 12, request(0, -1));
        assert!(f.poll_request(30 + ROUND_GRACE_MS - 1).is_none());
        assert!(f.poll_request(30 + ROUND_GRACE_MS).is_some());
    }

    #[test]
    fn a_partition_moves_with_its_leader() {
        let mut f = Fetchers::new(NodeId(2), DEFAULT_RESPONSE_MAX_BYTES, 30_000);
        f.enqueue(NodeId(1), TopicPartition::new("t", 0), 1, request(0, -1));
        f.enqueue(NodeId(3), TopicPartition::new("t", 0), 2, request(0, -1));
        let out = f.poll_request(0).unwrap();
        assert_eq!(out.leader, NodeId(3));
        assert!(f.poll_request(0).is_none());
        f.enqueue(NodeId(1), TopicPartition::new("u", 0), 3, request(0, -1));
        f.remove(&TopicPartition::new("u", 0));
        assert!(f.poll_request(0).is_none());
    }

    #[test]
    fn leader_side_round_trips_a_replica_answer() {
        let answer = FetchResponse {
            error: None,
            high_watermark: Offset(12),
            last_stable_offset: Offset(-1),
            aborted_transactions: None,
            log_start_offset: Offset(3),
            diverging_epoch: Some(EpochEndOffset { epoch: LeaderEpoch(2), end_offset: Offset(8) }),
            records: Bytes::from_static(b"batch"),
        };
        assert_eq!(partition_response(partition_data(0, 12, answer.clone())), answer);
        let wire = WireFetchRequest::default().with_replica_id(5.into()).with_max_wait_ms(100);
        let p = FetchPartition::default().with_fetch_offset(4).with_last_fetched_epoch(2).with_current_leader_epoch(3);
        let r = partition_request(&wire, 12, &p);
        assert_eq!((r.replica_id, r.fetch_offset, r.last_fetched_epoch, r.current_leader_epoch), (NodeId(5), Offset(4), LeaderEpoch(2), LeaderEpoch(3)));
        assert_eq!(partition_request(&wire, 11, &p).last_fetched_epoch, LeaderEpoch(-1));
    }
}
