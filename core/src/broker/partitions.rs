//! Produce, Fetch, ListOffsets, OffsetForLeaderEpoch, DescribeProducers and DeleteRecords from
//! the decoded Kafka request to the whole Kafka response. A request is split into one part per
//! partition, grouped by the core that owns the partition ([`shard_for`]: Redpanda's shard
//! table, the same on every core); each part is answered by that core's
//! [`Shard`](super::Shard) (a read with the bytes its executor reads from the log); the answers
//! come back grouped per core and are merged into the client's order, under their topics. The broker's handlers run a call across their
//! cores, the simulator's nodes on their one, so both give clients the same answers.
//!
//! The executor's part in a call: [`Parts`] out to the owning cores, [`Answers`] back, in any
//! order of cores. A call checks that every position is answered exactly once (a routing bug
//! otherwise, not bad input).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset as WireEpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
use kafka_protocol::messages::describe_producers_response::{PartitionResponse, ProducerState, TopicResponse};
use kafka_protocol::messages::produce_response::TopicProduceResponse;
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeProducersRequest, DescribeProducersResponse, ProducerId,
    FetchRequest as WireFetchRequest, FetchResponse as WireFetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest, ProduceResponse, TopicName,
};
use tracing::warn;

use super::{fetch_complete, fit_fetch_budget, produce_partition, produce_refusal};
use crate::error::{code, ErrorCode};
use crate::fetcher::{self, TopicPartition};
use crate::ids::{LeaderEpoch, Offset};
use crate::replica::{EpochEndOffset, FetchRequest, FetchResponse, ProduceAck};
use crate::validate::Refusal;
use crate::shard::{merge_in_order, shard_for, split_by_shard, ShardId};
use crate::wire::regroup;

/// A call's parts for each owning core, each tagged with its position in the request.
pub type Parts<P> = BTreeMap<ShardId, Vec<(usize, P)>>;

/// The answers the cores gave, one list per core, each answer under its part's position.
pub type Answers<R> = Vec<Vec<(usize, R)>>;

/// The topics of a request and their partition indexes, in the client's order: the answers
/// are put back under them.
#[derive(Debug, Clone)]
struct Shape {
    topics: Vec<(TopicName, Vec<i32>)>,
}

impl Shape {
    fn len(&self) -> usize {
        self.topics.iter().map(|(_, p)| p.len()).sum()
    }

    fn partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.topics.iter().flat_map(|(name, indexes)| {
            let topic: Arc<str> = Arc::from(&*name.0);
            indexes.iter().map(move |&i| TopicPartition { topic: topic.clone(), partition: i })
        })
    }
}

fn split<P>(parts: impl IntoIterator<Item = (TopicPartition, P)>, cores: usize) -> Parts<P> {
    split_by_shard(parts.into_iter().map(|(tp, part)| (shard_for(&tp.topic, tp.partition, cores), part)))
}

/// A request's shape and its parts per owning core, from each topic's name and partitions:
/// `index` names a partition, `part` makes its part.
fn split_request<'a, Q: 'a, P>(
    topics: impl Iterator<Item = (&'a TopicName, &'a [Q])>,
    index: impl Fn(&Q) -> i32,
    part: impl Fn(TopicPartition, &Q) -> P,
    cores: usize,
) -> (Shape, Parts<P>) {
    let mut shape = Vec::new();
    let mut parts = Vec::new();
    for (name, partitions) in topics {
        shape.push((name.clone(), partitions.iter().map(&index).collect()));
        // One copy of the name for all of a topic's partitions.
        let topic: Arc<str> = Arc::from(&*name.0);
        for q in partitions {
            let partition = TopicPartition { topic: topic.clone(), partition: index(q) };
            parts.push((partition.clone(), part(partition, q)));
        }
    }
    (Shape { topics: shape }, split(parts, cores))
}

// ---- Produce ----

/// One partition of a Produce, for its owning core ([`super::Shard::produce_part`]).
#[derive(Debug, Clone)]
pub struct ProducePart {
    pub partition: TopicPartition,
    pub records: Bytes,
    pub acks: i16,
    pub timeout_ms: i32,
    /// The request's transactional id (v3+), to verify a transactional batch with its
    /// coordinator before it starts a transaction on the partition (KIP-890).
    pub transactional_id: Option<String>,
}

