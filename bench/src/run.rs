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
use crate::client::{Cluster, Connection};
use crate::clock::Clock;
use crate::consumer::{self, ConsumerControl, ConsumerSpec};
use crate::cpu::CpuMeter;
use crate::producer::{self, Control, ProducerSpec};
use crate::stats::{LatencySummary, Recorder, Window};
use crate::workload::Workload;

pub struct RunOptions {
    pub bootstrap: String,
    pub broker_pid: Option<u32>,
    pub with_ceilings: Option<PathBuf>,
    pub ceiling_seconds: f64,
    pub interval_s: f64,
    pub search_step_s: f64,
    pub drain_timeout_s: f64,
    pub progress: bool,
    pub topic_prefix: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub format: u32,
    pub workload: Workload,
    pub bootstrap: String,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub ceilings: Option<Ceilings>,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    pub sent_msgs: u64,
    pub acked_msgs: u64,
    pub errors: u64,
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
    let broker_pid = options.broker_pid.or_else(|| {
        let port = options.bootstrap.rsplit(':').next()?.parse().ok()?;
        crate::cpu::pid_listening_on(port)
    });

    let mut admin = Connection::connect(&options.bootstrap).map_err(|e| format!("{}: {e}", options.bootstrap))?;
    let prefix = options.topic_prefix.clone().unwrap_or_else(|| format!("bench-{started_unix_s}"));
    let topics = workload.topic_names(&prefix);
    admin.create_topics(&topics, workload.partitions_per_topic as i32).map_err(|e| e.to_string())?;
    let cluster = wait_for_leaders(&mut admin, &topics, workload.partitions_per_topic as i32)?;

    let clock = Clock::new();
    let mut threads = start_threads(workload, &cluster, &topics, clock)?;
    if workload.backlog_bytes() == 0 {
        threads.consumer_control.go.store(true, Ordering::Release);
    }

