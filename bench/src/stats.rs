//! Latency histograms and counters: each producer, connection reader and consumer records into
//! its own [`Recorder`]; the coordinator takes a [`Window`] from each once per interval and
//! merges them, so no histogram is shared between hot threads.
//!
//! Latencies are in microseconds with three significant digits. Zero is a legal sample (a
//! message acknowledged within the microsecond it was due): the histogram keeps it, since
//! dropping fast samples would bias every percentile upwards.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Ten minutes: anything slower is recorded as this (and the run is broken anyway).
pub const MAX_LATENCY_US: u64 = 600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Counters and histograms of one thread since the last take.
#[derive(Clone)]
pub struct Window {
    /// From the intended send time (the rate schedule) to the acknowledgement.
    pub publish_latency: Histogram<u64>,
    /// From the intended send time to the moment the request went on the socket.
    pub publish_delay: Histogram<u64>,
    /// From the intended send time written in the value to the consumer reading it.
    pub end_to_end: Histogram<u64>,
    pub sent_msgs: u64,
    pub sent_bytes: u64,
    pub acked_msgs: u64,
    pub acked_bytes: u64,
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
    /// Batches or fetches sent again after an answer said the partition's leader moved or
    /// was not ready (NOT_LEADER_OR_FOLLOWER and kin): what a real client retries silently.
    pub retries: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
}

const ERROR_SAMPLES_MAX: usize = 8;

impl Default for Window {
    fn default() -> Self {
        Window {
            publish_latency: histogram(),
            publish_delay: histogram(),
            end_to_end: histogram(),
            sent_msgs: 0,
            sent_bytes: 0,
            acked_msgs: 0,
            acked_bytes: 0,
            consumed_msgs: 0,
            consumed_bytes: 0,
            errors: 0,
            retries: 0,
            error_samples: Vec::new(),
        }
    }
}

impl Window {
    pub fn add(&mut self, other: &Window) {
        self.publish_latency.add(&other.publish_latency).expect("same bounds");
        self.publish_delay.add(&other.publish_delay).expect("same bounds");
        self.end_to_end.add(&other.end_to_end).expect("same bounds");
        self.sent_msgs += other.sent_msgs;
        self.sent_bytes += other.sent_bytes;
        self.acked_msgs += other.acked_msgs;
        self.acked_bytes += other.acked_bytes;
        self.consumed_msgs += other.consumed_msgs;
        self.consumed_bytes += other.consumed_bytes;
        self.errors += other.errors;
        self.retries += other.retries;
        for e in &other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES_MAX {
                self.error_samples.push(e.clone());
            }
        }
    }

    pub fn error(&mut self, count: u64, message: impl FnOnce() -> String) {
        self.errors += count;
        if self.error_samples.len() < ERROR_SAMPLES_MAX {
            self.error_samples.push(message());
        }
    }

    fn reset(&mut self) {
        // Histograms keep their allocation; everything else starts over.
        self.publish_latency.reset();
        self.publish_delay.reset();
        self.end_to_end.reset();
        self.sent_msgs = 0;
        self.sent_bytes = 0;
        self.acked_msgs = 0;
        self.acked_bytes = 0;
        self.consumed_msgs = 0;
        self.consumed_bytes = 0;
        self.errors = 0;
        self.error_samples.clear();
    }
}

/// Records `ns` nanoseconds as microseconds, clamped to the histogram's range.
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns / 1000);
}

/// One thread's window behind a mutex only the coordinator contends for, once per interval.
#[derive(Default)]
pub struct Recorder {
    window: Mutex<Window>,
}

impl Recorder {
    pub fn with<R>(&self, f: impl FnOnce(&mut Window) -> R) -> R {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut w)
    }

    /// Adds this recorder's window into `into` and starts a new one.
    pub fn drain_into(&self, into: &mut Window) {
        self.with(|w| {
            into.add(w);
            w.reset();
        });
    }
}

/// Percentiles of one latency histogram, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p75_us: u64,
    pub p90_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub max_us: u64,
    /// (percentile, latency µs) points for the distribution plot.
    #[serde(default)]
    pub curve: Vec<(f64, u64)>,
}

/// Points of the percentile curve: 0, 50, 75, 87.5, ... up to 99.999, then the max.
const CURVE_NINES: usize = 17;

impl LatencySummary {
    pub fn of(h: &Histogram<u64>, with_curve: bool) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let q = |p: f64| h.value_at_quantile(p / 100.0);
        let curve = if with_curve {
            let mut points: Vec<(f64, u64)> = (0..CURVE_NINES)
                .map(|i| {
                    let p = 100.0 * (1.0 - 0.5f64.powi(i as i32));
                    (p, q(p))
                })
                .collect();
            points.push((100.0, h.max()));
            points
        } else {
            Vec::new()
        };
        LatencySummary {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: q(50.0),
            p75_us: q(75.0),
            p90_us: q(90.0),
            p95_us: q(95.0),
            p99_us: q(99.0),
            p99_9_us: q(99.9),
            p99_99_us: q(99.99),
            max_us: h.max(),
            curve,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_samples_count_and_pull_percentiles_down() {
        let mut h = histogram();
        for _ in 0..90 {
            record_ns(&mut h, 200); // under a microsecond: recorded as 0
        }
        for _ in 0..10 {
            record_ns(&mut h, 5_000_000);
        }
        let s = LatencySummary::of(&h, true);
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_us, 0);
        assert!(s.p99_us >= 4_990 && s.p99_us <= 5_010, "{}", s.p99_us);
        assert_eq!(s.curve.last().unwrap().0, 100.0);
    }

    #[test]
    fn merged_windows_equal_one_recorder_seeing_everything() {
        let a = Recorder::default();
        let b = Recorder::default();
        let mut all = histogram();
        for i in 0..1000u64 {
            let r = if i % 3 == 0 { &a } else { &b };
            r.with(|w| {
                record_ns(&mut w.end_to_end, i * 1000);
                w.consumed_msgs += 1;
            });
            record_ns(&mut all, i * 1000);
        }
        let mut merged = Window::default();
        a.drain_into(&mut merged);
        b.drain_into(&mut merged);
        assert_eq!(merged.consumed_msgs, 1000);
        assert_eq!(LatencySummary::of(&merged.end_to_end, false), LatencySummary::of(&all, false));
        // Draining resets: a second drain adds nothing.
        let mut again = Window::default();
        a.drain_into(&mut again);
        assert_eq!(again.consumed_msgs, 0);
        assert!(again.end_to_end.is_empty());
    }

    #[test]
    fn latencies_beyond_the_range_are_clamped_not_dropped() {
        let mut h = histogram();
        record_ns(&mut h, u64::MAX);
        assert_eq!(h.len(), 1);
        assert!(h.max() >= MAX_LATENCY_US);
    }
}