/// A Produce on its way through the cores.
#[derive(Debug)]
pub struct ProduceCall {
    version: i16,
    acks: i16,
    shape: Shape,
    /// The whole request's refusal: no part went out, every partition gets it.
    refused: Option<ErrorCode>,
}

impl ProduceCall {
    /// The call and its parts; none when the whole request is refused ([`produce_refusal`]).
    pub fn new(request: ProduceRequest, version: i16, cores: usize) -> (ProduceCall, Parts<ProducePart>) {
        let refused = produce_refusal(&request);
        let (acks, timeout_ms) = (request.acks, request.timeout_ms);
        let transactional_id = request.transactional_id.as_ref().map(|id| id.0.to_string()).filter(|id| !id.is_empty());
        let mut topics = Vec::with_capacity(request.topic_data.len());
        let mut parts = Vec::new();
        for topic in request.topic_data {
            topics.push((topic.name.clone(), topic.partition_data.iter().map(|p| p.index).collect()));
            let name: Arc<str> = Arc::from(&*topic.name.0);
            for p in topic.partition_data {
                let partition = TopicPartition { topic: name.clone(), partition: p.index };
                let records = p.records.unwrap_or_default();
                parts.push((partition.clone(), ProducePart { partition, records, acks, timeout_ms, transactional_id: transactional_id.clone() }));
            }
        }
        if let Some(error) = refused {
            warn!(acks, ?error, "refused produce");
            parts.clear();
        }
        (ProduceCall { version, acks, shape: Shape { topics }, refused }, split(parts, cores))
    }

    /// acks=0: the client reads no response.
    pub fn acks(&self) -> i16 {
        self.acks
    }

    pub fn answer(self, answers: Answers<Result<ProduceAck, Refusal>>) -> ProduceResponse {
        let total = self.shape.len();
        let results = match self.refused {
            Some(error) => (0..total).map(|_| Err(error.into())).collect(),
            None => merge_in_order(total, answers),
        };
        let version = self.version;
        let responses = regroup(
            self.shape.topics,
            results,
            |index, r| produce_partition(r, version).with_index(index),
            |name, partitions| TopicProduceResponse::default().with_name(name).with_partition_responses(partitions),
        );
        ProduceResponse::default().with_responses(responses)
    }
}

// ---- Fetch ----

/// One partition of a Fetch, for its owning core ([`super::Shard::fetch_part`]).
#[derive(Debug, Clone)]
pub struct FetchPart {
    pub partition: TopicPartition,
    pub request: FetchRequest,
}

/// What a core's replica answered for a fetched partition, before the executor reads.
#[derive(Debug)]
pub struct PartRead {
    pub(super) answer: crate::replica::FetchAnswer,
    pub(super) log_start: Offset,
    pub(super) fetch_offset: Offset,
    pub(super) max_bytes: i32,
    /// Under `read_committed`, the aborted transactions the read meets.
    pub(super) aborted: Option<Vec<crate::producer::AbortedTxn>>,
    /// A follower's fetch of a partition under the leader's replication throttle: the bytes
    /// sent count against `leader.replication.throttled.rate` ([`super::Shard::record_leader_throttled`]).
    pub(super) leader_throttled: bool,
}

/// A range of the partition's log the executor reads for a fetch: batches from `from` (the
/// one holding it, for a consumer) below `upto`, at most `max_bytes` (but always one whole
/// batch, KIP-74).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRange {
    pub from: Offset,
    pub upto: Offset,
    pub max_bytes: usize,
}

impl PartRead {
    /// Whether the bytes answered count against the leader's replication throttle.
    pub fn leader_throttled(&self) -> bool {
        self.leader_throttled
    }

    /// What to read from the log, if anything.
    pub fn range(&self) -> Option<ReadRange> {
        let upto = self.answer.read_to()?;
        let max_bytes = if self.max_bytes <= 0 { usize::MAX } else { self.max_bytes as usize };
        (upto > self.fetch_offset).then_some(ReadRange { from: self.fetch_offset, upto, max_bytes })
    }

