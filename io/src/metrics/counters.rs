//! The counters each core keeps for the metrics endpoint (`super`), and the fsync histogram
//! storage fills: plain `Cell`s, owned by one core, read by the scrape on that core.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, FetchResponse};

// ---- histograms ----

/// Upper bounds of the latency buckets, in nanoseconds and as the `le` label: from a fast
/// fdatasync on NVMe (100 µs) to a long poll's default wait (Fetch waits up to `max_wait_ms`).
pub(super) const BUCKETS: [(u64, &str); 16] = [
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
    (10_000_000_000, "10"),
];

/// A latency histogram of one core: per bucket the samples at most its bound and above the
/// bound before (the last slot is above every bound), made cumulative when rendered.
#[derive(Default)]
pub struct Histogram {
    pub(super) counts: [Cell<u64>; BUCKETS.len() + 1],
    pub(super) sum_ns: Cell<u64>,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = &self.counts[BUCKETS.partition_point(|&(bound, _)| bound < ns)];
        slot.set(slot.get() + 1);
        self.sum_ns.set(self.sum_ns.get().saturating_add(ns));
    }

    pub(super) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot { counts: std::array::from_fn(|i| self.counts[i].get()), sum_ns: self.sum_ns.get() }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub(super) counts: [u64; BUCKETS.len() + 1],
    pub(super) sum_ns: u64,
}

impl HistogramSnapshot {
    pub(super) fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine += theirs;
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    pub(super) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

// ---- one core's counters ----

/// Api keys are dense and small (Kafka's highest is below 100): a request finds its
/// counters by index.
pub(super) const API_KEYS: usize = 128;

#[derive(Default)]
pub(super) struct ApiCounters {
    pub(super) requests: Cell<u64>,
    pub(super) latency: Histogram,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct TopicCounters {
    pub(super) messages_in: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) replication_bytes_out: u64,
}

impl TopicCounters {
    pub(super) fn add(&mut self, other: &TopicCounters) {
        self.messages_in += other.messages_in;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.replication_bytes_out += other.replication_bytes_out;
    }
}

/// The counters of one core, owned by its [`Shard`]; read by the scrape through a job on
/// that core, so nothing here is shared between threads.
pub struct CoreMetrics {
    /// Without an endpoint nothing is counted (but fsync times, one clock read a sync), so
    /// the broker with metrics off is the baseline their cost is measured against.
    pub(super) enabled: bool,
    /// Topics are few and change rarely; looking one up costs a few string compares.
    pub(super) topics: RefCell<BTreeMap<Arc<str>, TopicCounters>>,
    pub(super) apis: Box<[ApiCounters]>,
    /// `(api key, error code)`: touched on errors only.
    pub(super) errors: RefCell<BTreeMap<(i16, i16), u64>>,
    /// Open client connections per listener, by the listener's place in the config.
    pub(super) connections: Box<[(String, Cell<i64>)]>,
    pub(super) isr_shrinks: Cell<u64>,
    pub(super) isr_expands: Cell<u64>,
}

impl CoreMetrics {
    /// `enabled`: the endpoint is on; `listeners`: the client listeners' names, in order.
    pub fn new(enabled: bool, listeners: &[String]) -> CoreMetrics {
        CoreMetrics {
            enabled,
            topics: RefCell::default(),
            apis: (0..API_KEYS).map(|_| ApiCounters::default()).collect(),
            errors: RefCell::default(),
            connections: listeners.iter().map(|l| (l.clone(), Cell::new(0))).collect(),
            isr_shrinks: Cell::new(0),
            isr_expands: Cell::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub(super) fn topic(&self, topic: &Arc<str>, update: impl FnOnce(&mut TopicCounters)) {
        let mut topics = self.topics.borrow_mut();
        match topics.get_mut(&**topic) {
            Some(counters) => update(counters),
            None => update(topics.entry(topic.clone()).or_default()),
        }
    }

    /// Records the broker took for a partition: `records` as a produce carried them (counted
    /// once the produce is answered without error, so the sum is what clients were told).
    pub fn produced(&self, topic: &Arc<str>, records: &Bytes) {
        if !self.enabled {
            return;
        }
        let messages: u64 = odradek_core::batch::scan_headers(records).map(|(_, h)| u64::try_from(h.record_count).unwrap_or(0)).sum();
        let bytes = records.len() as u64;
        self.topic(topic, |c| {
            c.messages_in += messages;
            c.bytes_in += bytes;
        });
    }

    /// A Fetch's answer, as it leaves: the record bytes it carries per topic, and its
    /// partitions' errors. A follower's fetch counts as replication (as in Kafka).
    pub fn fetched(&self, response: &FetchResponse, follower: bool, image: &odradek_core::controller::MetadataImage) {
        if !self.enabled {
            return;
        }
        for topic in &response.responses {
            let bytes: u64 = topic.partitions.iter().map(|p| p.records.as_ref().map_or(0, |r| r.len() as u64)).sum();
            for p in topic.partitions.iter().filter(|p| p.error_code != 0) {
                self.error(ApiKey::Fetch, p.error_code);
            }
            if bytes == 0 {
                continue;
            }
            // Fetch v13+ names topics by id.
            let name: Arc<str> = if topic.topic.is_empty() {
                match image.topics().get(topic.topic_id.as_bytes()) {
                    Some(t) => t.name.as_str().into(),
                    None => continue,
                }
            } else {
                topic.topic.as_str().into()
            };
            self.topic(&name, |c| if follower { c.replication_bytes_out += bytes } else { c.bytes_out += bytes });
        }
    }

    pub fn error(&self, api: ApiKey, code: i16) {
        if !self.enabled {
            return;
        }
        *self.errors.borrow_mut().entry((api as i16, code)).or_default() += 1;
    }

    /// A request read off a connection at `started`; its latency is recorded when `answer`
    /// resolves.
    pub fn time_request<T: 'static>(
        self: &Rc<Self>,
        api: ApiKey,
        started: Instant,
        answer: futures_lite::future::BoxedLocal<T>,
    ) -> futures_lite::future::BoxedLocal<T> {
        let Some(counters) = self.apis.get(api as i16 as usize).filter(|_| self.enabled) else { return answer };
        counters.requests.set(counters.requests.get() + 1);
        let metrics = self.clone();
        Box::pin(async move {
            let answered = answer.await;
            metrics.apis[api as i16 as usize].latency.record(started.elapsed());
            answered
        })
    }

    /// An ISR change the controller accepted for a partition this core leads.
    pub fn isr_changed(&self, before: usize, after: usize) {
        let counter = match after.cmp(&before) {
            std::cmp::Ordering::Less => &self.isr_shrinks,
            std::cmp::Ordering::Greater => &self.isr_expands,
            std::cmp::Ordering::Equal => return,
        };
        if self.enabled {
            counter.set(counter.get() + 1);
        }
    }
}

/// A client connection counted open on its listener until dropped.
pub struct OpenConnection {
    pub(super) metrics: Rc<CoreMetrics>,
    pub(super) listener: usize,
}

impl OpenConnection {
    pub fn new(metrics: &Rc<CoreMetrics>, listener: &str) -> Option<OpenConnection> {
        if !metrics.enabled {
            return None;
        }
        let index = metrics.connections.iter().position(|(name, _)| name == listener)?;
        let open = &metrics.connections[index].1;
        open.set(open.get() + 1);
        Some(OpenConnection { metrics: metrics.clone(), listener: index })
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let open = &self.metrics.connections[self.listener].1;
        open.set(open.get() - 1);
    }
}

