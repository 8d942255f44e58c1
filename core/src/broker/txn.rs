//! The transaction APIs as the per-core state machine answers them. A decoded request becomes
//! calls for the transaction coordinators owning its transactional ids (each a [`Routed`]
//! part, on the core leading the id's `__transaction_state` partition); their answers become
//! the API's Kafka response. WriteTxnMarkers, which a coordinator sends to partition leaders,
//! splits per partition like a Produce ([`WriteMarkersCall`]). The broker's connections carry
//! the parts to their cores and encode what comes back.

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction};
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{self, TopicData};
use kafka_protocol::messages::list_transactions_response;
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use crate::batch::ControlMarker;
use crate::controller::MetadataImage;
use crate::ids::NodeId;
use crate::error::{code, ErrorCode};
use crate::fetcher::TopicPartition;
use crate::shard::{merge_in_order, shard_for, ShardId};
use crate::txn::{self, Call, Response, TxnConfig, TXN_TOPIC};
use crate::wire::{encode_response, Request, RequestError};

use super::partitions::{Answers, Parts};

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// A request's topics and their partitions, in its order.
type TopicShape = Vec<(String, Vec<i32>)>;

/// Per partition, its error (`None`: done).
type PartitionErrors = Vec<((String, i32), Option<ErrorCode>)>;

/// Where one coordinator call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// On the core owning this `__transaction_state` partition (the id's).
    Partition(i32),
    /// On every core (ListTransactions).
    EveryCore,
}

/// A transaction request split into the coordinator calls that answer it.
#[derive(Debug)]
pub struct Routed {
    pub parts: Vec<(Target, Call)>,
    reply: Reply,
}

#[derive(Debug)]
enum Reply {
    Init { version: i16 },
    /// `refused`: answered without the coordinator (a partition that does not exist).
    AddPartitions { version: i16, shape: TopicShape, refused: Option<PartitionErrors> },
    /// v4+, a broker's batch: per transaction (one part each), its id and shape.
    AddPartitionsBatch { transactions: Vec<(String, TopicShape)> },
    AddOffsets { version: i16 },
    End { version: i16 },
    Describe,
    /// The state filters that name no state.
    List { unknown_states: Vec<String> },
}

/// A transaction API's Kafka response.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnResponse {
    InitProducerId(InitProducerIdResponse),
    AddPartitionsToTxn(AddPartitionsToTxnResponse),
    AddOffsetsToTxn(AddOffsetsToTxnResponse),
    EndTxn(EndTxnResponse),
    DescribeTransactions(DescribeTransactionsResponse),
    ListTransactions(ListTransactionsResponse),
}

impl TxnResponse {
    pub fn encode(&self, version: i16, correlation_id: i32) -> Result<Bytes, RequestError> {
        use TxnResponse::*;
        match self {
            InitProducerId(r) => encode_response(ApiKey::InitProducerId, version, correlation_id, r),
            AddPartitionsToTxn(r) => encode_response(ApiKey::AddPartitionsToTxn, version, correlation_id, r),
            AddOffsetsToTxn(r) => encode_response(ApiKey::AddOffsetsToTxn, version, correlation_id, r),
            EndTxn(r) => encode_response(ApiKey::EndTxn, version, correlation_id, r),
            DescribeTransactions(r) => encode_response(ApiKey::DescribeTransactions, version, correlation_id, r),
            ListTransactions(r) => encode_response(ApiKey::ListTransactions, version, correlation_id, r),
        }
    }
}

/// The APIs [`route`] takes (InitProducerId only with a transactional id: see
/// [`is_transactional_init`]).
pub fn is_txn_api(key: ApiKey) -> bool {
    matches!(
        key,
        ApiKey::AddPartitionsToTxn | ApiKey::AddOffsetsToTxn | ApiKey::EndTxn | ApiKey::DescribeTransactions | ApiKey::ListTransactions
    )
}