    /// The partition's answer with the bytes read for [`Self::range`] (empty when there was
    /// none); a failed read is KAFKA_STORAGE_ERROR. An error carries the log start: a follower
    /// that fell behind it starts over there.
    pub fn into_response(self, read: Result<Bytes, ()>) -> FetchResponse {
        match read {
            Ok(records) => {
                let mut response = self.answer.into_response(records, self.log_start);
                response.aborted_transactions = self.aborted;
                response
            }
            Err(()) => crate::replica::FetchAnswer::Error(ErrorCode::KafkaStorageError).into_response(Bytes::new(), self.log_start),
        }
    }
}

/// One core's share of a Fetch: its parts under their positions in the request. Shared, since
/// every read of a long poll sends the same parts.
pub type FetchGroup = Arc<[(usize, FetchPart)]>;

/// A Fetch, a consumer's or a follower's, read as often as its long poll needs: each read
/// sends [`Self::groups`] to the owning cores; [`Self::complete`] says whether the answers
/// end the poll; otherwise the executor parks the call's partitions ([`Self::watched`]) in
/// the purgatory and reads again when woken.
#[derive(Debug)]
pub struct FetchCall {
    version: i16,
    shape: Shape,
    len: usize,
    groups: Vec<(ShardId, FetchGroup)>,
    watched: Arc<[TopicPartition]>,
    min_bytes: usize,
    max_bytes: i32,
    deadline_ms: i64,
}

impl FetchCall {
    /// The call, or the whole request's error answer: odradek creates no fetch sessions
    /// (KIP-227), so a client can only name one it invented (it falls back to full fetches on
    /// FETCH_SESSION_ID_NOT_FOUND).
    pub fn new(request: &WireFetchRequest, version: i16, now_ms: i64, cores: usize) -> Result<FetchCall, WireFetchResponse> {
        if request.session_id != 0 {
            return Err(WireFetchResponse::default().with_error_code(ErrorCode::FetchSessionIdNotFound.code()));
        }
        let (shape, groups) = split_request(
            request.topics.iter().map(|t| (&t.topic, &t.partitions[..])),
            |p| p.partition,
            |partition, p| FetchPart { partition, request: fetcher::partition_request(request, version, p) },
            cores,
        );
        Ok(FetchCall {
            version,
            watched: shape.partitions().collect(),
            len: shape.len(),
            shape,
            groups: groups.into_iter().map(|(core, group)| (core, group.into())).collect(),
            // Kafka answers at once when min_bytes is 0, and otherwise waits for one byte.
            min_bytes: request.min_bytes.max(0) as usize,
            max_bytes: request.max_bytes,
            deadline_ms: now_ms.saturating_add(i64::from(request.max_wait_ms.max(0))),
        })
    }

    /// Each partition's part (in the client's order within each core's share).
    pub fn requests(&self) -> impl Iterator<Item = &FetchPart> {
        self.groups.iter().flat_map(|(_, group)| group.iter().map(|(_, part)| part))
    }

    /// The partitions a parked read waits on (shared, since every read of a long poll parks
    /// on them again).
    pub fn watched(&self) -> Arc<[TopicPartition]> {
        self.watched.clone()
    }

    pub fn deadline_ms(&self) -> i64 {
        self.deadline_ms
    }

    /// One read's parts, one share per owning core (split once, when the call was made).
    pub fn groups(&self) -> &[(ShardId, FetchGroup)] {
        &self.groups
    }

    /// One read's answers in the client's order.
    pub fn merge(&self, answers: Answers<FetchResponse>) -> Vec<FetchResponse> {
        merge_in_order(self.len, answers)
    }

    /// Whether these answers end the long poll ([`fetch_complete`]).
    pub fn complete(&self, answers: &[FetchResponse], now_ms: i64) -> bool {
        fetch_complete(answers, self.min_bytes, now_ms, self.deadline_ms)
    }

    /// The response: the answers cut to the request's `max_bytes` ([`fit_fetch_budget`]),
    /// under their topics.
    pub fn answer(self, mut answers: Vec<FetchResponse>) -> WireFetchResponse {
        fit_fetch_budget(&mut answers, self.max_bytes);
        let version = self.version;
        let responses = regroup(
            self.shape.topics,
            answers,
            |index, r| fetcher::partition_data(index, version, r),
            |name, partitions| FetchableTopicResponse::default().with_topic(name).with_partitions(partitions),
        );
        WireFetchResponse::default().with_responses(responses)
    }
}

