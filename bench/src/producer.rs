//! Open-loop producers.
//!
//! Message `k` of a schedule at rate `r` is *due* at `epoch + k / r`, whether or not the
//! client is ready to send it. Every latency is measured from that intended time, so when the
//! broker (or this client) stalls, the messages that should have gone out during the stall
//! carry the stall in their latency: coordinated omission is accounted for, not hidden. The
//! gap between the intended time and the moment the request hits the socket is reported as
//! the publish delay; a growing publish delay means the rate is not sustainable.
//!
//! Per connection a writer (this thread) and a reader thread share the socket, each with its
//! half of the `Link` (plain or TLS). The writer hands each request's bookkeeping to the reader over a
//! channel before writing it, so the reader always knows what an answer is for (Kafka answers
//! in request order). At most `max.in.flight` requests are outstanding; while the window is
//! full the writer keeps closing batches (as Kafka's accumulator does), so the next request
//! carries every partition that became ready, and the reader wakes it on each answer.
//!
//! A batch the leader refused without appending (`produce_retriable`: it is not the leader,
//! the partition is not ready, too few in-sync replicas) goes back to the writer, which asks
//! for metadata again and sends it, first in its partition's queue, to the leader named then,
//! until Kafka's default `delivery.timeout.ms` has passed since its first message was due.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use crate::client::{
    decode_response, encode_request, produce_retriable, read_frame, topic_name, Bootstrap, Cluster, Connection,
    Router,
};
use crate::clock::Clock;
use crate::records::BatchBuilder;
use crate::stats::{record_ns, Recorder};
use crate::transport::{LinkWriter, Security};
use crate::workload::{Compression, KeyDistributor, TIMESTAMP_LEN};

/// Bytes of closed batches a producer holds before it stops taking due messages (Kafka's
/// `buffer.memory` default).
const BUFFER_MEMORY: usize = 32 << 20;
/// Keys KEY_ROUND_ROBIN cycles through.
const ROUND_ROBIN_KEYS: usize = 10_000;
/// Kafka's `delivery.timeout.ms` default: a refused batch is resent until this long after its
/// first message was due, then counted as failed.
const DELIVERY_TIMEOUT_NS: u64 = 120_000_000_000;

/// Set by the coordinator, read by one producer thread.
pub struct Control {
    pub stop: AtomicBool,
    /// This producer's rate in messages/s as f64 bits: 0 pauses, infinity sends as fast as
    /// `max.in.flight` allows (closed loop).
    rate_bits: AtomicU64,
    /// Bumped on every rate change: the schedule restarts from the moment it is seen.
    generation: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Control { stop: AtomicBool::new(false), rate_bits: AtomicU64::new(0), generation: AtomicU64::new(0) }
    }
}

