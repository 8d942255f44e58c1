//! Prometheus metrics (`--metrics-listen`, `metrics.listen`): per-core counters, merged when
//! scraped, and the plain HTTP/1.1 endpoint serving them in the text exposition format 0.0.4.
//! docs/metrics.md lists every metric with the Kafka JMX name it stands for.
//!
//! Every counter belongs to one core's [`Shard`] and is a plain `Cell`: the produce path pays
//! a few adds, never an atomic, a lock or a message. A scrape asks every core for a
//! [`Snapshot`] of its counters and of the gauges its state can answer (partitions, logs,
//! purgatories, groups), adds them up on core 0, and renders the sum.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::{Display, Write as _};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::ApiKey;
use odradek_core::ids::NodeId;
use odradek_core::replica::Role;
use odradek_core::ErrorCode;
use tracing::{debug, warn};

use crate::shard::Shard;

pub mod counters;
use counters::*;

// ---- snapshots ----

/// What one core counts and holds, or the sum over every core. Plain data: it travels from
/// each core to the scraping one.
#[derive(Debug, Default)]
pub struct Snapshot {
    topics: BTreeMap<String, TopicCounters>,
    requests: BTreeMap<i16, (u64, HistogramSnapshot)>,
    errors: BTreeMap<(i16, i16), u64>,
    connections: BTreeMap<String, i64>,
    fsync: HistogramSnapshot,
    isr_shrinks: u64,
    isr_expands: u64,
    produce_purgatory: u64,
    fetch_purgatory: u64,
    partitions: u64,
    leaders: u64,
    under_replicated: u64,
    under_min_isr: u64,
    /// Only the active controller knows (Kafka reports it there and 0 elsewhere).
    offline: u64,
    active_controller: u64,
    /// Log directories of this broker that are offline (core 0 reports the node's).
    offline_log_dirs: u64,
    /// Per partition replica held: `(size bytes, segments, log end offset)`.
    logs: BTreeMap<(String, i32), (u64, u64, i64)>,
    /// High watermarks of the partitions led here, for the lag of committed offsets.
    high_watermarks: BTreeMap<(String, i32), i64>,
    groups: BTreeMap<&'static str, u64>,
    committed: BTreeMap<(String, String, i32), i64>,
}

impl Snapshot {
    /// This core's counters and state. Runs on the core, without awaiting.
    pub fn of(shard: &Shard) -> Snapshot {
        let metrics = &shard.metrics;
        let mut s = Snapshot {
            topics: metrics.topics.borrow().iter().map(|(t, c)| (t.to_string(), *c)).collect(),
            requests: metrics
                .apis
                .iter()
                .enumerate()
                .filter(|(_, a)| a.requests.get() > 0)
                .map(|(key, a)| (key as i16, (a.requests.get(), a.latency.snapshot())))
                .collect(),
            errors: metrics.errors.borrow().clone(),
            connections: metrics.connections.iter().map(|(name, open)| (name.clone(), open.get())).collect(),
            fsync: shard.commit.fsync_latency.snapshot(),
            isr_shrinks: metrics.isr_shrinks.get(),
            isr_expands: metrics.isr_expands.get(),
            ..Snapshot::default()
        };
        let image = shard.image.borrow().clone();
        {
            let machine = shard.machine();
            s.produce_purgatory = machine.waiting_produces() as u64;
            s.fetch_purgatory = machine.parked_long_polls() as u64;
            for (tp, topic_id, replica) in machine.partitions() {
                s.partitions += 1;
                if replica.role() != Role::Leader {
                    continue;
                }
                s.leaders += 1;
                let isr = replica.isr().len();
                let replicas = image.partition(&topic_id, tp.partition).map_or(isr, |p| p.replicas.len());
                s.under_replicated += u64::from(isr < replicas);
                s.under_min_isr += u64::from(isr < replica.config().min_insync_replicas);
                s.high_watermarks.insert((tp.topic.to_string(), tp.partition), replica.high_watermark().0);
            }
            let groups = machine.groups();
            for (_, state) in groups.group_states() {
                *s.groups.entry(state.name()).or_default() += 1;
            }
            s.committed = groups.committed_offsets().map(|(g, t, p, o)| ((g.to_owned(), t.to_owned(), p), o)).collect();
        }
        for (tp, store) in shard.stores().iter() {
            s.logs.insert((tp.topic.to_string(), tp.partition), (store.size_bytes(), store.segment_count() as u64, store.log_end_offset()));
        }
        if shard.id.0 == 0 {
            let config = &shard.shared.config;
            let active = config.roles.controller && shard.shared.controller_id.load(Ordering::Relaxed) == config.node_id;
            s.active_controller = u64::from(active);
            s.offline_log_dirs = shard.shared.log_dirs.offline_count() as u64;
            if active {
                let offline = image.topics().values().flat_map(|t| &t.partitions).filter(|p| p.leader == NodeId::NONE).count();
                s.offline = offline as u64;
            }
        }
        s
    }

