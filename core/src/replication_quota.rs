//! Replication throttles (KIP-73), as Kafka's `ReplicationQuotaManager`: a byte rate per
//! broker for each side of replication, `leader.replication.throttled.rate` (bytes the leader
//! serves to followers) and `follower.replication.throttled.rate` (bytes the follower fetches),
//! applied only to the partitions a topic names in `leader.replication.throttled.replicas` /
//! `follower.replication.throttled.replicas` for this broker, and only to replicas that are
//! not in sync: throttled catch-up traffic never holds back an in-sync replica.
//!
//! The rate is Kafka's windowed `Rate` over a `SampledStat`: `replication.quota.window.num`
//! samples of `replication.quota.window.size.seconds` each, the measured window never shorter
//! than all but one of the samples. A fresh quota therefore lets about
//! `rate × (window.num − 1) × window.size` through at once before holding back; over a longer
//! run the traffic averages to the rate. Whole fetches are let through or held back, so a
//! single fetch can overshoot the bound, as in Kafka.
//!
//! Sans-IO: time comes in as `now_ms`; the broker's shard consults [`ReplicationQuota`] when it
//! answers a follower's fetch and when its fetchers build a request.

use std::collections::BTreeSet;

use crate::ids::NodeId;
pub use crate::quota::QuotaWindow;
use crate::quota::Rate;
use crate::topic::BrokerLayers;

/// Kafka's `leader.replication.throttled.rate` (dynamic broker config, bytes/s).
pub const LEADER_THROTTLED_RATE: &str = "leader.replication.throttled.rate";
/// Kafka's `follower.replication.throttled.rate` (dynamic broker config, bytes/s).
pub const FOLLOWER_THROTTLED_RATE: &str = "follower.replication.throttled.rate";
/// Kafka's `leader.replication.throttled.replicas` (topic config).
pub const LEADER_THROTTLED_REPLICAS: &str = "leader.replication.throttled.replicas";
/// Kafka's `follower.replication.throttled.replicas` (topic config).
pub const FOLLOWER_THROTTLED_REPLICAS: &str = "follower.replication.throttled.replicas";
/// Most samples a window may have, so a setting cannot make the quota allocate without bound.
pub const WINDOW_NUM_MAX: u32 = 1_000;

/// One side's quota on this broker (Kafka's `ReplicationQuotaManager`, leader or follower).
#[derive(Debug, Clone)]
pub struct ReplicationQuota {
    /// Bytes per second; `None` is unlimited (Kafka's `Long.MAX_VALUE` default).
    bound: Option<u64>,
    window: QuotaWindow,
    rate: Rate,
}

impl Default for ReplicationQuota {
    fn default() -> Self {
        ReplicationQuota::new(QuotaWindow::default())
    }
}

impl ReplicationQuota {
    pub fn new(window: QuotaWindow) -> Self {
        let window = QuotaWindow { samples: window.samples.clamp(1, WINDOW_NUM_MAX as usize), window_ms: window.window_ms.max(1) };
        ReplicationQuota { bound: None, window, rate: Rate::default() }
    }

    /// A new bound keeps what was measured, as Kafka's `updateQuota` does.
    pub fn set_bound(&mut self, bytes_per_s: Option<u64>) {
        self.bound = bytes_per_s;
    }

    pub fn bound(&self) -> Option<u64> {
        self.bound
    }

    /// Whether throttled traffic must wait (Kafka's `isQuotaExceeded`: the measured rate is
    /// above the bound).
    pub fn is_exceeded(&mut self, now_ms: i64) -> bool {
        match self.bound {
            None => false,
            Some(bound) => self.rate.measure(self.window, now_ms) > bound as f64,
        }
    }

    /// Throttled bytes sent (leader) or received (follower).
    pub fn record(&mut self, now_ms: i64, bytes: u64) {
        self.rate.record(self.window, now_ms, bytes as f64);
    }

    /// The measured rate in bytes/s (for logs and tests).
    pub fn rate(&mut self, now_ms: i64) -> f64 {
        self.rate.measure(self.window, now_ms)
    }
}

/// Which partitions of a topic a `*.replication.throttled.replicas` value throttles on one
/// broker (Kafka's `parseThrottledPartitions`): `*` all of them, else each `partition:broker`
/// pair naming this broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Throttled {
    #[default]
    None,
    All,
    Partitions(BTreeSet<i32>),
}

impl Throttled {
    /// Parses a value the topic config check accepted; pairs that do not parse are skipped.
    pub fn parse(value: &str, broker: NodeId) -> Throttled {
        let value = value.trim();
        if value == "*" {
            return Throttled::All;
        }
        let partitions: BTreeSet<i32> = value
            .split(',')
            .filter_map(|pair| {
                let (partition, replica) = pair.trim().split_once(':')?;
                let (partition, replica) = (partition.trim().parse::<i32>().ok()?, replica.trim().parse::<i32>().ok()?);
                (replica == broker.0).then_some(partition)
            })
            .collect();
        if partitions.is_empty() {
            Throttled::None
        } else {
            Throttled::Partitions(partitions)
        }
    }

    pub fn contains(&self, partition: i32) -> bool {
        match self {
            Throttled::None => false,
            Throttled::All => true,
            Throttled::Partitions(partitions) => partitions.contains(&partition),
        }
    }
}