impl Control {
    pub fn set_rate(&self, msgs_per_s: f64) {
        self.rate_bits.store(msgs_per_s.to_bits(), Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn rate(&self) -> (u64, f64) {
        let generation = self.generation.load(Ordering::Acquire);
        (generation, f64::from_bits(self.rate_bits.load(Ordering::Acquire)))
    }
}

pub struct ProducerSpec {
    pub topic: String,
    pub partitions: Vec<i32>,
    pub key_distributor: KeyDistributor,
    /// Template value; the first 8 bytes are overwritten by the intended send time.
    pub payload: Arc<Vec<u8>>,
    pub compression: Compression,
    pub acks: i16,
    pub batch_size: usize,
    pub linger_ns: u64,
    pub max_in_flight: usize,
    pub request_timeout_ms: i32,
    pub seed: u64,
}

/// A closed batch.
struct Batch {
    bytes: Bytes,
    /// The intended send time of each message.
    intended: Vec<u64>,
    value_bytes: u64,
    /// Sent before and refused: its publish delay and sent count are already recorded.
    resent: bool,
}

/// Bookkeeping of one request in flight, handed from writer to reader.
struct InFlight {
    correlation: i32,
    /// Per batch its partition and the batch, kept (a reference count) to send it again.
    batches: Vec<(i32, Batch)>,
}

/// A batch the leader refused without appending it, on its way back to the writer.
struct Refused {
    partition: i32,
    batch: Batch,
}

struct NodeLink {
    writer: LinkWriter,
    version: i16,
    next_correlation: i32,
    in_flight: Option<SyncSender<InFlight>>,
    /// Requests written and not yet answered; the reader decrements it.
    outstanding: Arc<AtomicUsize>,
    reader: Option<JoinHandle<()>>,
}

struct PartitionState {
    partition: i32,
    node: i32,
    open: Option<BatchBuilder>,
    /// Closed batches waiting to be sent.
    ready: VecDeque<Batch>,
}

pub fn spawn(
    spec: ProducerSpec,
    cluster: Cluster,
    bootstrap: Bootstrap,
    clock: Clock,
    control: Arc<Control>,
    recorder: Arc<Recorder>,
) -> JoinHandle<Result<(), String>> {
    std::thread::Builder::new()
        .name(format!("producer-{}", spec.topic))
        .spawn(move || {
            let mut router = Router::new(bootstrap, vec![spec.topic.clone()], cluster);
            let result = run(&spec, &mut router, clock, &control, &recorder);
            if let Err(e) = &result {
                recorder.with(|w| w.error(1, || format!("producer {}: {e}", spec.topic)));
            }
            result
        })
        .expect("spawning a producer thread")
}

/// The writer's side of every connection: links per leader node and the way refused
/// batches come back from the readers.
struct Links {
    by_node: BTreeMap<i32, NodeLink>,
    security: Security,
    refused_tx: Sender<Refused>,
    /// Bounded by what is in flight: only batches already sent come back.
    refused_rx: Receiver<Refused>,
}

/// Node of partitions whose leader is not known: their batches wait for a refresh.
const NO_LEADER: i32 = -1;

fn run(
    spec: &ProducerSpec,
    router: &mut Router,
    clock: Clock,
    control: &Control,
    recorder: &Arc<Recorder>,
) -> Result<(), String> {
    let (refused_tx, refused_rx) = channel();
    let mut links = Links { by_node: BTreeMap::new(), security: router.security().clone(), refused_tx, refused_rx };
    let mut parts: Vec<PartitionState> = spec
        .partitions
        .iter()
        .map(|&partition| PartitionState { partition, node: NO_LEADER, open: None, ready: VecDeque::new() })
        .collect();
    route(spec, router.cluster(), clock, recorder, &mut links, &mut parts)?;
    let result = produce_loop(spec, router, clock, control, recorder, &mut links, &mut parts);
    let links = &mut links.by_node;
    // Closing the channels lets each reader finish the answers still in flight, then exit.
    for link in links.values_mut() {
        link.in_flight = None;
    }
    for link in links.values_mut() {
        if let Some(reader) = link.reader.take() {
            let _ = reader.join();
        }
    }
    result
}

/// Points each partition at its leader in `cluster`, connecting to leaders not yet linked.
/// True when every partition has a leader.
fn route(
    spec: &ProducerSpec,
    cluster: &Cluster,
    clock: Clock,
    recorder: &Arc<Recorder>,
    links: &mut Links,
    parts: &mut [PartitionState],
) -> Result<bool, String> {
    let mut all_led = true;
    for state in parts.iter_mut() {
        let Some((node, address)) = cluster.leader(&spec.topic, state.partition) else {
            state.node = NO_LEADER;
            all_led = false;
            continue;
        };
        let reader_gone = links.by_node.get(&node).is_some_and(|l| l.reader.as_ref().is_none_or(|r| r.is_finished()));
        if reader_gone || !links.by_node.contains_key(&node) {
            let link = open_link(address, &links.security, spec, clock, recorder.clone(), links.refused_tx.clone())?;
            links.by_node.insert(node, link);
        }
        state.node = node;
    }
    Ok(all_led)
}

fn open_link(
    address: &str,
    security: &Security,
    spec: &ProducerSpec,
    clock: Clock,
    recorder: Arc<Recorder>,
    refused: Sender<Refused>,
) -> Result<NodeLink, String> {
    let conn = Connection::connect(address, security).map_err(|e| format!("connecting to {address}: {e}"))?;
    let version = conn.versions.produce;
    let (mut read_half, writer_half) = conn.link.split().map_err(|e| e.to_string())?;
    // A broker that stops answering must not hang the run: give up well after the timeout.
    let timeout = Duration::from_millis(spec.request_timeout_ms.max(1000) as u64 * 2);
    read_half.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    // Never full: the writer only sends while fewer than max.in.flight are outstanding.
    let (tx, rx) = sync_channel::<InFlight>(spec.max_in_flight);
    let acks = spec.acks;
    let outstanding = Arc::new(AtomicUsize::new(0));
    let reader_outstanding = outstanding.clone();
    let writer = std::thread::current();
    let reader = std::thread::Builder::new()
        .name("producer-reader".into())
        .spawn(move || {
            let done = |_: ()| {
                reader_outstanding.fetch_sub(1, Ordering::AcqRel);
                writer.unpark();
            };
            while let Ok(request) = rx.recv() {
                if acks == 0 {
                    done(()); // acks=0 gets no answer; the writer counted it as sent
                    continue;
                }
                let outcome = read_frame(&mut read_half).and_then(|frame| {
                    decode_response::<ProduceResponse>(frame, ApiKey::Produce, version, request.correlation)
                });
                let now = clock.now_ns();
                match outcome {
                    Ok(response) => {
                        account(&recorder, request, &response, now, &refused);
                        done(());
                    }
                    Err(e) => {
                        let lost: u64 = request.batches.iter().map(|b| b.1.intended.len() as u64).sum();
                        recorder.with(|w| w.error(lost, || format!("produce answer: {e}")));
                        // The stream is out of step now; drop what is left and stop reading.
                        let _ = read_half.shutdown();
                        writer.unpark();
                        return;
                    }
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(NodeLink { writer: writer_half, version, next_correlation: 1, in_flight: Some(tx), outstanding, reader: Some(reader) })
}

/// Records latencies of a produce answer, batch by batch: a partition-level error fails
/// only that partition's messages, and a batch refused unappended goes back to the writer.
fn account(recorder: &Recorder, request: InFlight, response: &ProduceResponse, now_ns: u64, refused: &Sender<Refused>) {
    let mut errors: BTreeMap<i32, i16> = BTreeMap::new();
    let mut answered = 0usize;
    for topic in &response.responses {
        for p in &topic.partition_responses {
            answered += 1;
            if p.error_code != 0 {
                errors.insert(p.index, p.error_code);
            }
        }
    }
    recorder.with(|w| {
        if answered != request.batches.len() {
            let lost: u64 = request.batches.iter().map(|b| b.1.intended.len() as u64).sum();
            w.error(lost, || format!("produce answer covers {answered} of {} partitions", request.batches.len()));
            return;
        }
        for (partition, mut batch) in request.batches {
            let Batch { intended, value_bytes: bytes, .. } = &batch;
            match errors.get(&partition) {
                Some(&code) if produce_retriable(code) && now_ns < intended[0].saturating_add(DELIVERY_TIMEOUT_NS) => {
                    w.retries += 1;
                    batch.resent = true;
                    // The writer is gone only when the run is over: nothing to resend then.
                    let _ = refused.send(Refused { partition, batch });
                }
                Some(code) => {
                    w.error(intended.len() as u64, || format!("produce to partition {partition}: error code {code}"));
                }
                None => {
                    for &t in intended {
                        record_ns(&mut w.publish_latency, now_ns.saturating_sub(t));
                    }
                    w.acked_msgs += intended.len() as u64;
                    w.acked_bytes += bytes;
                }
            }
        }
    });
}

struct Partitioner {
    kind: KeyDistributor,
    sticky: usize,
    next_key: usize,
    keys: Vec<(Vec<u8>, usize)>,
    rng: u64,
}

impl Partitioner {
    fn new(kind: KeyDistributor, partitions: usize, seed: u64) -> Partitioner {
        let mut rng = seed | 1;
        let keys = if kind == KeyDistributor::KeyRoundRobin {
            (0..ROUND_ROBIN_KEYS)
                .map(|_| {
                    let key = format!("{:016x}", xorshift(&mut rng)).into_bytes();
                    let partition = kafka_partition(&key, partitions);
                    (key, partition)
                })
                .collect()
        } else {
            Vec::new()
        };
        Partitioner { kind, sticky: (seed as usize) % partitions, next_key: 0, keys, rng }
    }

    /// (index into the producer's partitions, key) of the next message.
    fn next(&mut self, partitions: usize, key_buf: &mut Vec<u8>) -> (usize, bool) {
        match self.kind {
            KeyDistributor::NoKey => (self.sticky, false),
            KeyDistributor::KeyRoundRobin => {
                let (key, partition) = &self.keys[self.next_key];
                self.next_key = (self.next_key + 1) % self.keys.len();
                key_buf.clear();
                key_buf.extend_from_slice(key);
                (*partition, true)
            }
            KeyDistributor::RandomNano => {
                key_buf.clear();
                key_buf.extend_from_slice(format!("{}", xorshift(&mut self.rng)).as_bytes());
                (kafka_partition(key_buf, partitions), true)
            }
        }
    }

    /// Kafka's sticky partitioner moves on when the batch it was filling closes.
    fn batch_closed(&mut self, index: usize, partitions: usize) {
        if self.kind == KeyDistributor::NoKey && index == self.sticky {
            self.sticky = (self.sticky + 1) % partitions;
        }
    }
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Kafka's default partitioner for keyed records: `toPositive(murmur2(key)) % partitions`.
pub fn kafka_partition(key: &[u8], partitions: usize) -> usize {
    (murmur2(key) & 0x7fff_ffff) as usize % partitions
}

/// Kafka's `Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h = SEED ^ len as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The intended send time of message `k` of a schedule started at `epoch_ns` at `rate`.
pub fn intended_ns(epoch_ns: u64, k: u64, rate: f64) -> u64 {
    epoch_ns + (k as f64 * 1e9 / rate) as u64
}

/// How many messages of a schedule started at `epoch_ns` are due by `now_ns`.
pub fn due_count(epoch_ns: u64, now_ns: u64, rate: f64) -> u64 {
    if now_ns < epoch_ns {
        return 0;
    }
    ((now_ns - epoch_ns) as f64 * rate / 1e9) as u64 + 1
}

fn produce_loop(
    spec: &ProducerSpec,
    router: &mut Router,
    clock: Clock,
    control: &Control,
    recorder: &Arc<Recorder>,
    links: &mut Links,
    parts: &mut [PartitionState],
) -> Result<(), String> {
    let n = parts.len();
    let mut partitioner = Partitioner::new(spec.key_distributor, n, spec.seed);
    let mut value = spec.payload.as_ref().clone();
    let mut key = Vec::with_capacity(32);
    let mut generation = u64::MAX;
    let mut rate = 0.0f64;
    let mut epoch = 0u64;
    let mut next_k = 0u64;
    let mut buffered = 0usize;
    let record_max = BatchBuilder::record_size(Some(32), value.len());
    let wall_offset_ms = wall_clock_ms() - (clock.now_ns() / 1_000_000) as i64;

    let mut stale = false;
    while !control.stop.load(Ordering::Acquire) {
        // Refused batches go first in their partition's queue, to the leader named next.
        while let Ok(Refused { partition, batch }) = links.refused_rx.try_recv() {
            let state = parts.iter_mut().find(|s| s.partition == partition).expect("a partition of this producer");
            buffered += batch.bytes.len();
            state.ready.push_front(batch);
            stale = true;
        }
        if stale {
            let cluster = router.refresh().map_err(|e| format!("metadata: {e}"))?;
            stale = !route(spec, cluster, clock, recorder, links, parts)?;
        }
        let now = clock.now_ns();
        let (g, r) = control.rate();
        if g != generation {
            generation = g;
            rate = r;
            epoch = now;
            next_k = 0;
        }
        // Take the due messages into batches (bounded by buffer memory: the rest stay due,
        // and their intended times keep counting).
        let due = if rate.is_infinite() { u64::MAX } else if rate > 0.0 { due_count(epoch, now, rate) } else { 0 };
        while next_k < due && buffered < BUFFER_MEMORY {
            let intended = if rate.is_infinite() { now } else { intended_ns(epoch, next_k, rate) };
            let (mut index, keyed) = partitioner.next(n, &mut key);
            let fits = parts[index].open.as_ref().is_none_or(|b| b.size_bytes() + record_max <= spec.batch_size);
            if !fits {
                close(&mut parts[index], spec, wall_offset_ms, &mut buffered, recorder)?;
                partitioner.batch_closed(index, n);
                if !keyed {
                    index = partitioner.sticky;
                }
            }
            let state = &mut parts[index];
            let batch = state.open.get_or_insert_with(|| BatchBuilder::new(spec.batch_size));
            value[..TIMESTAMP_LEN].copy_from_slice(&intended.to_be_bytes());
            batch.push(keyed.then_some(&key[..]), &value, intended);
            next_k += 1;
            if rate.is_infinite() && buffered + spec.batch_size * n >= BUFFER_MEMORY {
                break;
            }
        }
        // One request per node whose in-flight window has room, carrying the oldest closed
        // batch of each partition. Batches close when full, or when they have lingered and a
        // request can take them: like Kafka's accumulator, a lingered batch keeps filling
        // while the window is full, so requests grow instead of queueing up.
        let mut sent_any = false;
        for (&node, link) in links.by_node.iter_mut() {
            if link.outstanding.load(Ordering::Acquire) >= spec.max_in_flight {
                continue;
            }
            if link.reader.as_ref().is_none_or(|r| r.is_finished()) {
                return Err("the connection's reader stopped (see errors)".into());
            }
            for (i, state) in parts.iter_mut().enumerate() {
                let lingered = state.node == node
                    && state.ready.is_empty()
                    && state.open.as_ref().is_some_and(|b| now >= b.intended_ns[0].saturating_add(spec.linger_ns));
                if lingered {
                    close(state, spec, wall_offset_ms, &mut buffered, recorder)?;
                    partitioner.batch_closed(i, n);
                }
            }
            let mut batches = Vec::new();
            for state in parts.iter_mut().filter(|s| s.node == node) {
                if let Some(batch) = state.ready.pop_front() {
                    buffered -= batch.bytes.len();
                    batches.push((state.partition, batch));
                }
            }
            if batches.is_empty() {
                continue;
            }
            send(spec, clock, link, batches, recorder)?;
            sent_any = true;
        }
        if sent_any || (next_k < due && buffered < BUFFER_MEMORY) {
            continue;
        }
        // Nothing to do: sleep until the next message is due, a batch's linger ends, or (with
        // the in-flight window full) an answer arrives and the reader unparks this thread.
        let mut wake = if rate > 0.0 && rate.is_finite() && next_k >= due {
            intended_ns(epoch, next_k, rate)
        } else {
            now + 1_000_000
        };
        for s in parts.iter() {
            let window_open = links.by_node.get(&s.node).is_some_and(|l| l.outstanding.load(Ordering::Acquire) < spec.max_in_flight);
            if let (Some(b), true) = (&s.open, window_open) {
                wake = wake.min(b.intended_ns[0].saturating_add(spec.linger_ns));
            }
        }
        let now = clock.now_ns();
        if wake > now {
            std::thread::park_timeout(Duration::from_nanos((wake - now).min(10_000_000)));
        }
    }
    Ok(())
}

fn close(
    state: &mut PartitionState,
    spec: &ProducerSpec,
    wall_offset_ms: i64,
    buffered: &mut usize,
    recorder: &Recorder,
) -> Result<(), String> {
    let Some(batch) = state.open.take() else { return Ok(()) };
    let intended = batch.intended_ns.clone();
    let value_bytes = (intended.len() * spec.payload.len()) as u64;
    let timestamp_ms = wall_offset_ms + (intended[0] / 1_000_000) as i64;
    match batch.finish(spec.compression, timestamp_ms) {
        Ok(bytes) => {
            *buffered += bytes.len();
            state.ready.push_back(Batch { bytes, intended, value_bytes, resent: false });
            Ok(())
        }
        Err(e) => {
            recorder.with(|w| w.error(intended.len() as u64, || e.clone()));
            Err(e)
        }
    }
}

fn send(
    spec: &ProducerSpec,
    clock: Clock,
    link: &mut NodeLink,
    batches: Vec<(i32, Batch)>,
    recorder: &Recorder,
) -> Result<(), String> {
    let correlation = link.next_correlation;
    link.next_correlation = link.next_correlation.wrapping_add(1);
    let request = ProduceRequest::default()
        .with_acks(spec.acks)
        .with_timeout_ms(spec.request_timeout_ms)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(&spec.topic)).with_partition_data(
            batches
                .iter()
                .map(|(p, b)| PartitionProduceData::default().with_index(*p).with_records(Some(b.bytes.clone())))
                .collect(),
        )]);
    let frame = encode_request(ApiKey::Produce, link.version, correlation, &request).map_err(|e| e.to_string())?;
    let in_flight = InFlight { correlation, batches };
    let first_sends = || in_flight.batches.iter().map(|(_, b)| b).filter(|b| !b.resent);
    let msgs: u64 = first_sends().map(|b| b.intended.len() as u64).sum();
    let bytes: u64 = first_sends().map(|b| b.value_bytes).sum();
    let sent_at = clock.now_ns();
    recorder.with(|w| {
        for b in first_sends() {
            for &t in &b.intended {
                record_ns(&mut w.publish_delay, sent_at.saturating_sub(t));
            }
        }
        w.sent_msgs += msgs;
        w.sent_bytes += bytes;
        if spec.acks == 0 {
            // Nothing will answer: the write is all there is to measure.
            for b in first_sends() {
                for &t in &b.intended {
                    record_ns(&mut w.publish_latency, sent_at.saturating_sub(t));
                }
            }
            w.acked_msgs += msgs;
            w.acked_bytes += bytes;
        }
    });
    let tx = link.in_flight.as_ref().ok_or("connection closed")?;
    link.outstanding.fetch_add(1, Ordering::AcqRel);
    tx.send(in_flight).map_err(|_| "the connection's reader stopped (see errors)".to_string())?;
    link.writer.write_all(&frame).map_err(|e| format!("writing a produce request: {e}"))?;
    Ok(())
}

fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_partitions() {
        // Values from Kafka's UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }

    #[test]
    fn schedule_is_open_loop_and_never_skips_a_message() {
        let rate = 1000.0; // one message per millisecond
        assert_eq!(due_count(5_000, 4_999, rate), 0);
        assert_eq!(due_count(5_000, 5_000, rate), 1);
        assert_eq!(due_count(5_000, 5_000 + 999_999, rate), 1);
        assert_eq!(due_count(5_000, 5_000 + 1_000_000, rate), 2);
        // After a 1 s stall every message of that second is due, each at its own time.
        assert_eq!(due_count(0, 1_000_000_000, rate), 1001);
        assert_eq!(intended_ns(0, 500, rate), 500_000_000);
        assert_eq!(intended_ns(7, 0, rate), 7);
    }

    #[test]
    fn sticky_partitioner_moves_on_when_its_batch_closes() {
        let mut p = Partitioner::new(KeyDistributor::NoKey, 4, 0);
        let mut key = Vec::new();
        let (first, keyed) = p.next(4, &mut key);
        assert!(!keyed);
        assert_eq!(p.next(4, &mut key).0, first);
        p.batch_closed(first, 4);
        assert_eq!(p.next(4, &mut key).0, (first + 1) % 4);
    }

    #[test]
    fn round_robin_keys_spread_over_partitions() {
        let mut p = Partitioner::new(KeyDistributor::KeyRoundRobin, 8, 42);
        let mut key = Vec::new();
        let mut seen = [0usize; 8];
        for _ in 0..ROUND_ROBIN_KEYS {
            let (i, keyed) = p.next(8, &mut key);
            assert!(keyed);
            assert_eq!(i, kafka_partition(&key, 8));
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&c| c > ROUND_ROBIN_KEYS / 16), "{seen:?}");
    }
}