    /// Adds another core's snapshot to this one.
    pub fn add(&mut self, other: Snapshot) {
        for (topic, counters) in other.topics {
            self.topics.entry(topic).or_default().add(&counters);
        }
        for (api, (requests, latency)) in other.requests {
            let mine = self.requests.entry(api).or_default();
            mine.0 += requests;
            mine.1.add(&latency);
        }
        for (key, n) in other.errors {
            *self.errors.entry(key).or_default() += n;
        }
        for (listener, open) in other.connections {
            *self.connections.entry(listener).or_default() += open;
        }
        self.fsync.add(&other.fsync);
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expands += other.isr_expands;
        self.produce_purgatory += other.produce_purgatory;
        self.fetch_purgatory += other.fetch_purgatory;
        self.partitions += other.partitions;
        self.leaders += other.leaders;
        self.under_replicated += other.under_replicated;
        self.under_min_isr += other.under_min_isr;
        self.offline += other.offline;
        self.active_controller += other.active_controller;
        self.offline_log_dirs += other.offline_log_dirs;
        self.logs.extend(other.logs);
        self.high_watermarks.extend(other.high_watermarks);
        for (state, n) in other.groups {
            *self.groups.entry(state).or_default() += n;
        }
        self.committed.extend(other.committed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Text::default();
        let topics = &self.topics;
        out.family("odradek_messages_in_total", "Records appended by produce requests, per topic.", "counter");
        for (topic, c) in topics {
            out.sample("odradek_messages_in_total", &[("topic", topic)], c.messages_in);
        }
        out.family("odradek_bytes_in_total", "Record batch bytes appended by produce requests, per topic.", "counter");
        for (topic, c) in topics {
            out.sample("odradek_bytes_in_total", &[("topic", topic)], c.bytes_in);
        }
        out.family("odradek_bytes_out_total", "Record bytes sent in consumer fetch responses, per topic.", "counter");
        for (topic, c) in topics {
            out.sample("odradek_bytes_out_total", &[("topic", topic)], c.bytes_out);
        }
        out.family("odradek_replication_bytes_out_total", "Record bytes sent in follower fetch responses, per topic.", "counter");
        for (topic, c) in topics {
            out.sample("odradek_replication_bytes_out_total", &[("topic", topic)], c.replication_bytes_out);
        }

        out.family("odradek_requests_total", "Requests received, per Kafka API.", "counter");
        for (api, (requests, _)) in &self.requests {
            out.sample("odradek_requests_total", &[("api", &api_name(*api))], requests);
        }
        out.family("odradek_errors_total", "Error codes in responses (per partition for Produce and Fetch), per API and error.", "counter");
        for ((api, code), n) in &self.errors {
            out.sample("odradek_errors_total", &[("api", &api_name(*api)), ("error", &error_name(*code))], n);
        }
        out.family("odradek_request_latency_seconds", "Time from a request read to its response ready, per API.", "histogram");
        for (api, (_, latency)) in &self.requests {
            out.histogram("odradek_request_latency_seconds", &[("api", &api_name(*api))], latency);
        }

        out.family("odradek_produce_purgatory_size", "Produce requests waiting for their append or the ISR.", "gauge");
        out.sample("odradek_produce_purgatory_size", &[], self.produce_purgatory);
        out.family("odradek_fetch_purgatory_size", "Long-poll fetches parked for data.", "gauge");
        out.sample("odradek_fetch_purgatory_size", &[], self.fetch_purgatory);

        out.family("odradek_partitions", "Partition replicas on this broker.", "gauge");
        out.sample("odradek_partitions", &[], self.partitions);
        out.family("odradek_leader_partitions", "Partitions this broker leads.", "gauge");
        out.sample("odradek_leader_partitions", &[], self.leaders);
        out.family("odradek_under_replicated_partitions", "Partitions led here whose ISR lacks a replica.", "gauge");
        out.sample("odradek_under_replicated_partitions", &[], self.under_replicated);
        out.family("odradek_under_min_isr_partitions", "Partitions led here whose ISR is below min.insync.replicas.", "gauge");
        out.sample("odradek_under_min_isr_partitions", &[], self.under_min_isr);
        out.family("odradek_offline_partitions", "Partitions without a leader (active controller only, else 0).", "gauge");
        out.sample("odradek_offline_partitions", &[], self.offline);
        out.family("odradek_active_controller", "1 on the active controller, else 0.", "gauge");
        out.sample("odradek_active_controller", &[], self.active_controller);
        out.family("odradek_offline_log_dirs", "Log directories (log.dirs) of this broker that are offline.", "gauge");
        out.sample("odradek_offline_log_dirs", &[], self.offline_log_dirs);
        out.family("odradek_isr_shrinks_total", "ISR shrinks the controller accepted for partitions led here.", "counter");
        out.sample("odradek_isr_shrinks_total", &[], self.isr_shrinks);
        out.family("odradek_isr_expands_total", "ISR expansions the controller accepted for partitions led here.", "counter");
        out.sample("odradek_isr_expands_total", &[], self.isr_expands);

        out.family("odradek_log_size_bytes", "Bytes of a partition replica's log segments.", "gauge");
        for ((topic, partition), (bytes, _, _)) in &self.logs {
            out.sample("odradek_log_size_bytes", &[("topic", topic), ("partition", &partition.to_string())], bytes);
        }
        out.family("odradek_log_segments", "Segments of a partition replica's log.", "gauge");
        for ((topic, partition), (_, segments, _)) in &self.logs {
            out.sample("odradek_log_segments", &[("topic", topic), ("partition", &partition.to_string())], segments);
        }
        out.family("odradek_log_end_offset", "The offset after a partition replica's last record.", "gauge");
        for ((topic, partition), (_, _, end)) in &self.logs {
            out.sample("odradek_log_end_offset", &[("topic", topic), ("partition", &partition.to_string())], end);
        }
        out.family("odradek_fsync_latency_seconds", "fdatasync calls that acknowledgements wait for.", "histogram");
        out.histogram("odradek_fsync_latency_seconds", &[], &self.fsync);

        out.family("odradek_groups", "Consumer groups this broker coordinates, per state.", "gauge");
        for (state, n) in &self.groups {
            out.sample("odradek_groups", &[("state", state)], n);
        }
        out.family(
            "odradek_consumer_group_lag",
            "High watermark minus the committed offset, per group and partition led by this broker.",
            "gauge",
        );
        for ((group, topic, partition), offset) in &self.committed {
            let Some(high_watermark) = self.high_watermarks.get(&(topic.clone(), *partition)) else { continue };
            let lag = (high_watermark - offset).max(0);
            out.sample("odradek_consumer_group_lag", &[("group", group), ("topic", topic), ("partition", &partition.to_string())], lag);
        }

        out.family("odradek_connections", "Open client connections, per listener.", "gauge");
        for (listener, open) in &self.connections {
            out.sample("odradek_connections", &[("listener", listener)], open);
        }
        out.0
    }
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|_| key.to_string(), |api| format!("{api:?}"))
}