// ---- ListOffsets ----

/// One partition of a ListOffsets, for its owning core ([`super::Shard::list_offsets`]).
#[derive(Debug, Clone)]
pub struct ListOffsetsPart {
    pub partition: TopicPartition,
    /// -1 the latest offset, -2 the earliest, else the first offset at or after this time.
    pub timestamp: i64,
    /// `isolation_level=read_committed` (v2+): the latest offset is the last stable offset.
    pub read_committed: bool,
}

/// A partition's ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOffsetsResult {
    pub error: Option<ErrorCode>,
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: LeaderEpoch,
}

impl ListOffsetsResult {
    pub fn error(error: ErrorCode) -> Self {
        ListOffsetsResult { error: Some(error), offset: -1, timestamp: -1, leader_epoch: LeaderEpoch::NONE }
    }

    /// The answer to a search by time: the first batch at or after it (offset, timestamp),
    /// none (-1, as Kafka answers past the last record), or a failed read.
    pub fn found(found: Result<Option<(i64, i64)>, ()>, leader_epoch: LeaderEpoch) -> Self {
        match found {
            Ok(Some((offset, timestamp))) => ListOffsetsResult { error: None, offset, timestamp, leader_epoch },
            Ok(None) => ListOffsetsResult { error: None, offset: -1, timestamp: -1, leader_epoch },
            Err(()) => ListOffsetsResult::error(ErrorCode::KafkaStorageError),
        }
    }
}

/// What a core answers for a ListOffsets partition: at once, or after the executor searched
/// the log's time index for `timestamp` ([`ListOffsetsResult::found`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetLookup {
    Answered(ListOffsetsResult),
    ByTimestamp { timestamp: i64, leader_epoch: LeaderEpoch },
}

#[derive(Debug)]
pub struct ListOffsetsCall {
    version: i16,
    shape: Shape,
}

impl ListOffsetsCall {
    pub fn new(request: &ListOffsetsRequest, version: i16, cores: usize) -> (ListOffsetsCall, Parts<ListOffsetsPart>) {
        let (shape, parts) = split_request(
            request.topics.iter().map(|t| (&t.name, &t.partitions[..])),
            |p| p.partition_index,
            |partition, p| ListOffsetsPart { partition, timestamp: p.timestamp, read_committed: version >= 2 && request.isolation_level == 1 },
            cores,
        );
        (ListOffsetsCall { version, shape }, parts)
    }

    pub fn answer(self, answers: Answers<ListOffsetsResult>) -> ListOffsetsResponse {
        let results = merge_in_order(self.shape.len(), answers);
        let version = self.version;
        let topics = regroup(
            self.shape.topics,
            results,
            |index, r| {
                // The epoch is sent from v4 (KIP-320), and only with an offset.
                let epoch = if r.offset >= 0 && version >= 4 { r.leader_epoch.0.max(0) } else { -1 };
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(index)
                    .with_error_code(code(r.error))
                    .with_offset(r.offset)
                    .with_timestamp(r.timestamp)
                    .with_leader_epoch(epoch)
            },
            |name, partitions| ListOffsetsTopicResponse::default().with_name(name).with_partitions(partitions),
        );
        ListOffsetsResponse::default().with_topics(topics)
    }
}

// ---- OffsetForLeaderEpoch ----

/// One partition of an OffsetForLeaderEpoch (KIP-101/320), for its owning core
/// ([`super::Shard::epoch_end`]).
#[derive(Debug, Clone)]
pub struct EpochEndPart {
    pub partition: TopicPartition,
    pub current_leader_epoch: LeaderEpoch,
    pub leader_epoch: LeaderEpoch,
}

#[derive(Debug)]
pub struct EpochEndCall {
    shape: Shape,
}

impl EpochEndCall {
    /// `replica_id` (v3+) is not needed: Kafka lets only its debugging id (-2) read a
    /// follower's cache, and odradek always answers from the leader.
    pub fn new(request: &OffsetForLeaderEpochRequest, cores: usize) -> (EpochEndCall, Parts<EpochEndPart>) {
        let (shape, parts) = split_request(
            request.topics.iter().map(|t| (&t.topic, &t.partitions[..])),
            |p| p.partition,
            |partition, p| EpochEndPart {
                partition,
                current_leader_epoch: LeaderEpoch(p.current_leader_epoch),
                leader_epoch: LeaderEpoch(p.leader_epoch),
            },
            cores,
        );
        (EpochEndCall { shape }, parts)
    }