/// InitProducerId for a transactional producer (a non-empty transactional id); without one it
/// is an idempotent producer's, answered from the broker's producer id block.
pub fn is_transactional_init(request: &InitProducerIdRequest) -> bool {
    request.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty())
}

/// KIP-588's PRODUCER_FENCED is new in these versions; older clients know it as
/// INVALID_PRODUCER_EPOCH (Kafka's `KafkaApis` converts it the same way).
fn fenced_for(error: Option<ErrorCode>, version: i16, first_version: i16) -> Option<ErrorCode> {
    match error {
        Some(ErrorCode::ProducerFenced) if version < first_version => Some(ErrorCode::InvalidProducerEpoch),
        other => other,
    }
}

fn target(id: &str, config: &TxnConfig) -> Target {
    Target::Partition(txn::partition_for(id, config.partitions))
}

/// InitProducerId with a transactional id.
pub fn route_init(request: &InitProducerIdRequest, version: i16, config: &TxnConfig) -> Routed {
    let id = request.transactional_id.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    let (producer_id, producer_epoch) = if version >= 3 { (request.producer_id.0, request.producer_epoch) } else { (-1, -1) };
    let call = Call::InitProducerId { transactional_id: id.clone(), timeout_ms: request.transaction_timeout_ms, producer_id, producer_epoch };
    Routed { parts: vec![(target(&id, config), call)], reply: Reply::Init { version } }
}

/// The other transaction APIs ([`is_txn_api`]).
pub fn route(request: &Request, image: &MetadataImage, config: &TxnConfig) -> Result<Routed, RequestError> {
    let version = request.version();
    match request.api_key {
        ApiKey::AddPartitionsToTxn => {
            let r: AddPartitionsToTxnRequest = request.decode()?;
            if version >= 4 {
                return Ok(route_batch(&r, config));
            }
            let id = r.v3_and_below_transactional_id.0.to_string();
            let shape: TopicShape = r.v3_and_below_topics.iter().map(|t| (t.name.0.to_string(), t.partitions.clone())).collect();
            let partitions = partitions_of(&shape);
            let exists = |(topic, p): &(String, i32)| image.topic_by_name(topic).is_some_and(|t| *p >= 0 && (*p as usize) < t.partitions.len());
            let refused = (!partitions.iter().all(exists)).then(|| {
                partitions
                    .iter()
                    .map(|tp| {
                        let error = if exists(tp) { ErrorCode::OperationNotAttempted } else { ErrorCode::UnknownTopicOrPartition };
                        (tp.clone(), Some(error))
                    })
                    .collect()
            });
            let parts = if refused.is_some() {
                Vec::new()
            } else {
                let call = Call::AddPartitions {
                    transactional_id: id.clone(),
                    producer_id: r.v3_and_below_producer_id.0,
                    producer_epoch: r.v3_and_below_producer_epoch,
                    partitions,
                    verify_only: false,
                };
                vec![(target(&id, config), call)]
            };
            Ok(Routed { parts, reply: Reply::AddPartitions { version, shape, refused } })
        }
        ApiKey::AddOffsetsToTxn => {
            let r: AddOffsetsToTxnRequest = request.decode()?;
            let id = r.transactional_id.0.to_string();
            let call = Call::AddOffsets {
                transactional_id: id.clone(),
                producer_id: r.producer_id.0,
                producer_epoch: r.producer_epoch,
                group_id: r.group_id.0.to_string(),
            };
            Ok(Routed { parts: vec![(target(&id, config), call)], reply: Reply::AddOffsets { version } })
        }
        ApiKey::EndTxn => {
            let r: EndTxnRequest = request.decode()?;
            let id = r.transactional_id.0.to_string();
            let call = Call::EndTxn { transactional_id: id.clone(), producer_id: r.producer_id.0, producer_epoch: r.producer_epoch, commit: r.committed };
            Ok(Routed { parts: vec![(target(&id, config), call)], reply: Reply::End { version } })
        }
        ApiKey::DescribeTransactions => {
            let r: DescribeTransactionsRequest = request.decode()?;
            let parts = r
                .transactional_ids
                .iter()
                .map(|id| (target(&id.0, config), Call::Describe { transactional_ids: vec![id.0.to_string()] }))
                .collect();
            Ok(Routed { parts, reply: Reply::Describe })
        }
        ApiKey::ListTransactions => {
            let r: ListTransactionsRequest = request.decode()?;
            let states: Vec<String> = r.state_filters.iter().map(|s| s.to_string()).collect();
            let known = |name: &str| (0..8).filter_map(txn::TxnState::from_id).any(|s| s.name() == name);
            let unknown_states = states.iter().filter(|s| !known(s)).cloned().collect();
            let call = Call::List { states, producer_ids: r.producer_id_filters.iter().map(|p| p.0).collect() };
            Ok(Routed { parts: vec![(Target::EveryCore, call)], reply: Reply::List { unknown_states } })
        }
        other => Err(RequestError::UnsupportedVersion { api_key: other, version }),
    }
}

