//! Transactions: carries each coordinator call to the core leading its transactional id's
//! `__transaction_state` partition (where `core::broker::Shard` runs the coordinator), and the
//! coordinator's markers to the partitions' leaders, this broker's cores or another broker's
//! over a WriteTxnMarkers request, and a partition leader's question whether a producer's
//! transaction holds the partition (AddPartitionsToTxn v4, verify only) to the producer's
//! coordinator. Every rule is core's (`core::txn`,
//! `core::broker::txn`); this module moves requests and answers.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncWriteExt, FutureExt};
use kafka_protocol::messages::{AddPartitionsToTxnResponse, ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::{Decodable, Encodable};
use odradek_core::batch::ControlMarker;
use odradek_core::broker::txn::{self, MarkerPart, Routed, Target, TxnResponse, WriteMarkersCall};
use odradek_core::ids::NodeId;
use odradek_core::txn::{Call, Response, TXN_TOPIC};
use odradek_core::{wire, ErrorCode};
use tracing::debug;

use crate::clock::now_ms;
use crate::shard::Shard;
use crate::storage::join_all;

/// How long a marker write may wait for its partition's ISR (Kafka's coordinator uses
/// `request.timeout.ms`).
const MARKER_TIMEOUT_MS: i32 = 30_000;
/// The WriteTxnMarkers version the coordinator sends.
const MARKERS_VERSION: i16 = 1;
/// The AddPartitionsToTxn version a leader verifies with (the first with `verify_only`).
const VERIFY_VERSION: i16 = 4;
/// How long a leader waits for a coordinator's verification: the producer retries the
/// NOT_ENOUGH_REPLICAS a timeout becomes.
const VERIFY_TIMEOUT_MS: u64 = 10_000;
const CLIENT_ID: &str = "odradek-txn-coordinator";
/// Answers above this are refused: one marker per partition is a few bytes each.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

impl Shard {
    /// Runs one coordinator call on this core and waits for its answer.
    pub async fn txn_call(self: Rc<Self>, call: Call) -> Response {
        let id = self.token();
        let (tx, rx) = futures_channel::oneshot::channel();
        self.txn_waiters.borrow_mut().insert(id, tx);
        self.machine().txn_request(now_ms(), id, call);
        self.pump();
        rx.await.expect("the coordinator answers every call")
    }

    /// WriteTxnMarkers for one partition on its owning core: written once the ISR holds it.
    pub async fn write_marker_partition(self: Rc<Self>, part: MarkerPart) -> Option<ErrorCode> {
        let token = self.token();
        let (tx, rx) = futures_channel::oneshot::channel();
        self.produce_waiters.borrow_mut().insert(token, tx);
        let started = self.machine().write_marker(
            now_ms(),
            &part.partition,
            part.producer_id,
            part.producer_epoch,
            part.marker,
            MARKER_TIMEOUT_MS,
            token,
        );
        if let Err(error) = started {
            self.produce_waiters.borrow_mut().remove(&token);
            return Some(error);
        }
        self.pump();
        rx.await.unwrap_or(Err(ErrorCode::NotLeaderOrFollower)).err()
    }

    /// Carries a coordinator's markers ([`odradek_core::broker::Output::WriteMarkers`]) to
    /// the leaders the image names, and its answer back: a partition without a leader, or
    /// whose leader cannot be reached, fails with a retriable error and the coordinator sends
    /// it again.
    pub(crate) fn send_markers(self: &Rc<Self>, token: u64, producer_id: i64, producer_epoch: i16, marker: ControlMarker, partitions: Vec<(String, i32)>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let local = NodeId(this.shared.config.node_id);
            let mut by_leader: BTreeMap<NodeId, Vec<(String, i32)>> = BTreeMap::new();
            let mut results = Vec::new();
            {
                let image = this.image.borrow().clone();
                for (topic, p) in partitions {
                    let leader = image.topic_by_name(&topic).and_then(|t| t.partitions.get(p as usize)).map(|s| s.leader);
                    match leader {
                        None => results.push(((topic, p), Some(ErrorCode::UnknownTopicOrPartition))),
                        Some(NodeId::NONE) => results.push(((topic, p), Some(ErrorCode::LeaderNotAvailable))),
                        Some(leader) => by_leader.entry(leader).or_default().push((topic, p)),
                    }
                }
            }
            let sends = by_leader.into_iter().map(|(leader, partitions)| {
                let this = this.clone();
                async move {
                    let request = txn::markers_request(producer_id, producer_epoch, marker, &partitions);
                    let response = if leader == local {
                        Ok(this.write_txn_markers(request).await)
                    } else {
                        this.remote_markers(leader, &request).await
                    };
                    txn::markers_results(&partitions, response.as_ref().map_err(|e| *e))
                }
            });
            for answered in join_all(sends).await {
                results.extend(answered);
            }
            this.machine().handle_markers_written(now_ms(), token, results);
            this.pump();
        })
        .detach();
    }

    /// WriteTxnMarkers: every partition's marker on its owning core.
    pub async fn write_txn_markers(self: &Rc<Self>, request: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
        let (call, parts) = WriteMarkersCall::new(&request, self.shared.shard_count);
        call.answer(self.scatter(parts, Shard::write_marker_partition).await)
    }

    /// One WriteTxnMarkers exchange with another broker.
    async fn remote_markers(&self, leader: NodeId, request: &WriteTxnMarkersRequest) -> Result<WriteTxnMarkersResponse, ErrorCode> {
        let timeout = Duration::from_millis(MARKER_TIMEOUT_MS as u64 + 5_000);
        self.exchange(leader, ApiKey::WriteTxnMarkers, MARKERS_VERSION, request, timeout).await
    }

    /// One request to another broker and its answer, on a connection of its own (markers and
    /// verifications are a few per transaction, so none is kept): a broker that cannot be
    /// reached, or answers late, is NETWORK_EXCEPTION.
    async fn exchange<Req: Encodable, Resp: Decodable>(
        &self,
        node: NodeId,
        api_key: ApiKey,
        version: i16,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, ErrorCode> {
        let Some(addr) = crate::replication::endpoint_address(&self.image.borrow(), node, self.shared.config.listener_settings.inter_broker_listener()) else {
            return Err(ErrorCode::LeaderNotAvailable);
        };
        let exchange = async {
            let mut stream = crate::tls::connect(addr, self.shared.peer_tls.inter_broker.as_ref()).await.map_err(|e| e.to_string())?;
            let frame = wire::encode_request(api_key, version, 1, CLIENT_ID, request).map_err(|e| e.to_string())?;
            stream.write_all(&frame).await.map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            let body = crate::fetcher::read_response(&mut stream, MAX_RESPONSE_BYTES).await?;
            wire::decode_response(body.into(), api_key, version, 1).map_err(|e| e.to_string())
        };
        let timeout = async {
            glommio::timer::sleep(timeout).await;
            Err("timed out".to_owned())
        };
        exchange.or(timeout).await.map_err(|e| {
            debug!(%node, ?api_key, error = %e, "a request to another broker failed");
            ErrorCode::NetworkException
        })
    }

    /// Asks the coordinator of `transactional_id` whether the producer's transaction holds
    /// `partition` ([`odradek_core::broker::Output::VerifyTxn`]): this broker's core leading
    /// the id's `__transaction_state` partition, or another broker over AddPartitionsToTxn v4.
    pub(crate) fn verify_txn(self: &Rc<Self>, token: u64, transactional_id: String, producer_id: i64, producer_epoch: i16, partition: (String, i32)) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let config = &this.shared.config.txn;
            let request = txn::verify_request(&transactional_id, producer_id, producer_epoch, &partition);
            let coordinator = txn::coordinator_node(&this.image.borrow(), &transactional_id, config);
            let response = match coordinator {
                Err(error) => Err(error),
                Ok(node) if node == NodeId(this.shared.config.node_id) => match answer(&this, txn::route_batch(&request, config)).await {
                    TxnResponse::AddPartitionsToTxn(response) => Ok(response),
                    _ => Err(ErrorCode::UnknownServerError),
                },
                Ok(node) => {
                    let timeout = Duration::from_millis(VERIFY_TIMEOUT_MS);
                    this.exchange::<_, AddPartitionsToTxnResponse>(node, ApiKey::AddPartitionsToTxn, VERIFY_VERSION, &request, timeout).await
                }
            };
            let result = txn::verify_result(&partition, response.as_ref().map_err(|e| *e));
            this.machine().handle_txn_verified(now_ms(), token, result);
            this.pump();
        })
        .detach();
    }

    /// A fresh producer id for the coordinator ([`odradek_core::broker::Output::NewProducerId`])
    /// from the broker's block on core 0.
    pub(crate) fn fetch_producer_id(self: &Rc<Self>, token: u64) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let id = this
                .on_shard(odradek_core::shard::ShardId(0), |core0| async move {
                    let node = core0.node.borrow().clone().ok_or(ErrorCode::CoordinatorNotAvailable)?;
                    node.next_producer_id().await
                })
                .await;
            this.machine().handle_txn_producer_id(now_ms(), token, id);
            this.pump();
        })
        .detach();
    }
}

/// Runs every part of `routed` on its core, all at once, and merges their answers.
pub async fn answer(shard: &Rc<Shard>, routed: Routed) -> TxnResponse {
    let mut routed = routed;
    let parts = std::mem::take(&mut routed.parts);
    let calls = parts.into_iter().map(|(target, call)| {
        let shard = shard.clone();
        async move {
            match target {
                Target::Partition(partition) => {
                    let owner = shard.owner(TXN_TOPIC, partition);
                    vec![shard.on_shard(owner, move |s| s.txn_call(call)).await]
                }
                Target::EveryCore => shard.on_every_shard(move |s| s.txn_call(call)).await,
            }
        }
    });
    let answers = join_all(calls).await.into_iter().flatten().collect();
    routed.answer(answers)
}