/// The broker's throttle rates from its dynamic configs: its own value, else the cluster-wide
/// default; absent, unparsable or `Long.MAX_VALUE` is no throttle. (Kafka applies only the
/// per-broker value, which `kafka-reassign-partitions.sh --throttle` sets; the default entity
/// is honoured here as well, as one setting for every broker.)
pub fn throttled_rates(layers: &BrokerLayers) -> (Option<u64>, Option<u64>) {
    let rate = |name: &str| {
        let value = layers.dynamic_broker.get(name).or_else(|| layers.dynamic_default.get(name))?;
        value.trim().parse::<u64>().ok().filter(|r| *r < i64::MAX as u64)
    };
    (rate(LEADER_THROTTLED_RATE), rate(FOLLOWER_THROTTLED_RATE))
}

/// Checks a throttle rate as Kafka's config does (a long, at least 0).
pub fn check_rate(name: &str, value: &str) -> Result<(), String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(()),
        Ok(_) => Err(format!("Invalid value {value} for configuration {name}: Value must be at least 0")),
        Err(_) => Err(format!("Invalid value {value} for configuration {name}: Not a number of type LONG")),
    }
}

/// Whether `name` is one of the two throttle rates.
pub fn is_rate(name: &str) -> bool {
    name == LEADER_THROTTLED_RATE || name == FOLLOWER_THROTTLED_RATE
}

#[cfg(test)]
mod tests {
    use super::*;

    // Guards Kafka's Rate semantics: a fresh quota measures over at least num - 1 windows (so
    // a first fetch does not read as a huge rate), and old samples age out.
    #[test]
    fn windowed_rate_measures_over_at_least_all_but_one_window() {
        let mut quota = ReplicationQuota::new(QuotaWindow { samples: 11, window_ms: 1_000 });
        quota.set_bound(Some(1_000_000));
        assert!(!quota.is_exceeded(0));
        quota.record(0, 5_000_000);
        // 5 MB over the minimum 10 s: 0.5 MB/s.
        assert_eq!(quota.rate(0), 500_000.0);
        assert!(!quota.is_exceeded(0));
        quota.record(100, 6_000_000);
        assert!(quota.is_exceeded(100), "11 MB over 10 s is above 1 MB/s");
        // 11 s later the samples have aged out.
        assert!(!quota.is_exceeded(11_100));
        assert_eq!(quota.rate(11_100), 0.0);
    }

    // Guards the steady state the throttle promises: fetching whenever the quota allows, in
    // fetches of 256 KiB, a 1 MB/s quota moves about 1 MB/s over a long run (the initial burst
    // of num - 1 windows included; a sample aging out lets a little more through, as Kafka's
    // sampled rate does), never much more.
    #[test]
    fn a_greedy_fetcher_averages_to_the_bound() {
        for window in [QuotaWindow { samples: 11, window_ms: 1_000 }, QuotaWindow { samples: 2, window_ms: 1_000 }] {
            let mut quota = ReplicationQuota::new(window);
            quota.set_bound(Some(1_000_000));
            let mut moved = 0u64;
            let run_ms = 60_000;
            for now_ms in (0..run_ms).step_by(10) {
                if !quota.is_exceeded(now_ms) {
                    quota.record(now_ms, 256 * 1024);
                    moved += 256 * 1024;
                }
            }
            let burst = (window.samples as u64 - 1) * 1_000_000 + 256 * 1024;
            assert!(moved <= 66 * 1_000_000 + burst, "{window:?}: {moved} bytes in 60 s");
            assert!(moved >= 55 * 1_000_000, "{window:?}: only {moved} bytes in 60 s");
        }
    }

    #[test]
    fn unbounded_quota_is_never_exceeded() {
        let mut quota = ReplicationQuota::default();
        quota.record(0, u64::MAX);
        assert!(!quota.is_exceeded(0));
    }

    #[test]
    fn throttled_replicas_name_partitions_of_this_broker() {
        assert_eq!(Throttled::parse("*", NodeId(3)), Throttled::All);
        assert_eq!(Throttled::parse("", NodeId(3)), Throttled::None);
        let t = Throttled::parse("0:1, 0:3,2:3 ,4:2", NodeId(3));
        assert_eq!(t, Throttled::Partitions([0, 2].into()));
        assert!(t.contains(2) && !t.contains(4));
    }

    #[test]
    fn rates_come_from_this_broker_then_the_cluster_default() {
        let mut layers = BrokerLayers::default();
        assert_eq!(throttled_rates(&layers), (None, None));
        layers.dynamic_default.insert(LEADER_THROTTLED_RATE.into(), "100".into());
        layers.dynamic_default.insert(FOLLOWER_THROTTLED_RATE.into(), "9223372036854775807".into());
        assert_eq!(throttled_rates(&layers), (Some(100), None));
        layers.dynamic_broker.insert(LEADER_THROTTLED_RATE.into(), "50".into());
        assert_eq!(throttled_rates(&layers), (Some(50), None));
        assert!(check_rate(LEADER_THROTTLED_RATE, "-1").is_err());
        assert!(check_rate(LEADER_THROTTLED_RATE, "x").is_err());
        assert!(check_rate(LEADER_THROTTLED_RATE, "0").is_ok());
    }
}