    pub fn answer(self, answers: Answers<Result<EpochEndOffset, ErrorCode>>) -> OffsetForLeaderEpochResponse {
        let results = merge_in_order(self.shape.len(), answers);
        let topics = regroup(
            self.shape.topics,
            results,
            |index, r| {
                let (error, epoch, end) = match r {
                    Ok(end) => (None, end.epoch.0, end.end_offset.0),
                    Err(error) => (Some(error), -1, -1),
                };
                WireEpochEndOffset::default()
                    .with_partition(index)
                    .with_error_code(code(error))
                    .with_leader_epoch(epoch)
                    .with_end_offset(end)
            },
            |name, partitions| OffsetForLeaderTopicResult::default().with_topic(name).with_partitions(partitions),
        );
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }
}

// ---- DescribeProducers ----

/// DescribeProducers (KIP-664): each partition's idempotent producers, from its leader.
#[derive(Debug)]
pub struct DescribeProducersCall {
    shape: Shape,
}

impl DescribeProducersCall {
    pub fn new(request: &DescribeProducersRequest, cores: usize) -> (DescribeProducersCall, Parts<TopicPartition>) {
        let (shape, parts) = split_request(
            request.topics.iter().map(|t| (&t.name, &t.partition_indexes[..])),
            |p| *p,
            |partition, _| partition,
            cores,
        );
        (DescribeProducersCall { shape }, parts)
    }

    /// Without transactions a producer has no coordinator epoch and no open transaction (-1);
    /// odradek keeps no batch timestamps in its producer state, so `last_timestamp` is -1.
    pub fn answer(self, answers: Answers<Result<Vec<(i64, i16, i32)>, ErrorCode>>) -> DescribeProducersResponse {
        let results = merge_in_order(self.shape.len(), answers);
        let topics = regroup(
            self.shape.topics,
            results,
            |index, r| {
                let (error, producers) = match r {
                    Ok(producers) => (None, producers),
                    Err(error) => (Some(error), Vec::new()),
                };
                let active = producers
                    .into_iter()
                    .map(|(id, epoch, last_sequence)| {
                        ProducerState::default()
                            .with_producer_id(ProducerId(id))
                            .with_producer_epoch(i32::from(epoch))
                            .with_last_sequence(last_sequence)
                            .with_last_timestamp(-1)
                            .with_coordinator_epoch(-1)
                            .with_current_txn_start_offset(-1)
                    })
                    .collect();
                PartitionResponse::default().with_partition_index(index).with_error_code(code(error)).with_active_producers(active)
            },
            |name, partitions| TopicResponse::default().with_name(name).with_partitions(partitions),
        );
        DescribeProducersResponse::default().with_topics(topics)
    }
}

// ---- DeleteRecords ----

/// One partition of a DeleteRecords, for its owning core ([`super::Shard::delete_records_part`]).
#[derive(Debug, Clone)]
pub struct DeleteRecordsPart {
    pub partition: TopicPartition,
    /// The new log start; -1 the high watermark.
    pub offset: Offset,
    /// How long the leader waits for its followers' log starts (the request's `timeout_ms`).
    pub timeout_ms: i32,
}

/// DeleteRecords: each partition's leader moves its log start up (Kafka's
/// `ReplicaManager.deleteRecords`). Each part is answered with the new low watermark once the
/// leader has recorded its start and every live follower has reported one at or past it
/// (`DelayedDeleteRecords`), or with REQUEST_TIMED_OUT after the request's `timeout_ms`.
#[derive(Debug)]
pub struct DeleteRecordsCall {
    shape: Shape,
}

impl DeleteRecordsCall {
    pub fn new(request: &DeleteRecordsRequest, cores: usize) -> (DeleteRecordsCall, Parts<DeleteRecordsPart>) {
        let (shape, parts) = split_request(
            request.topics.iter().map(|t| (&t.name, &t.partitions[..])),
            |p| p.partition_index,
            |partition, p| DeleteRecordsPart { partition, offset: Offset(p.offset), timeout_ms: request.timeout_ms },
            cores,
        );
        (DeleteRecordsCall { shape }, parts)
    }

