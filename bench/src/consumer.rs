//! Consumers: each reads a fixed share of a topic's partitions (Kafka's `assign()`, not group
//! membership, so the group coordinator's rebalances stay out of the measurement) with one
//! fetch in flight per leader, checks every batch's CRC, and records end-to-end latency from
//! the intended send time in each value. A partition whose leader moved or is not serving
//! it yet is fetched again from the leader the next Metadata answer names.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};

use crate::client::{stale_metadata, topic_name, Bootstrap, Cluster, Connection, Router};
use crate::clock::Clock;
use crate::records::for_each_record;
use crate::stats::{record_ns, Recorder};
use crate::workload::ConsumerConfig;

const OFFSET_OUT_OF_RANGE: i16 = 1;

pub struct ConsumerSpec {
    pub topic: String,
    /// Partition -> first offset to read.
    pub start_offsets: BTreeMap<i32, i64>,
    pub config: ConsumerConfig,
}

#[derive(Default)]
pub struct ConsumerControl {
    /// Consumers wait for this before their first fetch (the backlog test holds them back).
    pub go: AtomicBool,
    pub stop: AtomicBool,
}

pub fn spawn(
    spec: ConsumerSpec,
    cluster: Cluster,
    bootstrap: Bootstrap,
    clock: Clock,
    control: Arc<ConsumerControl>,
    recorder: Arc<Recorder>,
) -> JoinHandle<Result<(), String>> {
    std::thread::Builder::new()
        .name(format!("consumer-{}", spec.topic))
        .spawn(move || {
            let mut router = Router::new(bootstrap, vec![spec.topic.clone()], cluster);
            let result = run(&spec, &mut router, clock, &control, &recorder);
            if let Err(e) = &result {
                recorder.with(|w| w.error(1, || format!("consumer {}: {e}", spec.topic)));
            }
            result
        })
        .expect("spawning a consumer thread")
}

/// Partitions grouped by leader, one connection per leader, each partition with its next offset.
type Assignment = BTreeMap<i32, (Connection, Vec<(i32, i64)>)>;

fn run(
    spec: &ConsumerSpec,
    router: &mut Router,
    clock: Clock,
    control: &ConsumerControl,
    recorder: &Recorder,
) -> Result<(), String> {
    let offsets: Vec<(i32, i64)> = spec.start_offsets.iter().map(|(&p, &o)| (p, o)).collect();
    let mut by_node = Assignment::new();
    let mut unled = assign(spec, router, offsets, &mut by_node)?;
    while !control.go.load(Ordering::Acquire) {
        if control.stop.load(Ordering::Acquire) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    while !control.stop.load(Ordering::Acquire) {
        let mut moved = std::mem::take(&mut unled);
        for (conn, offsets) in by_node.values_mut() {
            moved.extend(fetch_once(spec, conn, offsets, clock, recorder)?);
        }
        if !moved.is_empty() {
            // Those partitions leave their connection; the rest keep fetching where they are.
            for (_, offsets) in by_node.values_mut() {
                offsets.retain(|o| !moved.iter().any(|m| m.0 == o.0));
            }
            router.refresh().map_err(|e| format!("metadata: {e}"))?;
            unled = assign(spec, router, moved, &mut by_node)?;
        }
    }
    Ok(())
}

/// Adds partitions to the connection of their leader; returns those without a leader yet.
fn assign(
    spec: &ConsumerSpec,
    router: &Router,
    offsets: Vec<(i32, i64)>,
    by_node: &mut Assignment,
) -> Result<Vec<(i32, i64)>, String> {
    let mut unled = Vec::new();
    for (p, offset) in offsets {
        let Some((node, address)) = router.cluster().leader(&spec.topic, p) else {
            unled.push((p, offset));
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(slot) = by_node.entry(node) {
            let conn =
                Connection::connect(address, router.security()).map_err(|e| format!("connecting to {address}: {e}"))?;
            let wait = Duration::from_millis(spec.config.fetch_max_wait_ms.max(0) as u64 + 30_000);
            conn.link.set_read_timeout(Some(wait)).map_err(|e| e.to_string())?;
            slot.insert((conn, Vec::new()));
        }
        by_node.get_mut(&node).expect("inserted above").1.push((p, offset));
    }
    by_node.retain(|_, (_, offsets)| !offsets.is_empty());
    Ok(unled)
}

/// One fetch from one leader. Returns the partitions (with their next offsets) this leader
/// no longer serves, to be fetched from the leader Metadata names next.
fn fetch_once(
    spec: &ConsumerSpec,
    conn: &mut Connection,
    offsets: &mut [(i32, i64)],
    clock: Clock,
    recorder: &Recorder,
) -> Result<Vec<(i32, i64)>, String> {
    let mut moved = Vec::new();
    if offsets.is_empty() {
        return Ok(moved);
    }
    let c = &spec.config;
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(c.fetch_max_wait_ms)
        .with_min_bytes(c.fetch_min_bytes)
        .with_max_bytes(c.fetch_max_bytes)
        .with_isolation_level(0)
        // Session id 0 and epoch -1: a full fetch without a fetch session (KIP-227).
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(topic_name(&spec.topic)).with_partitions(
            offsets
                .iter()
                .map(|&(p, offset)| {
                    FetchPartition::default()
                        .with_partition(p)
                        .with_fetch_offset(offset)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(c.max_partition_fetch_bytes)
                })
                .collect(),
        )]);
    let version = conn.versions.fetch;
    let response: FetchResponse =
        conn.round_trip(ApiKey::Fetch, version, &request).map_err(|e| format!("fetch: {e}"))?;
    let now = clock.now_ns();
    if response.error_code != 0 {
        recorder.with(|w| w.error(0, || format!("fetch error code {}", response.error_code)));
        std::thread::sleep(Duration::from_millis(100));
        return Ok(moved);
    }
    let mut latencies = Vec::new();
    let mut consumed_msgs = 0u64;
    let mut consumed_bytes = 0u64;
    let mut errors = Vec::new();
    for topic in &response.responses {
        for p in &topic.partitions {
            let Some(slot) = offsets.iter_mut().find(|(i, _)| *i == p.partition_index) else {
                errors.push(format!("fetch answered unrequested partition {}", p.partition_index));
                continue;
            };
            if stale_metadata(p.error_code) {
                moved.push(*slot);
                continue;
            }
            if p.error_code != 0 {
                // Out of range means data this consumer expected is gone: count it, never skip.
                let fatal = p.error_code == OFFSET_OUT_OF_RANGE;
                errors.push(format!("fetch {}-{}: error code {}", spec.topic, slot.0, p.error_code));
                if fatal {
                    return Err(errors.join("; "));
                }
                continue;
            }
            let Some(records) = &p.records else { continue };
            match for_each_record(records, slot.1, |r| {
                consumed_msgs += 1;
                consumed_bytes += r.value_len as u64;
                if let Some(t) = r.intended_ns {
                    latencies.push(now.saturating_sub(t));
                }
            }) {
                Ok(next) => slot.1 = next,
                Err(e) => return Err(format!("fetch {}-{}: {e}", spec.topic, slot.0)),
            }
        }
    }
    recorder.with(|w| {
        for &l in &latencies {
            record_ns(&mut w.end_to_end, l);
        }
        w.consumed_msgs += consumed_msgs;
        w.consumed_bytes += consumed_bytes;
        for e in &errors {
            w.error(1, || e.clone());
        }
        w.retries += moved.len() as u64;
    });
    Ok(moved)
}