/// Kafka's name of an error (`NOT_LEADER_OR_FOLLOWER`), as its `ErrorsPerSec` labels it.
fn error_name(code: i16) -> String {
    let Some(error) = ErrorCode::try_from_code(code) else { return "NONE".into() };
    if let ErrorCode::Unknown(code) = error {
        return format!("UNKNOWN_{code}");
    }
    let camel = error.to_string();
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The text exposition format: one `# HELP` and `# TYPE` per family, then its samples.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.0.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.0, " {value}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.0.push('{');
        for (i, (key, value)) in labels.iter().copied().chain(le.map(|le| ("le", le))).enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.0.push_str(key);
            self.0.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.0.push_str("\\\\"),
                    '"' => self.0.push_str("\\\""),
                    '\n' => self.0.push_str("\\n"),
                    c => self.0.push(c),
                }
            }
            self.0.push('"');
        }
        self.0.push('}');
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (i, (_, le)) in BUCKETS.iter().enumerate() {
            cumulative += h.counts[i];
            self.0.push_str(&bucket);
            self.labels(labels, Some(le));
            let _ = writeln!(self.0, " {cumulative}");
        }
        self.0.push_str(&bucket);
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.0, " {}", h.count());
        self.sample(&format!("{name}_sum"), labels, h.sum_ns as f64 / 1e9);
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