/// AddPartitionsToTxn v4+, which only brokers send (KIP-890): a batch of transactions, each
/// its own coordinator call; partition leaders send `verify_only` ones
/// ([`verify_request`]).
pub fn route_batch(request: &AddPartitionsToTxnRequest, config: &TxnConfig) -> Routed {
    let mut parts = Vec::new();
    let mut transactions = Vec::new();
    for t in &request.transactions {
        let id = t.transactional_id.0.to_string();
        let shape: TopicShape = t.topics.iter().map(|t| (t.name.0.to_string(), t.partitions.clone())).collect();
        let partitions = partitions_of(&shape);
        let call = Call::AddPartitions {
            transactional_id: id.clone(),
            producer_id: t.producer_id.0,
            producer_epoch: t.producer_epoch,
            partitions,
            verify_only: t.verify_only,
        };
        parts.push((target(&id, config), call));
        transactions.push((id, shape));
    }
    Routed { parts, reply: Reply::AddPartitionsBatch { transactions } }
}

/// A request's partitions, topic by topic, in its order.
fn partitions_of(shape: &TopicShape) -> Vec<(String, i32)> {
    shape.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect()
}

/// An AddPartitionsToTxn answer's topics, in the request's order, each partition with its error.
fn topic_results(shape: &TopicShape, error_of: impl Fn(&str, i32) -> Option<ErrorCode>) -> Vec<AddPartitionsToTxnTopicResult> {
    shape
        .iter()
        .map(|(topic, partitions)| {
            let results = partitions
                .iter()
                .map(|&p| AddPartitionsToTxnPartitionResult::default().with_partition_index(p).with_partition_error_code(code(error_of(topic, p))))
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(TopicName(s(topic.clone()))).with_results_by_partition(results)
        })
        .collect()
}