    pub fn answer(self, answers: Answers<Result<Offset, ErrorCode>>) -> DeleteRecordsResponse {
        let results = merge_in_order(self.shape.len(), answers);
        let topics = regroup(
            self.shape.topics,
            results,
            |index, r| {
                let (error, low_watermark) = match r {
                    Ok(low_watermark) => (None, low_watermark.0),
                    Err(error) => (Some(error), -1),
                };
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(code(error))
                    .with_low_watermark(low_watermark)
            },
            |name, partitions| DeleteRecordsTopicResult::default().with_name(name).with_partitions(partitions),
        );
        DeleteRecordsResponse::default().with_topics(topics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::protocol::StrBytes;

    fn name(n: &str) -> TopicName {
        TopicName(StrBytes::from_string(n.to_string()))
    }

    fn produce_request(acks: i16, topics: &[(&str, &[i32])]) -> ProduceRequest {
        let topic_data = topics
            .iter()
            .map(|(t, ps)| {
                TopicProduceData::default().with_name(name(t)).with_partition_data(
                    ps.iter().map(|&p| PartitionProduceData::default().with_index(p).with_records(Some(Bytes::from(vec![p as u8])))).collect(),
                )
            })
            .collect();
        ProduceRequest::default().with_acks(acks).with_timeout_ms(100).with_topic_data(topic_data)
    }

    /// Answers each core's parts in reverse core order, as cores finishing out of order do.
    fn answer_reversed<P, R>(parts: Parts<P>, f: impl Fn(&P) -> R) -> Answers<R> {
        parts.into_values().rev().map(|group| group.into_iter().map(|(pos, p)| (pos, f(&p))).collect()).collect()
    }

    fn answer_groups_reversed<R>(call: &FetchCall, f: impl Fn(&FetchPart) -> R) -> Answers<R> {
        call.groups().iter().rev().map(|(_, group)| group.iter().map(|(pos, p)| (*pos, f(p))).collect()).collect()
    }

    // A request split over cores must come back in the client's order under its own topics,
    // with each partition's own answer: a merge that mixed them up would acknowledge one
    // partition's write with another's offset.
    #[test]
    fn a_produce_split_over_cores_is_answered_in_request_order() {
        let request = produce_request(-1, &[("a", &[3, 0, 1, 2]), ("b", &[1, 0])]);
        let (call, parts) = ProduceCall::new(request, 9, 3);
        assert!(parts.len() > 1, "spread over several cores: {parts:?}");
        let answers = answer_reversed(parts, |p| {
            let base = if &*p.partition.topic == "a" { 100 } else { 200 } + i64::from(p.partition.partition);
            assert_eq!(p.records[0] as i32, p.partition.partition, "each part carries its own records");
            Ok(ProduceAck { base_offset: Offset(base), log_append_time_ms: None, log_start_offset: Offset(0) })
        });
        let response = call.answer(answers);
        let got: Vec<(String, i32, i64)> = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter().map(move |p| (t.name.0.to_string(), p.index, p.base_offset)))
            .collect();
        let want = [("a", 3, 103), ("a", 0, 100), ("a", 1, 101), ("a", 2, 102), ("b", 1, 201), ("b", 0, 200)];
        assert_eq!(got, want.map(|(t, p, o)| (t.to_string(), p, o)));
    }

    #[test]
    fn a_refused_produce_sends_no_part_and_answers_every_partition() {
        let (call, parts) = ProduceCall::new(produce_request(2, &[("a", &[0, 1])]), 9, 2);
        assert!(parts.is_empty());
        let response = call.answer(Vec::new());
        let codes: Vec<i16> = response.responses[0].partition_responses.iter().map(|p| p.error_code).collect();
        assert_eq!(codes, [ErrorCode::InvalidRequiredAcks.code(); 2]);
    }

    #[test]
    fn a_refusal_carries_its_message_and_record_errors_from_v8() {
        let refusal = Refusal {
            code: ErrorCode::InvalidTimestamp,
            message: Some("out of range".into()),
            record_errors: vec![crate::validate::RecordError { batch_index: 2, message: "too new".into() }],
        };
        for (version, listed) in [(7, false), (8, true)] {
            let (call, parts) = ProduceCall::new(produce_request(1, &[("a", &[0])]), version, 1);
            let answers = answer_reversed(parts, |_| Err::<ProduceAck, Refusal>(refusal.clone()));
            let response = call.answer(answers);
            let p = &response.responses[0].partition_responses[0];
            assert_eq!(p.error_code, ErrorCode::InvalidTimestamp.code());
            assert_eq!(p.error_message.is_some(), listed, "v{version}");
            assert_eq!(p.record_errors.iter().map(|e| e.batch_index).collect::<Vec<_>>(), if listed { vec![2] } else { vec![] });
        }
    }

    #[test]
    #[should_panic(expected = "no result for position")]
    fn a_part_left_unanswered_is_a_routing_bug() {
        let (call, parts) = ProduceCall::new(produce_request(1, &[("a", &[0, 1, 2, 3])]), 9, 2);
        let mut answers = answer_reversed(parts, |_| Err::<ProduceAck, Refusal>(ErrorCode::NotLeaderOrFollower.into()));
        answers.pop();
        let _ = call.answer(answers);
    }

    fn fetch_request(min_bytes: i32, max_bytes: i32) -> WireFetchRequest {
        let partitions = (0..4).map(|p| FetchPartition::default().with_partition(p).with_fetch_offset(10).with_partition_max_bytes(100)).collect();
        WireFetchRequest::default()
            .with_max_wait_ms(500)
            .with_min_bytes(min_bytes)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default().with_topic(name("t")).with_partitions(partitions)])
    }

    fn read(records: usize) -> FetchResponse {
        FetchResponse {
            error: None,
            high_watermark: Offset(20),
            last_stable_offset: Offset(-1),
            aborted_transactions: None,
            log_start_offset: Offset(0),
            diverging_epoch: None,
            records: Bytes::from(vec![0; records]),
        }
    }

    #[test]
    fn a_fetch_waits_for_min_bytes_or_its_deadline_and_keeps_to_its_budget() {
        let call = FetchCall::new(&fetch_request(50, 60), 12, 1_000, 2).unwrap();
        assert_eq!(call.deadline_ms(), 1_500);
        assert_eq!(call.watched().len(), 4);
        assert_eq!(call.groups().len(), 2, "4 partitions over 2 cores");
        assert_eq!(call.requests().count(), 4);
        assert!(call.requests().all(|p| p.request.fetch_offset == Offset(10)));
        let answers = call.merge(answer_groups_reversed(&call, |p| read(if p.partition.partition == 1 { 40 } else { 0 })));
        assert!(!call.complete(&answers, 1_000), "40 of 50 bytes");
        assert!(call.complete(&answers, 1_500), "the deadline");
        let answers = call.merge(answer_groups_reversed(&call, |p| read(if p.partition.partition >= 2 { 40 } else { 0 })));
        assert!(call.complete(&answers, 1_000));
        let response = call.answer(answers);
        let sizes: Vec<usize> =
            response.responses[0].partitions.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len())).collect();
        // KIP-74: the first non-empty partition always, the next only while it fits.
        assert_eq!(sizes, [0, 0, 40, 0]);
    }

    #[test]
    fn a_fetch_naming_a_session_is_refused_whole() {
        let refused = FetchCall::new(&fetch_request(1, 0).with_session_id(7), 12, 0, 1).unwrap_err();
        assert_eq!(refused.error_code, ErrorCode::FetchSessionIdNotFound.code());
    }

    #[test]
    fn a_part_read_covers_only_what_the_replica_allows() {
        let read = |read_to: i64, max_bytes: i32| PartRead {
            answer: crate::replica::FetchAnswer::Read {
                read_to: Offset(read_to),
                high_watermark: Offset(read_to),
                last_stable_offset: Offset(read_to),
                log_start_offset: Offset(0),
            },
            log_start: Offset(0),
            fetch_offset: Offset(5),
            max_bytes,
            aborted: None,
            leader_throttled: false,
        };
        assert_eq!(read(5, 10).range(), None, "nothing new");
        assert_eq!(read(9, 0).range(), Some(ReadRange { from: Offset(5), upto: Offset(9), max_bytes: usize::MAX }));
        let failed = read(9, 10).into_response(Err(()));
        assert_eq!(failed.error, Some(ErrorCode::KafkaStorageError));
    }
}