// ---- the HTTP endpoint ----

/// Scrapers at once; more are closed on arrival (Prometheus keeps one connection per target).
const MAX_CONNECTIONS: usize = 16;
/// A request head larger than this is refused: `GET /metrics` needs a few hundred bytes.
const MAX_HEAD_BYTES: usize = 8 << 10;
/// A scraper silent this long (between requests too) is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `GET /metrics` on `listener` (core 0's executor) until the process ends.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if open.get() >= MAX_CONNECTIONS {
                    debug!("refusing a metrics connection: {MAX_CONNECTIONS} open");
                    continue;
                }
                open.set(open.get() + 1);
                let (shard, open) = (shard.clone(), open.clone());
                glommio::spawn_local(async move {
                    if let Err(e) = serve_connection(&shard, stream).await {
                        debug!(error = %e, "metrics connection closed");
                    }
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if buf.len() > MAX_HEAD_BYTES {
                stream.write_all(&response("431 Request Header Fields Too Large", None, false)).await?;
                return Ok(());
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let request = Request::parse(&buf[..head_end]);
        let (keep_alive, route) = (request.keep_alive(), request.route());
        buf.drain(..head_end);
        let answer = match route {
            Route::Metrics { head } => {
                let body = scrape(shard).await;
                let mut answer = response("200 OK", Some(&body), keep_alive);
                if head {
                    answer.truncate(answer.len() - body.len());
                }
                answer
            }
            Route::NotFound => response("404 Not Found", Some("not found: the metrics are at /metrics\n"), keep_alive),
            Route::MethodNotAllowed => response("405 Method Not Allowed", Some("GET or HEAD only\n"), keep_alive),
            Route::BadRequest => response("400 Bad Request", None, false),
        };
        stream.write_all(&answer).await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Every core's snapshot, summed, rendered.
async fn scrape(shard: &Rc<Shard>) -> String {
    let snapshots = shard.on_every_shard(|s| async move { Snapshot::of(&s) }).await;
    let mut total = Snapshot::default();
    for snapshot in snapshots {
        total.add(snapshot);
    }
    total.render()
}

fn response(status: &str, body: Option<&str>, keep_alive: bool) -> Vec<u8> {
    let body = body.unwrap_or("");
    let content_type = if status.starts_with("200") { "text/plain; version=0.0.4; charset=utf-8" } else { "text/plain; charset=utf-8" };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The parts of an HTTP/1.x request head the endpoint looks at.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    http_1_0: bool,
    close: bool,
    /// A body announced (`Content-Length` above 0, or chunked): never expected, never read.
    body: bool,
    valid: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

impl<'a> Request<'a> {
    fn parse(head: &'a [u8]) -> Request<'a> {
        let invalid = Request { method: "", path: "", http_1_0: false, close: true, body: false, valid: false };
        let Ok(head) = std::str::from_utf8(head) else { return invalid };
        let mut lines = head.split("\r\n");
        let mut words = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(target), Some(version), None) = (words.next(), words.next(), words.next(), words.next()) else {
            return invalid;
        };
        if !matches!(version, "HTTP/1.1" | "HTTP/1.0") || method.is_empty() {
            return invalid;
        }
        let path = target.split(['?', '#']).next().unwrap_or("");
        let mut request = Request { method, path, http_1_0: version == "HTTP/1.0", close: false, body: false, valid: true };
        for line in lines.filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else { return invalid };
            let value = value.trim();
            if name.eq_ignore_ascii_case("connection") {
                request.close |= value.eq_ignore_ascii_case("close");
                request.http_1_0 &= !value.eq_ignore_ascii_case("keep-alive");
            } else if name.eq_ignore_ascii_case("content-length") {
                request.body |= value != "0";
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                request.body = true;
            }
        }
        request
    }

    /// A body is never read, so the connection cannot find the next request after one.
    fn keep_alive(&self) -> bool {
        self.valid && !self.close && !self.http_1_0 && !self.body
    }

    fn route(&self) -> Route {
        match (self.valid, self.method, self.path) {
            (false, _, _) => Route::BadRequest,
            (_, "GET" | "HEAD", "/metrics") => Route::Metrics { head: self.method == "HEAD" },
            (_, _, "/metrics") => Route::MethodNotAllowed,
            _ => Route::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    // Guards against a topic or group name breaking the whole scrape: Prometheus rejects a
    // page with one unescaped quote, backslash or newline in a label value.
    #[test]
    fn metrics_label_values_are_escaped() {
        let mut text = Text::default();
        text.sample("m", &[("group", "a\"b\\c\nd"), ("topic", "plain")], 1);
        assert_eq!(text.0, "m{group=\"a\\\"b\\\\c\\nd\",topic=\"plain\"} 1\n");
        let mut text = Text::default();
        text.family("m", "two\nlines \\ here", "gauge");
        text.sample("m", &[], 2);
        assert_eq!(text.0, "# HELP m two\\nlines \\\\ here\n# TYPE m gauge\nm 2\n");
    }

    #[test]
    fn metrics_histogram_buckets_are_cumulative_and_end_in_inf_sum_and_count() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50)); // first bucket
        h.record(Duration::from_micros(100)); // exactly on the first bound: le means at most
        h.record(Duration::from_millis(3)); // 0.005
        h.record(Duration::from_secs(60)); // above every bound
        let mut text = Text::default();
        text.histogram("lat_seconds", &[("api", "Produce")], &h.snapshot());
        let out = text.0;
        let got = lines(&out);
        assert_eq!(got.len(), BUCKETS.len() + 3);
        assert_eq!(got[0], "lat_seconds_bucket{api=\"Produce\",le=\"0.0001\"} 2");
        assert_eq!(got[4], "lat_seconds_bucket{api=\"Produce\",le=\"0.0025\"} 2");
        assert_eq!(got[5], "lat_seconds_bucket{api=\"Produce\",le=\"0.005\"} 3");
        assert_eq!(got[BUCKETS.len() - 1], "lat_seconds_bucket{api=\"Produce\",le=\"10\"} 3");
        assert_eq!(got[BUCKETS.len()], "lat_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 4");
        assert_eq!(got[BUCKETS.len() + 1], "lat_seconds_sum{api=\"Produce\"} 60.00315");
        assert_eq!(got[BUCKETS.len() + 2], "lat_seconds_count{api=\"Produce\"} 4");
        // Without labels, `le` is the only one.
        let mut text = Text::default();
        text.histogram("f", &[], &HistogramSnapshot::default());
        assert!(text.0.starts_with("f_bucket{le=\"0.0001\"} 0\n"), "{}", text.0);
        assert!(text.0.ends_with("f_bucket{le=\"+Inf\"} 0\nf_sum 0\nf_count 0\n"), "{}", text.0);
    }

    #[test]
    fn metrics_snapshots_of_cores_add_up_and_render_in_a_stable_order() {
        let mut a = Snapshot::default();
        a.topics.insert("t".into(), TopicCounters { messages_in: 3, bytes_in: 300, ..Default::default() });
        a.requests.insert(ApiKey::Produce as i16, (2, HistogramSnapshot::default()));
        a.errors.insert((ApiKey::Produce as i16, ErrorCode::NotLeaderOrFollower.code()), 1);
        a.leaders = 2;
        a.high_watermarks.insert(("t".into(), 0), 10);
        let mut b = Snapshot::default();
        b.topics.insert("t".into(), TopicCounters { messages_in: 4, bytes_in: 400, bytes_out: 7, ..Default::default() });
        b.topics.insert("a".into(), TopicCounters { messages_in: 1, ..Default::default() });
        b.requests.insert(ApiKey::Produce as i16, (5, HistogramSnapshot::default()));
        b.leaders = 1;
        b.committed.insert(("g".into(), "t".into(), 0), 4);
        b.committed.insert(("g".into(), "other".into(), 0), 4);
        a.add(b);
        let text = a.render();
        let got = lines(&text);
        let find = |prefix: &str| got.iter().filter(|l| l.starts_with(prefix)).copied().collect::<Vec<_>>();
        assert_eq!(find("odradek_messages_in_total"), ["odradek_messages_in_total{topic=\"a\"} 1", "odradek_messages_in_total{topic=\"t\"} 7"]);
        assert_eq!(find("odradek_bytes_in_total{topic=\"t\"}"), ["odradek_bytes_in_total{topic=\"t\"} 700"]);
        assert_eq!(find("odradek_requests_total"), ["odradek_requests_total{api=\"Produce\"} 7"]);
        assert_eq!(find("odradek_errors_total"), ["odradek_errors_total{api=\"Produce\",error=\"NOT_LEADER_OR_FOLLOWER\"} 1"]);
        assert_eq!(find("odradek_leader_partitions"), ["odradek_leader_partitions 3"]);
        // The lag of a partition whose leader is elsewhere is not this broker's to tell.
        assert_eq!(find("odradek_consumer_group_lag"), ["odradek_consumer_group_lag{group=\"g\",topic=\"t\",partition=\"0\"} 6"]);
        // Every family is announced once, with a type.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        assert!(types >= 20);
    }

    #[test]
    fn metrics_error_names_are_kafkas() {
        assert_eq!(error_name(6), "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(1), "OFFSET_OUT_OF_RANGE");
        assert_eq!(error_name(9999), "UNKNOWN_9999");
        assert_eq!(api_name(0), "Produce");
        assert_eq!(api_name(18), "ApiVersions");
    }

    #[test]
    fn metrics_requests_route_and_keep_alive() {
        let parse = |head: &'static str| Request::parse(head.as_bytes());
        let get = parse("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n");
        assert_eq!((get.route(), get.keep_alive()), (Route::Metrics { head: false }, true));
        let query = parse("GET /metrics?name[]=x HTTP/1.1\r\n\r\n");
        assert_eq!(query.route(), Route::Metrics { head: false });
        let head = parse("HEAD /metrics HTTP/1.0\r\n\r\n");
        assert_eq!((head.route(), head.keep_alive()), (Route::Metrics { head: true }, false));
        let kept = parse("GET /metrics HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(kept.keep_alive());
        let closing = parse("GET /metrics HTTP/1.1\r\nconnection: close\r\n\r\n");
        assert!(!closing.keep_alive());
        assert_eq!(parse("GET / HTTP/1.1\r\n\r\n").route(), Route::NotFound);
        assert_eq!(parse("GET /metricsx HTTP/1.1\r\n\r\n").route(), Route::NotFound);
        let post = parse("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((post.route(), post.keep_alive()), (Route::MethodNotAllowed, false));
        for bad in ["GET /metrics\r\n\r\n", "GET /metrics HTTP/2\r\n\r\n", "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n", "\r\n\r\n"] {
            assert_eq!(parse(bad).route(), Route::BadRequest, "{bad:?}");
        }
        assert_eq!(Request::parse(b"GET /\xff HTTP/1.1\r\n\r\n").route(), Route::BadRequest);
    }
}