/// The broker leading the `__transaction_state` partition of `transactional_id`: its
/// coordinator (COORDINATOR_NOT_AVAILABLE while it has no leader).
pub fn coordinator_node(image: &MetadataImage, transactional_id: &str, config: &TxnConfig) -> Result<NodeId, ErrorCode> {
    let partition = txn::partition_for(transactional_id, config.partitions);
    let leader = image.topic_by_name(TXN_TOPIC).and_then(|t| t.partitions.get(partition as usize)).map(|p| p.leader);
    match leader {
        Some(leader) if leader != NodeId::NONE => Ok(leader),
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

/// The question a partition leader asks a coordinator before a producer's batch starts a
/// transaction on `partition` ([`super::shard::Output::VerifyTxn`]).
pub fn verify_request(transactional_id: &str, producer_id: i64, producer_epoch: i16, partition: &(String, i32)) -> AddPartitionsToTxnRequest {
    let topic = AddPartitionsToTxnTopic::default().with_name(TopicName(s(partition.0.clone()))).with_partitions(vec![partition.1]);
    let transaction = AddPartitionsToTxnTransaction::default()
        .with_transactional_id(TransactionalId(s(transactional_id)))
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_verify_only(true)
        .with_topics(vec![topic]);
    AddPartitionsToTxnRequest::default().with_transactions(vec![transaction])
}

/// The coordinator's answer to [`verify_request`] as the produce takes it
/// ([`super::Shard::handle_txn_verified`]), with the error a producer expects (Kafka's
/// `AddPartitionsToTxnManager` and `ReplicaManager`): PRODUCER_FENCED becomes
/// INVALID_PRODUCER_EPOCH; a coordinator that cannot answer now (moving, loading, in the
/// middle of ending the transaction, unreachable) NOT_ENOUGH_REPLICAS, which every client
/// retries; a partition outside the transaction INVALID_TXN_STATE.
pub fn verify_result(partition: &(String, i32), response: Result<&AddPartitionsToTxnResponse, ErrorCode>) -> Result<(), ErrorCode> {
    let error = match response {
        Err(e) => Some(e),
        Ok(r) if r.error_code != 0 => Some(ErrorCode::try_from_code(r.error_code).unwrap_or(ErrorCode::UnknownServerError)),
        Ok(r) => r
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .filter(|t| *t.name.0 == *partition.0)
            .flat_map(|t| &t.results_by_partition)
            .find(|p| p.partition_index == partition.1)
            .map_or(Some(ErrorCode::UnknownServerError), |p| {
                (p.partition_error_code != 0)
                    .then(|| ErrorCode::try_from_code(p.partition_error_code).unwrap_or(ErrorCode::UnknownServerError))
            }),
    };
    match error {
        None => Ok(()),
        Some(ErrorCode::ProducerFenced) => Err(ErrorCode::InvalidProducerEpoch),
        Some(
            ErrorCode::NotCoordinator
            | ErrorCode::CoordinatorNotAvailable
            | ErrorCode::CoordinatorLoadInProgress
            | ErrorCode::ConcurrentTransactions
            | ErrorCode::NetworkException
            | ErrorCode::RequestTimedOut,
        ) => Err(ErrorCode::NotEnoughReplicas),
        Some(other) => Err(other),
    }
}

impl Routed {
    /// The Kafka response from the parts' answers, in part order (every core's for
    /// [`Target::EveryCore`]).
    pub fn answer(self, answers: Vec<Response>) -> TxnResponse {
        match self.reply {
            Reply::Init { version } => {
                let (error, (producer_id, epoch)) = match answers.into_iter().next() {
                    Some(Response::InitProducerId(Ok(id))) => (None, id),
                    Some(Response::InitProducerId(Err(e))) => (Some(e), (-1, -1)),
                    _ => (Some(ErrorCode::UnknownServerError), (-1, -1)),
                };
                TxnResponse::InitProducerId(
                    InitProducerIdResponse::default()
                        .with_error_code(code(fenced_for(error, version, 4)))
                        .with_producer_id(ProducerId(producer_id))
                        .with_producer_epoch(epoch),
                )
            }
            Reply::AddPartitions { version, shape, refused } => {
                let results = match (refused, answers.into_iter().next()) {
                    (Some(refused), _) => refused,
                    (None, Some(Response::AddPartitions(results))) => results,
                    _ => Vec::new(),
                };
                let error_of = |topic: &str, p: i32| {
                    let found = results.iter().find(|((t, q), _)| t == topic && *q == p).map(|(_, e)| *e);
                    fenced_for(found.unwrap_or(Some(ErrorCode::UnknownServerError)), version, 2)
                };
                let topics = topic_results(&shape, error_of);
                TxnResponse::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics))
            }
            Reply::AddPartitionsBatch { transactions } => {
                let results = transactions
                    .into_iter()
                    .zip(answers.into_iter().map(Some).chain(std::iter::repeat(None)))
                    .map(|((id, shape), answer)| {
                        let results = match answer {
                            Some(Response::AddPartitions(results)) => results,
                            _ => Vec::new(),
                        };
                        let topic_results = topic_results(&shape, |topic, p| {
                            let found = results.iter().find(|((t, q), _)| t == topic && *q == p).map(|(_, e)| *e);
                            found.unwrap_or(Some(ErrorCode::UnknownServerError))
                        });
                        AddPartitionsToTxnResult::default().with_transactional_id(TransactionalId(s(id))).with_topic_results(topic_results)
                    })
                    .collect();
                TxnResponse::AddPartitionsToTxn(AddPartitionsToTxnResponse::default().with_results_by_transaction(results))
            }
            Reply::AddOffsets { version } => {
                let error = match answers.into_iter().next() {
                    Some(Response::AddOffsets(e)) => e,
                    _ => Some(ErrorCode::UnknownServerError),
                };
                TxnResponse::AddOffsetsToTxn(AddOffsetsToTxnResponse::default().with_error_code(code(fenced_for(error, version, 2))))
            }
            Reply::End { version } => {
                let error = match answers.into_iter().next() {
                    Some(Response::EndTxn(e)) => e,
                    _ => Some(ErrorCode::UnknownServerError),
                };
                TxnResponse::EndTxn(EndTxnResponse::default().with_error_code(code(fenced_for(error, version, 2))))
            }
            Reply::Describe => {
                let states = answers
                    .into_iter()
                    .flat_map(|a| match a {
                        Response::Describe(described) => described,
                        _ => Vec::new(),
                    })
                    .map(|d| {
                        let mut topics: Vec<TopicData> = Vec::new();
                        for (topic, p) in d.partitions {
                            match topics.last_mut() {
                                Some(last) if *last.topic.0 == *topic => last.partitions.push(p),
                                _ => topics.push(TopicData::default().with_topic(TopicName(s(topic))).with_partitions(vec![p])),
                            }
                        }
                        describe_transactions_response::TransactionState::default()
                            .with_error_code(code(d.error))
                            .with_transactional_id(TransactionalId(s(d.transactional_id)))
                            .with_transaction_state(s(d.state.name()))
                            .with_transaction_timeout_ms(d.timeout_ms)
                            .with_transaction_start_time_ms(d.start_ms)
                            .with_producer_id(ProducerId(d.producer_id))
                            .with_producer_epoch(d.producer_epoch)
                            .with_topics(topics)
                    })
                    .collect();
                TxnResponse::DescribeTransactions(DescribeTransactionsResponse::default().with_transaction_states(states))
            }
            Reply::List { unknown_states } => {
                let mut listed: Vec<txn::ListedTxn> = answers
                    .into_iter()
                    .flat_map(|a| match a {
                        Response::List(listed) => listed,
                        _ => Vec::new(),
                    })
                    .collect();
                listed.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                let states = listed
                    .into_iter()
                    .map(|l| {
                        list_transactions_response::TransactionState::default()
                            .with_transactional_id(TransactionalId(s(l.transactional_id)))
                            .with_producer_id(ProducerId(l.producer_id))
                            .with_transaction_state(s(l.state.name()))
                    })
                    .collect();
                TxnResponse::ListTransactions(
                    ListTransactionsResponse::default()
                        .with_transaction_states(states)
                        .with_unknown_state_filters(unknown_states.into_iter().map(s).collect()),
                )
            }
        }
    }
}

