//! The coordinator of a workload run: topics, threads, the rate (fixed or searched), the
//! per-interval collection, the drain, and the result.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::ceiling::{self, Ceilings};
use crate::client::{bootstrap_list, Bootstrap, Cluster, Router};
use crate::clock::Clock;
use crate::consumer::{self, ConsumerControl, ConsumerSpec};
use crate::cpu::CpuMeter;
use crate::nullsink::NullSink;
use crate::producer::{self, Control, ProducerSpec};
use crate::stats::{LatencySummary, Recorder, Window};
use crate::transport::{Security, SecurityProtocol};
use crate::workload::Workload;

pub struct RunOptions {
    pub bootstrap: String,
    /// How to reach the brokers; a null sink is always reached over PLAINTEXT.
    pub security: Security,
    pub broker_pid: Option<u32>,
    pub with_ceilings: Option<PathBuf>,
    pub ceiling_seconds: f64,
    pub interval_s: f64,
    pub search_step_s: f64,
    pub drain_timeout_s: f64,
    pub progress: bool,
    pub topic_prefix: Option<String>,
    /// -1: the broker's default.
    pub replication_factor: i16,
    /// Topic configs for the created topics, such as `min.insync.replicas`.
    pub topic_configs: Vec<(String, String)>,
    /// Measure the client alone against a null sink first (see `nullsink`).
    pub with_client_ceiling: bool,
    /// Run against a null sink instead of a broker.
    pub client_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub format: u32,
    pub workload: Workload,
    pub bootstrap: String,
    /// How the brokers were reached: the same broker costs more over SSL.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub ceilings: Option<Ceilings>,
    /// The same producers against a null sink, closed loop: what the client alone can do.
    #[serde(default)]
    pub client_ceiling: Option<ClientCeiling>,
    /// This run went to a null sink, not a broker.
    #[serde(default)]
    pub client_only: bool,
    pub rate: RateInfo,
    pub intervals: Vec<Interval>,
    pub overall: Overall,
    pub counts: Counts,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub load_average_before: String,
    pub load_average_after: String,
    pub broker_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateInfo {
    /// Messages/s across all producers in the measured phase (None: unlimited).
    pub target_msgs_per_s: f64,
    /// Highest sustainable rate found by the search, when `producerRate` is 0.
    pub max_found_msgs_per_s: Option<f64>,
    pub search_steps: Vec<SearchStep>,
    /// Measured phases at the rate found that did not hold it, each followed by a step down.
    #[serde(default)]
    pub failed_confirmations: Vec<SearchStep>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientCeiling {
    pub seconds: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub client_cpu_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchStep {
    pub target_msgs_per_s: f64,
    pub acked_msgs_per_s: f64,
    pub publish_delay_p99_us: u64,
    pub sustained: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interval {
    /// Seconds since the start of the warm-up.
    pub t_s: f64,
    pub warmup: bool,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_latency_p50_us: u64,
    pub publish_latency_p99_us: u64,
    pub publish_latency_max_us: u64,
    pub publish_delay_p99_us: u64,
    pub end_to_end_p50_us: u64,
    pub end_to_end_p99_us: u64,
    pub end_to_end_max_us: u64,
    pub broker_cpu_pct: Option<f64>,
    pub client_cpu_pct: Option<f64>,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overall {
    pub measured_s: f64,
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub publish_latency: LatencySummary,
    pub publish_delay: LatencySummary,
    pub end_to_end: LatencySummary,
    /// Mean CPU% over the measured phase; 100 = one core busy.
    pub broker_cpu_pct: Option<f64>,
    pub client_cpu_pct: Option<f64>,
    /// Publish MB/s over the loopback ceiling, when ceilings were measured.
    pub publish_vs_loopback: Option<f64>,
    /// End-to-end p99 over the raw O_DIRECT append + fdatasync p99.
    pub end_to_end_p99_vs_fdatasync_p99: Option<f64>,
    /// Publish p99 over the same raw p99 (issue 15's latency target is stated this way).
    #[serde(default)]
    pub publish_p99_vs_fdatasync_p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    pub sent_msgs: u64,
    pub acked_msgs: u64,
    pub errors: u64,
    /// Batches and fetches sent again to a new leader (see `Window::retries`).
    #[serde(default)]
    pub retries: u64,
    /// Messages each subscription read, per topic: equal to `acked_msgs` of that topic when
    /// nothing was lost or duplicated.
    pub acked_per_topic: BTreeMap<String, u64>,
    pub consumed_per_subscription: BTreeMap<String, u64>,
    pub drained: bool,
}

struct Threads {
    producer_controls: Vec<Arc<Control>>,
    producer_recorders: Vec<(String, Arc<Recorder>)>,
    producers: Vec<std::thread::JoinHandle<Result<(), String>>>,
    consumer_control: Arc<ConsumerControl>,
    consumer_recorders: Vec<(String, Arc<Recorder>)>,
    consumers: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Threads {
    fn set_total_rate(&self, total: f64) {
        let each = total / self.producer_controls.len() as f64;
        for c in &self.producer_controls {
            c.set_rate(each);
        }
    }
}

pub fn run(workload: &Workload, options: &RunOptions) -> Result<RunResult, String> {
    let load_before = load_average();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ceilings = match &options.with_ceilings {
        Some(dir) => {
            let c = ceiling::measure(dir, options.ceiling_seconds)?;
            ceiling::print(&c);
            Some(c)
        }
        None => None,
    };
    let client_ceiling = if options.with_client_ceiling && !options.client_only {
        let c = client_ceiling(workload, options.ceiling_seconds)?;
        println!(
            "client alone (null sink, closed loop, {:.1} s): {:.0} msgs/s, {:.1} MB/s",
            c.seconds, c.publish_msgs_per_s, c.publish_mb_per_s
        );
        Some(c)
    } else {
        None
    };
    let sink = if options.client_only { Some(NullSink::start(workload.partitions_per_topic as i32)?) } else { None };
    let mut workload = workload.clone();
    let bootstrap = match &sink {
        Some(sink) => {
            // Nothing reads from a null sink: producers only.
            workload.subscriptions_per_topic = 0;
            Bootstrap { servers: vec![sink.address().to_owned()], security: Security::Plaintext }
        }
        None => Bootstrap { servers: bootstrap_list(&options.bootstrap), security: options.security.clone() },
    };
    let workload = &workload;
    let broker_pid = if options.client_only {
        None
    } else {
        options.broker_pid.or_else(|| {
            let port = bootstrap.servers.first()?.rsplit(':').next()?.parse().ok()?;
            crate::cpu::pid_listening_on(port)
        })
    };

    let prefix = options.topic_prefix.clone().unwrap_or_else(|| format!("bench-{started_unix_s}"));
    let topics = workload.topic_names(&prefix);
    let partitions = workload.partitions_per_topic as i32;
    let mut router = Router::connect(bootstrap.clone(), topics.clone()).map_err(|e| format!("{}: {e}", options.bootstrap))?;
    router.create_topics(partitions, options.replication_factor, &options.topic_configs).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + TOPIC_READY_TIMEOUT;
    router.wait_for_leaders(partitions, deadline).map_err(|e| e.to_string())?;

    let clock = Clock::new();
    let mut threads = start_threads(workload, &mut router, &bootstrap, &topics, clock)?;
    if workload.backlog_bytes() == 0 {
        threads.consumer_control.go.store(true, Ordering::Release);
    }

    let mut rate = RateInfo {
        target_msgs_per_s: workload.producer_rate,
        max_found_msgs_per_s: None,
        search_steps: Vec::new(),
        failed_confirmations: Vec::new(),
    };
    let mut totals = Totals::default();
    let outcome = measure_at_holding_rate(workload, options, &threads, clock, broker_pid, &mut rate, &mut totals);
    // Stop producers first, let them finish their answers, then let consumers catch up.
    for c in &threads.producer_controls {
        c.stop.store(true, Ordering::Release);
    }
    let mut errors: Vec<String> = Vec::new();
    let producers = std::mem::take(&mut threads.producers);
    for p in producers {
        if let Ok(Err(e)) = p.join() {
            errors.push(e);
        }
    }
    threads.consumer_control.go.store(true, Ordering::Release);
    let drained = outcome.is_ok() && drain(&threads, &mut totals, options.drain_timeout_s);
    threads.consumer_control.stop.store(true, Ordering::Release);
    for c in std::mem::take(&mut threads.consumers) {
        if let Ok(Err(e)) = c.join() {
            errors.push(e);
        }
    }
    let (intervals, (overall_window, measured_s), cpu) = outcome?;
    collect(&threads, &mut totals);
    errors.extend(totals.error_samples.iter().cloned());
    let mut overall = Overall {
        measured_s,
        publish_msgs_per_s: overall_window.acked_msgs as f64 / measured_s,
        publish_mb_per_s: overall_window.acked_bytes as f64 / measured_s / 1e6,
        consume_msgs_per_s: overall_window.consumed_msgs as f64 / measured_s,
        consume_mb_per_s: overall_window.consumed_bytes as f64 / measured_s / 1e6,
        publish_latency: LatencySummary::of(&overall_window.publish_latency, true),
        publish_delay: LatencySummary::of(&overall_window.publish_delay, true),
        end_to_end: LatencySummary::of(&overall_window.end_to_end, true),
        broker_cpu_pct: cpu.0,
        client_cpu_pct: cpu.1,
        publish_vs_loopback: None,
        end_to_end_p99_vs_fdatasync_p99: None,
        publish_p99_vs_fdatasync_p99: None,
    };
    if let Some(c) = &ceilings {
        overall.publish_vs_loopback = Some(overall.publish_mb_per_s / c.loopback.mb_per_s);
        let sync_p99 = c.direct_append_fdatasync.latency.p99_us.max(1) as f64;
        if overall.publish_latency.count > 0 {
            overall.publish_p99_vs_fdatasync_p99 = Some(overall.publish_latency.p99_us as f64 / sync_p99);
        }
        if overall.end_to_end.count > 0 {
            overall.end_to_end_p99_vs_fdatasync_p99 = Some(overall.end_to_end.p99_us as f64 / sync_p99);
        }
    }
    Ok(RunResult {
        format: 1,
        workload: workload.clone(),
        bootstrap: if options.client_only { "null-sink".into() } else { options.bootstrap.clone() },
        security_protocol: bootstrap.security.protocol(),
        started_unix_s,
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_before: load_before,
            load_average_after: load_average(),
            broker_pid,
        },
        ceilings,
        client_ceiling,
        client_only: options.client_only,
        rate,
        intervals,
        overall,
        counts: Counts {
            sent_msgs: totals.sent_msgs,
            acked_msgs: totals.acked_msgs,
            errors: totals.errors,
            retries: totals.retries,
            acked_per_topic: totals.acked_per_topic,
            consumed_per_subscription: totals.consumed_per_subscription,
            drained,
        },
        errors,
    })
}

/// Whole-run counters, warm-up and drain included, for the message-count check.
#[derive(Default)]
struct Totals {
    sent_msgs: u64,
    acked_msgs: u64,
    errors: u64,
    retries: u64,
    error_samples: Vec<String>,
    acked_per_topic: BTreeMap<String, u64>,
    consumed_per_subscription: BTreeMap<String, u64>,
}

/// How long a new topic may take until every partition's leader serves it.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

fn start_threads(
    workload: &Workload,
    router: &mut Router,
    bootstrap: &Bootstrap,
    topics: &[String],
    clock: Clock,
) -> Result<Threads, String> {
    let payload = Arc::new(payload(workload)?);
    let partitions: Vec<i32> = (0..workload.partitions_per_topic as i32).collect();
    let mut threads = Threads {
        producer_controls: Vec::new(),
        producer_recorders: Vec::new(),
        producers: Vec::new(),
        consumer_control: Arc::new(ConsumerControl::default()),
        consumer_recorders: Vec::new(),
        consumers: Vec::new(),
    };
    for topic in topics {
        // Consumers start at the current end so they read exactly what this run produces.
        let deadline = std::time::Instant::now() + TOPIC_READY_TIMEOUT;
        let ends = router.end_offsets(topic, &partitions, deadline).map_err(|e| e.to_string())?;
        // The leaders that answered: producers and consumers start from this picture.
        let cluster: &Cluster = router.cluster();
        for s in 0..workload.subscriptions_per_topic {
            let consumers = workload.consumer_per_subscription.max(1);
            for c in 0..consumers {
                let start_offsets: BTreeMap<i32, i64> = ends
                    .iter()
                    .filter(|(p, _)| (**p as u32) % consumers == c)
                    .map(|(&p, &o)| (p, o))
                    .collect();
                if start_offsets.is_empty() {
                    continue;
                }
                let recorder = Arc::new(Recorder::default());
                threads.consumer_recorders.push((format!("{topic}/sub-{s}"), recorder.clone()));
                threads.consumers.push(consumer::spawn(
                    ConsumerSpec { topic: topic.clone(), start_offsets, config: workload.consumer_config.clone() },
                    cluster.clone(),
                    bootstrap.clone(),
                    clock,
                    threads.consumer_control.clone(),
                    recorder,
                ));
            }
            if workload.consumer_per_subscription == 0 {
                break;
            }
        }
        for i in 0..workload.producers_per_topic {
            let control = Arc::new(Control::default());
            let recorder = Arc::new(Recorder::default());
            let spec = ProducerSpec {
                topic: topic.clone(),
                partitions: partitions.clone(),
                key_distributor: workload.key_distributor,
                payload: payload.clone(),
                compression: workload.compression()?,
                acks: workload.acks()?,
                batch_size: workload.producer_config.batch_size,
                linger_ns: (workload.producer_config.linger_ms * 1e6) as u64,
                max_in_flight: workload.producer_config.max_in_flight,
                request_timeout_ms: workload.producer_config.request_timeout_ms,
                seed: 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(u64::from(i) + 1) ^ topic.len() as u64,
            };
            threads.producers.push(producer::spawn(
                spec,
                cluster.clone(),
                bootstrap.clone(),
                clock,
                control.clone(),
                recorder.clone(),
            ));
            threads.producer_controls.push(control);
            threads.producer_recorders.push((topic.clone(), recorder));
        }
    }
    Ok(threads)
}

fn payload(workload: &Workload) -> Result<Vec<u8>, String> {
    let mut value = vec![0u8; workload.message_size];
    match &workload.payload_file {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes.is_empty() {
                return Err(format!("{} is empty", path.display()));
            }
            for (i, b) in value.iter_mut().enumerate() {
                *b = bytes[i % bytes.len()];
            }
        }
        None => {
            // Incompressible, like OMB's random payload files.
            let mut s = 0x2545_f491_4f6c_dd1du64;
            for b in value.iter_mut() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                *b = s as u8;
            }
        }
    }
    Ok(value)
}

/// Intervals, the measured phase's merged window and its length in seconds, and mean CPU%s.
type Measured = (Vec<Interval>, (Window, f64), (Option<f64>, Option<f64>));

/// Measured phases a searched rate gets to hold before the run settles for the last one.
const CONFIRMATIONS_MAX: usize = 4;

/// The measured phase at the workload's rate or, with `producerRate: 0`, at the rate the
/// search found. A short search step can pass at a rate the broker holds only until its
/// buffers fill, so the measured phase doubles as the confirmation: when it does not hold the
/// rate (the same test as a search step), the rate steps down and the phase runs again.
fn measure_at_holding_rate(
    workload: &Workload,
    options: &RunOptions,
    threads: &Threads,
    clock: Clock,
    broker_pid: Option<u32>,
    rate: &mut RateInfo,
    totals: &mut Totals,
) -> Result<Measured, String> {
    if workload.producer_rate != 0.0 {
        return measure(workload, options, threads, clock, broker_pid, rate.target_msgs_per_s, totals);
    }
    let fraction = workload.producer_rate_fraction_of_max.unwrap_or(1.0);
    let mut max = search_max_rate(workload, options, threads, rate, totals);
    loop {
        rate.max_found_msgs_per_s = Some(max);
        rate.target_msgs_per_s = max * fraction;
        println!("max sustainable rate: {:.0} msgs/s; measuring at {:.0} msgs/s", max, rate.target_msgs_per_s);
        let measured = measure(workload, options, threads, clock, broker_pid, rate.target_msgs_per_s, totals)?;
        let (window, seconds) = &measured.1;
        let step = judge(rate.target_msgs_per_s, window, *seconds);
        if step.sustained || rate.failed_confirmations.len() >= CONFIRMATIONS_MAX {
            return Ok(measured);
        }
        // Down to what was acknowledged, with room, but never below half in one step: an
        // overloaded phase acknowledges less than the broker can take once it is not.
        let next = (0.9 * step.target_msgs_per_s).min(0.95 * step.acked_msgs_per_s).max(0.5 * step.target_msgs_per_s);
        println!(
            "  the measured phase did not hold {:.0} msgs/s (acked {:.0} msgs/s, publish delay p99 {} µs); stepping down",
            step.target_msgs_per_s, step.acked_msgs_per_s, step.publish_delay_p99_us
        );
        rate.failed_confirmations.push(step);
        max = next / fraction;
        idle(threads, totals);
    }
}

/// A rate holds when nearly all of it was acknowledged, sends left on time (publish delay
/// p99 under 50 ms: a queue in the client is not growing) and nothing failed.
fn judge(target: f64, w: &Window, seconds: f64) -> SearchStep {
    let acked = w.acked_msgs as f64 / seconds;
    let delay_p99 = w.publish_delay.value_at_quantile(0.99);
    let sustained = acked >= 0.95 * target && delay_p99 < 50_000 && w.errors == 0;
    SearchStep { target_msgs_per_s: target, acked_msgs_per_s: acked, publish_delay_p99_us: delay_p99, sustained }
}

/// Pauses the producers until what an overloaded phase left buffered or in flight clears.
fn idle(threads: &Threads, totals: &mut Totals) {
    threads.set_total_rate(0.0);
    std::thread::sleep(Duration::from_secs(1));
    collect(threads, totals);
}

fn measure(
    workload: &Workload,
    options: &RunOptions,
    threads: &Threads,
    clock: Clock,
    broker_pid: Option<u32>,
    target: f64,
    totals: &mut Totals,
) -> Result<Measured, String> {
    threads.set_total_rate(target);
    let warmup = workload.warmup();
    let duration = workload.duration();
    let backlog = workload.backlog_bytes();
    let bar = options.progress.then(|| {
        let bar = ProgressBar::new((warmup + duration) as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len}s {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let start = clock.now_ns();
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut broker_cpu = broker_pid.map(|p| CpuMeter::new(p.to_string(), 0.0));
    let mut client_cpu = CpuMeter::new("self", 0.0);
    let mut intervals = Vec::new();
    let mut overall = Window::default();
    let mut cpu_sum = (0.0, 0usize, 0.0, 0usize);
    let mut produced_bytes = 0u64;
    let mut measure_start: Option<f64> = None;
    let mut measured_windows = 0u64;
    let windows_wanted = (duration / options.interval_s).round().max(1.0) as u64;
    let measured_s;
    let mut tick = 1u64;
    loop {
        let next = start + (tick as f64 * options.interval_s * 1e9) as u64;
        let now = clock.now_ns();
        if next > now {
            std::thread::sleep(Duration::from_nanos(next - now));
        }
        tick += 1;
        let t = secs(clock.now_ns() - start);
        let w = collect(threads, totals);
        produced_bytes += w.acked_bytes;
        if backlog > 0 && !threads.consumer_control.go.load(Ordering::Acquire) && t >= warmup && produced_bytes >= backlog {
            threads.consumer_control.go.store(true, Ordering::Release);
        }
        let in_warmup = measure_start.is_none();
        let broker = broker_cpu.as_mut().and_then(|m| m.sample(t));
        let client = client_cpu.sample(t);
        let span = options.interval_s;
        let interval = Interval {
            t_s: t,
            warmup: in_warmup,
            publish_msgs_per_s: w.acked_msgs as f64 / span,
            publish_mb_per_s: w.acked_bytes as f64 / span / 1e6,
            consume_msgs_per_s: w.consumed_msgs as f64 / span,
            consume_mb_per_s: w.consumed_bytes as f64 / span / 1e6,
            publish_latency_p50_us: w.publish_latency.value_at_quantile(0.5),
            publish_latency_p99_us: w.publish_latency.value_at_quantile(0.99),
            publish_latency_max_us: w.publish_latency.max(),
            publish_delay_p99_us: w.publish_delay.value_at_quantile(0.99),
            end_to_end_p50_us: w.end_to_end.value_at_quantile(0.5),
            end_to_end_p99_us: w.end_to_end.value_at_quantile(0.99),
            end_to_end_max_us: w.end_to_end.max(),
            broker_cpu_pct: broker,
            client_cpu_pct: client,
            errors: w.errors,
        };
        if let Some(bar) = &bar {
            bar.set_position(t as u64);
            bar.set_message(format!(
                "{}{:.0} msg/s {:.1} MB/s pub p99 {} µs e2e p99 {} µs{}",
                if in_warmup { "warm-up " } else { "" },
                interval.publish_msgs_per_s,
                interval.publish_mb_per_s,
                interval.publish_latency_p99_us,
                interval.end_to_end_p99_us,
                if w.errors > 0 { format!(" ERRORS {}", w.errors) } else { String::new() }
            ));
        }
        if !in_warmup {
            overall.add(&w);
            measured_windows += 1;
            if let Some(b) = broker {
                cpu_sum.0 += b;
                cpu_sum.1 += 1;
            }
            if let Some(c) = client {
                cpu_sum.2 += c;
                cpu_sum.3 += 1;
            }
        }
        intervals.push(interval);
        // The measured phase starts after the warm-up and, in a backlog test, once the
        // consumers have been let go.
        if in_warmup && t >= warmup - 1e-6 && threads.consumer_control.go.load(Ordering::Acquire) {
            measure_start = Some(t);
        }
        if let Some(s) = measure_start {
            if measured_windows >= windows_wanted {
                measured_s = t - s;
                break;
            }
        }
        if t > warmup + duration + 600.0 {
            return Err("the backlog was never reached (is the producer rate too low?)".into());
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mean = |sum: f64, n: usize| (n > 0).then(|| sum / n as f64);
    Ok((intervals, (overall, measured_s), (mean(cpu_sum.0, cpu_sum.1), mean(cpu_sum.2, cpu_sum.3))))
}

/// Takes every thread's window, adding per-topic and per-subscription counts to `totals`.
fn collect(threads: &Threads, totals: &mut Totals) -> Window {
    let mut all = Window::default();
    for (topic, r) in &threads.producer_recorders {
        let mut w = Window::default();
        r.drain_into(&mut w);
        *totals.acked_per_topic.entry(topic.clone()).or_default() += w.acked_msgs;
        all.add(&w);
    }
    for (sub, r) in &threads.consumer_recorders {
        let mut w = Window::default();
        r.drain_into(&mut w);
        *totals.consumed_per_subscription.entry(sub.clone()).or_default() += w.consumed_msgs;
        all.add(&w);
    }
    totals.sent_msgs += all.sent_msgs;
    totals.acked_msgs += all.acked_msgs;
    totals.errors += all.errors;
    totals.retries += all.retries;
    for e in &all.error_samples {
        if totals.error_samples.len() < 8 {
            totals.error_samples.push(e.clone());
        }
    }
    all
}

/// Stepped search for the highest rate the producers sustain: double while every step keeps
/// up (`judge`), then bisect to within 5%. Each step starts from an idle client and settles
/// for a third of its time before it is measured. The measured phase confirms the result
/// (`measure_at_holding_rate`).
fn search_max_rate(
    workload: &Workload,
    options: &RunOptions,
    threads: &Threads,
    rate: &mut RateInfo,
    totals: &mut Totals,
) -> f64 {
    let mut target = (20e6 / workload.message_size as f64).max(1000.0);
    let mut good = 0.0f64;
    let mut bad: Option<f64> = None;
    for _ in 0..24 {
        // Let what the last step left buffered or in flight clear, so it does not count here.
        threads.set_total_rate(0.0);
        std::thread::sleep(Duration::from_millis(500));
        threads.set_total_rate(target);
        std::thread::sleep(Duration::from_secs_f64(options.search_step_s / 3.0));
        collect(threads, totals);
        let measured = options.search_step_s * 2.0 / 3.0;
        std::thread::sleep(Duration::from_secs_f64(measured));
        let w = collect(threads, totals);
        let step = judge(target, &w, measured);
        let sustained = step.sustained;
        if options.progress {
            println!(
                "  search: target {:.0} msgs/s -> acked {:.0} msgs/s, publish delay p99 {} µs: {}",
                target,
                step.acked_msgs_per_s,
                step.publish_delay_p99_us,
                if sustained { "sustained" } else { "not sustained" }
            );
        }
        rate.search_steps.push(step);
        if sustained {
            good = good.max(target);
        } else {
            bad = Some(bad.map_or(target, |b: f64| b.min(target)));
        }
        target = match bad {
            None => target * 2.0,
            Some(b) if good == 0.0 => b / 2.0,
            Some(b) => {
                if (b - good) / good < 0.05 {
                    break;
                }
                (good + b) / 2.0
            }
        };
    }
    // Let the backlog of the last failed step clear before the warm-up starts.
    idle(threads, totals);
    good.max(1.0)
}

/// The workload's producers, closed loop (as fast as `max.in.flight` allows), against a null
/// sink for `seconds` after half a second of warm-up.
pub fn client_ceiling(workload: &Workload, seconds: f64) -> Result<ClientCeiling, String> {
    let sink = NullSink::start(workload.partitions_per_topic as i32)?;
    let mut w = workload.clone();
    w.subscriptions_per_topic = 0;
    let bootstrap = Bootstrap { servers: vec![sink.address().to_owned()], security: Security::Plaintext };
    let topics = w.topic_names("client-ceiling");
    let mut router = Router::connect(bootstrap.clone(), topics.clone()).map_err(|e| format!("null sink: {e}"))?;
    let mut threads = start_threads(&w, &mut router, &bootstrap, &topics, Clock::new())?;
    let mut totals = Totals::default();
    threads.set_total_rate(f64::INFINITY);
    std::thread::sleep(Duration::from_millis(500));
    collect(&threads, &mut totals);
    let mut cpu = CpuMeter::new("self", 0.0);
    let started = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let window = collect(&threads, &mut totals);
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu_pct = cpu.sample(elapsed);
    for c in &threads.producer_controls {
        c.stop.store(true, Ordering::Release);
    }
    for p in std::mem::take(&mut threads.producers) {
        if let Ok(Err(e)) = p.join() {
            return Err(format!("client ceiling: {e}"));
        }
    }
    if window.errors > 0 {
        return Err(format!("client ceiling: {:?}", window.error_samples));
    }
    Ok(ClientCeiling {
        seconds: elapsed,
        publish_msgs_per_s: window.acked_msgs as f64 / elapsed,
        publish_mb_per_s: window.acked_bytes as f64 / elapsed / 1e6,
        client_cpu_pct,
    })
}

/// After producers stopped: waits until every subscription has read everything acknowledged
/// for its topic, or the timeout. True when every count caught up exactly.
fn drain(threads: &Threads, totals: &mut Totals, timeout_s: f64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout_s);
    loop {
        collect(threads, totals);
        let caught_up = totals.consumed_per_subscription.iter().all(|(sub, &consumed)| {
            let topic = sub.rsplit_once('/').map_or(sub.as_str(), |(t, _)| t);
            consumed >= totals.acked_per_topic.get(topic).copied().unwrap_or(0)
        });
        if caught_up || std::time::Instant::now() > deadline {
            return caught_up;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