    let mut rate = RateInfo { target_msgs_per_s: workload.producer_rate, max_found_msgs_per_s: None, search_steps: Vec::new() };
    let outcome = measure(workload, options, &threads, clock, broker_pid, &mut rate);
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
    let mut outcome = outcome;
    let drained = match &mut outcome {
        Ok((_, _, _, totals)) => {
            let mut totals = std::mem::take(totals);
            let d = drain(&threads, &mut totals, options.drain_timeout_s);
            Some((d, totals))
        }
        Err(_) => None,
    };
    threads.consumer_control.stop.store(true, Ordering::Release);
    for c in std::mem::take(&mut threads.consumers) {
        if let Ok(Err(e)) = c.join() {
            errors.push(e);
        }
    }
    let (intervals, (overall_window, measured_s), cpu, _) = outcome?;
    let (drained, mut totals) = drained.expect("set when the outcome is Ok");
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
    };
    if let Some(c) = &ceilings {
        overall.publish_vs_loopback = Some(overall.publish_mb_per_s / c.loopback.mb_per_s);
        let sync_p99 = c.direct_append_fdatasync.latency.p99_us.max(1) as f64;
        if overall.end_to_end.count > 0 {
            overall.end_to_end_p99_vs_fdatasync_p99 = Some(overall.end_to_end.p99_us as f64 / sync_p99);
        }
    }
    Ok(RunResult {
        format: 1,
        workload: workload.clone(),
        bootstrap: options.bootstrap.clone(),
        started_unix_s,
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_average_before: load_before,
            load_average_after: load_average(),
            broker_pid,
        },
        ceilings,
        rate,
        intervals,
        overall,
        counts: Counts {
            sent_msgs: totals.sent_msgs,
            acked_msgs: totals.acked_msgs,
            errors: totals.errors,
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
    error_samples: Vec<String>,
    acked_per_topic: BTreeMap<String, u64>,
    consumed_per_subscription: BTreeMap<String, u64>,
}

/// Each partition's end offset, asked of its leader: on a cluster the bootstrap node leads
/// only some of them.
fn end_offsets(cluster: &Cluster, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>, String> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for &p in partitions {
        let (_, addr) = cluster.leader(topic, p).ok_or_else(|| format!("{topic}-{p} has no leader"))?;
        by_leader.entry(addr).or_default().push(p);
    }
    let mut ends = BTreeMap::new();
    for (addr, parts) in by_leader {
        let mut connection = Connection::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
        // A leader named in the metadata may take a moment to serve a new partition (it
        // answers NOT_LEADER_OR_FOLLOWER meanwhile); clients retry, and so does this.
        let mut attempts = 0;
        let found = loop {
            match connection.list_offsets(topic, &parts, -1) {
                Ok(found) => break found,
                Err(_) if attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        ends.extend(found);
    }
    Ok(ends)
}

fn wait_for_leaders(admin: &mut Connection, topics: &[String], partitions: i32) -> Result<Cluster, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let cluster = admin.metadata(topics).map_err(|e| e.to_string())?;
        let ready = topics.iter().all(|t| (0..partitions).all(|p| cluster.leader(t, p).is_some()));
        if ready {
            return Ok(cluster);
        }
        if std::time::Instant::now() > deadline {
            return Err("topics have no leader for every partition after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_threads(
    workload: &Workload,
    cluster: &Cluster,
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
        let ends = end_offsets(cluster, topic, &partitions)?;
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
            threads.producers.push(producer::spawn(spec, cluster.clone(), clock, control.clone(), recorder.clone()));
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

/// Intervals, the measured phase's merged window and its length in seconds, mean CPU%s, and
/// whole-run totals.
type Measured = (Vec<Interval>, (Window, f64), (Option<f64>, Option<f64>), Totals);

fn measure(
    workload: &Workload,
    options: &RunOptions,
    threads: &Threads,
    clock: Clock,
    broker_pid: Option<u32>,
    rate: &mut RateInfo,
) -> Result<Measured, String> {
    let mut totals = Totals::default();
    if workload.producer_rate == 0.0 {
        let max = search_max_rate(workload, options, threads, rate, &mut totals);
        rate.max_found_msgs_per_s = Some(max);
        rate.target_msgs_per_s = max * workload.producer_rate_fraction_of_max.unwrap_or(1.0);
        println!(
            "max sustainable rate: {:.0} msgs/s; measuring at {:.0} msgs/s",
            max, rate.target_msgs_per_s
        );
    }
    threads.set_total_rate(rate.target_msgs_per_s);
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
        let w = collect(threads, &mut totals);
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
    Ok((intervals, (overall, measured_s), (mean(cpu_sum.0, cpu_sum.1), mean(cpu_sum.2, cpu_sum.3)), totals))
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
    for e in &all.error_samples {
        if totals.error_samples.len() < 8 {
            totals.error_samples.push(e.clone());
        }
    }
    all
}

/// Stepped search for the highest rate the producers sustain: double while every step keeps
/// up (acknowledged rate within 5% of the target, publish delay p99 under 50 ms), then
/// bisect to within 5%. Each step starts from an idle client and settles for a third of its
/// time before it is measured.
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
        let acked = w.acked_msgs as f64 / measured;
        let delay_p99 = w.publish_delay.value_at_quantile(0.99);
        let sustained = acked >= 0.95 * target && delay_p99 < 50_000 && w.errors == 0;
        if options.progress {
            println!(
                "  search: target {:.0} msgs/s -> acked {:.0} msgs/s, publish delay p99 {} µs: {}",
                target,
                acked,
                delay_p99,
                if sustained { "sustained" } else { "not sustained" }
            );
        }
        rate.search_steps.push(SearchStep { target_msgs_per_s: target, acked_msgs_per_s: acked, publish_delay_p99_us: delay_p99, sustained });
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
    threads.set_total_rate(0.0);
    std::thread::sleep(Duration::from_secs(1));
    collect(threads, totals);
    good.max(1.0)
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