// ---- WriteTxnMarkers ----

/// One partition's marker, for its owning core ([`super::Shard::write_marker`]).
#[derive(Debug, Clone)]
pub struct MarkerPart {
    pub partition: TopicPartition,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub marker: ControlMarker,
}

type Topics = Vec<(TopicName, Vec<i32>)>;

/// A WriteTxnMarkers request split per partition; the answers merge back in its order.
#[derive(Debug)]
pub struct WriteMarkersCall {
    /// Per marker: its producer and topics with their partitions.
    shape: Vec<(i64, Topics)>,
}

impl WriteMarkersCall {
    pub fn new(request: &WriteTxnMarkersRequest, cores: usize) -> (WriteMarkersCall, Parts<MarkerPart>) {
        let mut shape = Vec::new();
        let mut parts: Parts<MarkerPart> = Parts::new();
        let mut position = 0;
        for m in &request.markers {
            let marker = ControlMarker { commit: m.transaction_result, coordinator_epoch: m.coordinator_epoch };
            let mut topics = Vec::new();
            for t in &m.topics {
                topics.push((t.name.clone(), t.partition_indexes.clone()));
                for &p in &t.partition_indexes {
                    let partition = TopicPartition::new(&*t.name.0, p);
                    let core: ShardId = shard_for(&t.name.0, p, cores);
                    parts.entry(core).or_default().push((
                        position,
                        MarkerPart { partition, producer_id: m.producer_id.0, producer_epoch: m.producer_epoch, marker },
                    ));
                    position += 1;
                }
            }
            shape.push((m.producer_id.0, topics));
        }
        (WriteMarkersCall { shape }, parts)
    }

    pub fn answer(self, answers: Answers<Option<ErrorCode>>) -> WriteTxnMarkersResponse {
        let len = self.shape.iter().map(|(_, topics)| topics.iter().map(|(_, p)| p.len()).sum::<usize>()).sum();
        let mut results = merge_in_order(len, answers).into_iter();
        let markers = self
            .shape
            .into_iter()
            .map(|(producer_id, topics)| {
                let topics = topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|p| {
                                let error = results.next().expect("one result per partition");
                                WritableTxnMarkerPartitionResult::default().with_partition_index(p).with_error_code(code(error))
                            })
                            .collect();
                        WritableTxnMarkerTopicResult::default().with_name(name).with_partitions(partitions)
                    })
                    .collect();
                WritableTxnMarkerResult::default().with_producer_id(ProducerId(producer_id)).with_topics(topics)
            })
            .collect();
        WriteTxnMarkersResponse::default().with_markers(markers)
    }
}

/// The WriteTxnMarkers request a coordinator sends one leader: one marker for `partitions`.
pub fn markers_request(
    producer_id: i64,
    producer_epoch: i16,
    marker: ControlMarker,
    partitions: &[(String, i32)],
) -> WriteTxnMarkersRequest {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (topic, p) in partitions {
        match topics.last_mut() {
            Some(last) if *last.name.0 == **topic => last.partition_indexes.push(*p),
            _ => topics.push(WritableTxnMarkerTopic::default().with_name(TopicName(s(topic.clone()))).with_partition_indexes(vec![*p])),
        }
    }
    let marker = WritableTxnMarker::default()
        .with_producer_id(ProducerId(producer_id))
        .with_producer_epoch(producer_epoch)
        .with_transaction_result(marker.commit)
        .with_coordinator_epoch(marker.coordinator_epoch)
        .with_topics(topics);
    WriteTxnMarkersRequest::default().with_markers(vec![marker])
}

/// A leader's WriteTxnMarkers answer as the coordinator takes it: per partition; one the
/// answer leaves out failed.
pub fn markers_results(
    partitions: &[(String, i32)],
    response: Result<&WriteTxnMarkersResponse, ErrorCode>,
) -> PartitionErrors {
    partitions
        .iter()
        .map(|(topic, p)| {
            let error = match response {
                Err(e) => Some(e),
                Ok(r) => r
                    .markers
                    .iter()
                    .flat_map(|m| &m.topics)
                    .filter(|t| *t.name.0 == **topic)
                    .flat_map(|t| &t.partitions)
                    .find(|q| q.partition_index == *p)
                    .map_or(Some(ErrorCode::UnknownServerError), |q| (q.error_code != 0).then(|| ErrorCode::try_from_code(q.error_code).unwrap_or(ErrorCode::UnknownServerError))),
            };
            ((topic.clone(), *p), error)
        })
        .collect()
}

/// The partition of `__transaction_state` an id belongs to, as a [`TopicPartition`].
pub fn state_partition(partition: i32) -> TopicPartition {
    TopicPartition::new(TXN_TOPIC, partition)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_markers_request_splits_per_partition_and_answers_in_its_order() {
        let marker = ControlMarker { commit: true, coordinator_epoch: 3 };
        let partitions = vec![("a".to_owned(), 0), ("a".to_owned(), 1), ("b".to_owned(), 0)];
        let request = markers_request(7, 2, marker, &partitions);
        assert_eq!(request.markers[0].topics.len(), 2);
        let (call, parts) = WriteMarkersCall::new(&request, 2);
        assert_eq!(parts.values().map(Vec::len).sum::<usize>(), 3);
        let answers = parts
            .into_values()
            .map(|ps| {
                ps.into_iter()
                    .map(|(i, p)| (i, (p.partition.topic.as_ref() == "b").then_some(ErrorCode::NotLeaderOrFollower)))
                    .collect()
            })
            .collect();
        let response = call.answer(answers);
        let results = markers_results(&partitions, Ok(&response));
        assert_eq!(results[0].1, None);
        assert_eq!(results[2].1, Some(ErrorCode::NotLeaderOrFollower));
        assert_eq!(markers_results(&partitions, Err(ErrorCode::NetworkException))[1].1, Some(ErrorCode::NetworkException));
    }

    #[test]
    fn a_leaders_verification_crosses_the_wire_at_v4_and_maps_to_what_producers_expect() {
        let partition = ("a".to_owned(), 3);
        let request = verify_request("tx", 7, 2, &partition);
        let frame = crate::wire::encode_request(ApiKey::AddPartitionsToTxn, 4, 9, "test", &request).unwrap();
        let parsed = crate::wire::parse_request(frame.slice(4..)).unwrap();
        let config = TxnConfig::default();
        let routed = route(&parsed, &MetadataImage::default(), &config).unwrap();
        let expected = Call::AddPartitions {
            transactional_id: "tx".to_owned(),
            producer_id: 7,
            producer_epoch: 2,
            partitions: vec![partition.clone()],
            verify_only: true,
        };
        assert_eq!(routed.parts, vec![(target("tx", &config), expected)]);

        let answered = |error: Option<ErrorCode>| {
            let routed = route_batch(&request, &config);
            let TxnResponse::AddPartitionsToTxn(response) = routed.answer(vec![Response::AddPartitions(vec![(partition.clone(), error)])]) else {
                panic!("an AddPartitionsToTxn answer")
            };
            let frame = TxnResponse::AddPartitionsToTxn(response).encode(4, 9).unwrap();
            let decoded: AddPartitionsToTxnResponse = crate::wire::decode_response(frame.slice(4..), ApiKey::AddPartitionsToTxn, 4, 9).unwrap();
            verify_result(&partition, Ok(&decoded))
        };
        assert_eq!(answered(None), Ok(()));
        assert_eq!(answered(Some(ErrorCode::InvalidTxnState)), Err(ErrorCode::InvalidTxnState));
        assert_eq!(answered(Some(ErrorCode::ProducerFenced)), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(answered(Some(ErrorCode::ConcurrentTransactions)), Err(ErrorCode::NotEnoughReplicas));
        assert_eq!(answered(Some(ErrorCode::InvalidProducerIdMapping)), Err(ErrorCode::InvalidProducerIdMapping));
        assert_eq!(verify_result(&partition, Err(ErrorCode::NetworkException)), Err(ErrorCode::NotEnoughReplicas));
        // An answer that leaves the partition out verified nothing.
        let empty = AddPartitionsToTxnResponse::default();
        assert_eq!(verify_result(&partition, Ok(&empty)), Err(ErrorCode::UnknownServerError));
    }

    #[test]
    fn producer_fenced_reaches_old_clients_as_an_invalid_epoch() {
        assert_eq!(fenced_for(Some(ErrorCode::ProducerFenced), 1, 2), Some(ErrorCode::InvalidProducerEpoch));
        assert_eq!(fenced_for(Some(ErrorCode::ProducerFenced), 2, 2), Some(ErrorCode::ProducerFenced));
        assert_eq!(fenced_for(None, 0, 2), None);
    }
}
