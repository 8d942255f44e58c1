//! Client quotas as Kafka keeps them (KIP-13 byte rates, KIP-55 users, KIP-124 request time,
//! KIP-219 throttling, KIP-546 the AlterClientQuotas/DescribeClientQuotas entities).
//!
//! A quota belongs to a [`QuotaEntity`] (a user, a client id, both, or an ip; each name may be
//! the type's default) and is set per key. The metadata image holds them as a
//! [`QuotaTable`]; each broker core measures its clients against them with [`ClientQuotas`],
//! Kafka's windowed rate sensors, and answers how long a client must hold off.
//!
//! Sans-IO: time comes in as `now_ms` (monotonic milliseconds); nothing here reads a clock.

use std::collections::{BTreeMap, VecDeque};

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

/// The quotas of every entity, by entity then key; BTreeMaps so describing them lists one
/// order on every node.
pub type QuotaTable = BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>;

/// A quota's value (Kafka's double), compared by its bits so records and images stay `Eq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QuotaValue(u64);

impl QuotaValue {
    pub fn new(value: f64) -> QuotaValue {
        QuotaValue(value.to_bits())
    }
    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
    pub fn to_bits(self) -> u64 {
        self.0
    }
    pub fn from_bits(bits: u64) -> QuotaValue {
        QuotaValue(bits)
    }
}

/// Who a quota applies to: entity types with their name, `None` for the type's default
/// (`<default>` in Kafka's tools). Sorted by type; each type at most once; one of Kafka's
/// combinations: user, client-id, user with client-id, or ip.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QuotaEntity(Vec<(String, Option<String>)>);

impl QuotaEntity {
    /// Checks the parts as Kafka's ClientQuotaControlManager does.
    pub fn new(mut parts: Vec<(String, Option<String>)>) -> Result<QuotaEntity, String> {
        parts.sort();
        if parts.is_empty() {
            return Err("an empty quota entity".into());
        }
        for pair in parts.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(format!("entity type {:?} given twice", pair[0].0));
            }
        }
        for (entity_type, name) in &parts {
            if ![USER, CLIENT_ID, IP].contains(&entity_type.as_str()) {
                return Err(format!("unknown quota entity type {entity_type:?} (user, client-id or ip)"));
            }
            // An address literal is checked by parsing alone (libcore's, no resolving).
            if entity_type == IP {
                if let Some(ip) = name {
                    if ip.parse::<::core::net::IpAddr>().is_err() {
                        return Err(format!("{ip:?} is not an IP address"));
                    }
                }
            }
            if entity_type == USER && name.as_deref() == Some("") {
                return Err("an empty user name".into());
            }
        }
        if parts.len() > 1 && parts.iter().any(|(t, _)| t == IP) {
            return Err("an ip quota entity cannot be combined with user or client-id".into());
        }
        Ok(QuotaEntity(parts))
    }

    pub fn parts(&self) -> &[(String, Option<String>)] {
        &self.0
    }

    /// The entity's name for `entity_type`: `None` if it has no such part, `Some(None)` for
    /// the default.
    pub fn name(&self, entity_type: &str) -> Option<Option<&str>> {
        self.0.iter().find(|(t, _)| t == entity_type).map(|(_, n)| n.as_deref())
    }

    /// Kafka's quota keys that apply to this entity.
    fn keys(&self) -> &'static [&'static str] {
        if self.name(IP).is_some() {
            &[CONNECTION_CREATION_RATE]
        } else {
            &[PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE, CONTROLLER_MUTATION_RATE]
        }
    }

    fn of(user: Option<Option<&str>>, client_id: Option<Option<&str>>) -> QuotaEntity {
        let mut parts = Vec::new();
        if let Some(client_id) = client_id {
            parts.push((CLIENT_ID.to_owned(), client_id.map(str::to_owned)));
        }
        if let Some(user) = user {
            parts.push((USER.to_owned(), user.map(str::to_owned)));
        }
        QuotaEntity(parts)
    }
}

/// Checks a quota value for `key` on `entity`, as Kafka's QuotaConfigs types them: the byte
/// and connection rates whole numbers, all of them positive.
pub fn validate_value(entity: &QuotaEntity, key: &str, value: f64) -> Result<(), String> {
    if !entity.keys().contains(&key) {
        return Err(format!("{key:?} is not a quota of a {} entity (quotas: {})", kind_of(entity), entity.keys().join(", ")));
    }
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("quota {key} must be a positive number, not {value}"));
    }
    let whole = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, CONNECTION_CREATION_RATE].contains(&key);
    if whole && (value.fract() != 0.0 || value > i64::MAX as f64) {
        return Err(format!("quota {key} must be a whole number, not {value}"));
    }
    Ok(())
}

fn kind_of(entity: &QuotaEntity) -> String {
    entity.0.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join("+")
}

/// What a client is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum QuotaType {
    /// Produce request bytes per second.
    Produce,
    /// Fetch response bytes per second.
    Fetch,
    /// Percent of one core's time spent on the client's requests.
    Request,
}

impl QuotaType {
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
        }
    }
}

/// The sensor a client's usage is measured in, as Kafka's DefaultQuotaCallback tags it: by
/// user and/or client id depending on which level the quota was found at. A default quota
/// still measures each user or client id on its own.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SensorKey {
    quota_type: QuotaType,
    user: String,
    client_id: String,
}

/// Kafka's eight levels, most specific first: which entity's quota applies to `user` with
/// `client_id`, and whether the measuring groups by user and by client id.
fn resolve(table: &QuotaTable, quota_type: QuotaType, user: &str, client_id: &str) -> Option<(f64, bool, bool)> {
    let levels: [(Option<Option<&str>>, Option<Option<&str>>); 8] = [
        (Some(Some(user)), Some(Some(client_id))),
        (Some(Some(user)), Some(None)),
        (Some(Some(user)), None),
        (Some(None), Some(Some(client_id))),
        (Some(None), Some(None)),
        (Some(None), None),
        (None, Some(Some(client_id))),
        (None, Some(None)),
    ];
    let key = quota_type.key();
    levels.into_iter().find_map(|(u, c)| {
        let value = table.get(&QuotaEntity::of(u, c))?.get(key)?;
        Some((value.get(), u.is_some(), c.is_some()))
    })
}

/// Kafka's `quota.window.num` and `quota.window.size.seconds` (and their `replication.`
/// namesakes): a rate is measured over the last `samples` windows of `window_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaWindow {
    pub samples: usize,
    pub window_ms: i64,
}

impl Default for QuotaWindow {
    fn default() -> Self {
        QuotaWindow { samples: 11, window_ms: 1000 }
    }
}

/// Kafka's `Rate` over a `SampledStat`: the sum of the samples still inside the windows,
/// divided by the time they span, padded to `samples - 1` whole windows so that a new client
/// is not measured over a sliver of time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rate {
    /// Oldest first; each sample covers `window_ms` from its start.
    samples: VecDeque<(i64, f64)>,
}

impl Rate {
    pub(crate) fn record(&mut self, window: QuotaWindow, now_ms: i64, value: f64) {
        match self.samples.back_mut() {
            Some((start, total)) if now_ms - *start < window.window_ms => *total += value,
            _ => {
                if self.samples.len() == window.samples.max(1) {
                    self.samples.pop_front();
                }
                self.samples.push_back((now_ms, value));
            }
        }
    }

    fn purge(&mut self, window: QuotaWindow, now_ms: i64) {
        let expire = window.window_ms * window.samples as i64;
        while self.samples.front().is_some_and(|(start, _)| now_ms - start >= expire) {
            self.samples.pop_front();
        }
    }

    /// The span the rate divides by, in milliseconds (Kafka's `Rate.windowSize`).
    fn window_size_ms(&self, window: QuotaWindow, now_ms: i64) -> i64 {
        let oldest = self.samples.front().map_or(now_ms, |(start, _)| *start);
        let mut elapsed = now_ms - oldest;
        let full = elapsed / window.window_ms;
        let min_full = window.samples.saturating_sub(1) as i64;
        if full < min_full {
            elapsed += (min_full - full) * window.window_ms;
        }
        elapsed.max(1)
    }

    /// Per second.
    pub(crate) fn measure(&mut self, window: QuotaWindow, now_ms: i64) -> f64 {
        self.purge(window, now_ms);
        let total: f64 = self.samples.iter().map(|(_, v)| v).sum();
        total * 1000.0 / self.window_size_ms(window, now_ms) as f64
    }
}

/// How long a client over its quota must wait for its rate to fall back to the quota if it
/// sent nothing more (Kafka's `QuotaUtils.throttleTime`).
fn throttle_ms(rate: f64, bound: f64, window_size_ms: i64) -> i64 {
    ((rate - bound) / bound * window_size_ms as f64).round() as i64
}

/// One core's sensors: each client's usage against the quota that applies to it.
#[derive(Debug)]
pub struct ClientQuotas {
    window: QuotaWindow,
    sensors: BTreeMap<SensorKey, (Rate, i64)>,
    last_sweep_ms: i64,
}

/// Kafka drops a client's sensors after an hour without use.
const SENSOR_IDLE_MS: i64 = 3_600_000;

impl ClientQuotas {
    pub fn new(window: QuotaWindow) -> ClientQuotas {
        ClientQuotas { window, sensors: BTreeMap::new(), last_sweep_ms: 0 }
    }

    /// Records `value` (bytes, or percent-seconds of a core for [`QuotaType::Request`]) for the
    /// client and returns how long it must be throttled, in milliseconds (0: within quota, or
    /// no quota applies). Request-time throttles are capped at one window, as Kafka caps them.
    pub fn record(&mut self, table: &QuotaTable, now_ms: i64, quota_type: QuotaType, user: &str, client_id: &str, value: f64) -> i64 {
        self.sweep(now_ms);
        let Some((bound, by_user, by_client)) = resolve(table, quota_type, user, client_id) else {
            return 0;
        };
        let key = SensorKey {
            quota_type,
            user: if by_user { user.to_owned() } else { String::new() },
            client_id: if by_client { client_id.to_owned() } else { String::new() },
        };
        let window = self.window;
        let (rate, used) = self.sensors.entry(key).or_default();
        *used = now_ms;
        rate.record(window, now_ms, value);
        let measured = rate.measure(window, now_ms);
        if measured <= bound {
            return 0;
        }
        let throttle = throttle_ms(measured, bound, rate.window_size_ms(window, now_ms));
        match quota_type {
            QuotaType::Request => throttle.min(window.window_ms),
            QuotaType::Produce | QuotaType::Fetch => throttle,
        }
    }

    /// Takes back a recorded value (a throttled fetch whose data was not sent).
    pub fn unrecord(&mut self, table: &QuotaTable, now_ms: i64, quota_type: QuotaType, user: &str, client_id: &str, value: f64) {
        if resolve(table, quota_type, user, client_id).is_some() {
            let _ = self.record(table, now_ms, quota_type, user, client_id, -value);
        }
    }

    /// The most one response may carry under the client's quota (Kafka's
    /// `getMaxValueInQuotaWindow`), `None` without a quota.
    pub fn max_value_in_window(&self, table: &QuotaTable, quota_type: QuotaType, user: &str, client_id: &str) -> Option<f64> {
        let (bound, _, _) = resolve(table, quota_type, user, client_id)?;
        Some(bound * self.window.samples.saturating_sub(1) as f64 * self.window.window_ms as f64 / 1000.0)
    }

    fn sweep(&mut self, now_ms: i64) {
        if now_ms - self.last_sweep_ms < 60_000 {
            return;
        }
        self.last_sweep_ms = now_ms;
        self.sensors.retain(|_, (_, used)| now_ms - *used < SENSOR_IDLE_MS);
    }

    /// Sensors held, for tests and metrics.
    pub fn sensor_count(&self) -> usize {
        self.sensors.len()
    }
}

/// A request's time on a core as the percent-seconds a request quota counts (Kafka's
/// `nanosToPercentage`).
pub fn nanos_to_percentage(nanos: u64) -> f64 {
    nanos as f64 * 100.0 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(parts: &[(&str, Option<&str>)]) -> QuotaEntity {
        QuotaEntity::new(parts.iter().map(|(t, n)| (t.to_string(), n.map(str::to_owned))).collect()).unwrap()
    }

    fn table(entries: &[(&[(&str, Option<&str>)], &str, f64)]) -> QuotaTable {
        let mut t = QuotaTable::new();
        for (parts, key, value) in entries {
            t.entry(entity(parts)).or_default().insert(key.to_string(), QuotaValue::new(*value));
        }
        t
    }

    #[test]
    fn entities_are_checked_as_kafka_checks_them() {
        let bad = |parts: &[(&str, Option<&str>)]| QuotaEntity::new(parts.iter().map(|(t, n)| (t.to_string(), n.map(str::to_owned))).collect());
        assert!(bad(&[]).is_err());
        assert!(bad(&[("user", Some("a")), ("user", Some("b"))]).is_err());
        assert!(bad(&[("topic", Some("a"))]).is_err());
        assert!(bad(&[("ip", Some("1.2.3.4")), ("user", Some("a"))]).is_err());
        assert!(bad(&[("ip", Some("not-an-ip"))]).is_err());
        let both = entity(&[("user", Some("a")), ("client-id", None)]);
        assert_eq!(both.name(USER), Some(Some("a")));
        assert_eq!(both.name(CLIENT_ID), Some(None));
        assert!(validate_value(&both, PRODUCER_BYTE_RATE, 1024.0).is_ok());
        assert!(validate_value(&both, PRODUCER_BYTE_RATE, 10.5).is_err());
        assert!(validate_value(&both, REQUEST_PERCENTAGE, 10.5).is_ok());
        assert!(validate_value(&both, REQUEST_PERCENTAGE, -1.0).is_err());
        assert!(validate_value(&both, CONNECTION_CREATION_RATE, 5.0).is_err());
        assert!(validate_value(&entity(&[("ip", None)]), CONNECTION_CREATION_RATE, 5.0).is_ok());
        assert!(validate_value(&both, "bytes_per_fortnight", 5.0).is_err());
    }

    #[test]
    fn the_most_specific_of_the_eight_levels_applies() {
        let t = table(&[
            (&[("client-id", None)], PRODUCER_BYTE_RATE, 8.0),
            (&[("client-id", Some("c"))], PRODUCER_BYTE_RATE, 7.0),
            (&[("user", None)], PRODUCER_BYTE_RATE, 6.0),
            (&[("user", None), ("client-id", None)], PRODUCER_BYTE_RATE, 5.0),
            (&[("user", None), ("client-id", Some("c"))], PRODUCER_BYTE_RATE, 4.0),
            (&[("user", Some("u"))], PRODUCER_BYTE_RATE, 3.0),
            (&[("user", Some("u")), ("client-id", None)], PRODUCER_BYTE_RATE, 2.0),
            (&[("user", Some("u")), ("client-id", Some("c"))], PRODUCER_BYTE_RATE, 1.0),
        ]);
        assert_eq!(resolve(&t, QuotaType::Produce, "u", "c"), Some((1.0, true, true)));
        assert_eq!(resolve(&t, QuotaType::Produce, "u", "other"), Some((2.0, true, true)));
        assert_eq!(resolve(&t, QuotaType::Produce, "v", "c"), Some((4.0, true, true)));
        assert_eq!(resolve(&t, QuotaType::Fetch, "u", "c"), None);
        let users_only = table(&[(&[("user", Some("u"))], PRODUCER_BYTE_RATE, 3.0), (&[("user", None)], PRODUCER_BYTE_RATE, 6.0)]);
        assert_eq!(resolve(&users_only, QuotaType::Produce, "u", "c"), Some((3.0, true, false)));
        assert_eq!(resolve(&users_only, QuotaType::Produce, "v", "c"), Some((6.0, true, false)));
        let clients_only = table(&[(&[("client-id", None)], PRODUCER_BYTE_RATE, 8.0)]);
        assert_eq!(resolve(&clients_only, QuotaType::Produce, "u", "c"), Some((8.0, false, true)));
    }

    /// A client sending as fast as it may, waiting out each throttle, averages its quota.
    #[test]
    fn a_client_that_waits_out_its_throttles_averages_its_quota() {
        let quota = 100_000.0;
        let t = table(&[(&[("client-id", Some("c"))], PRODUCER_BYTE_RATE, quota)]);
        let window = QuotaWindow::default();
        let mut quotas = ClientQuotas::new(window);
        let (mut now, mut sent) = (0i64, 0.0);
        let (start_measure, end) = (20_000, 80_000);
        let mut measured = 0.0;
        while now < end {
            let batch = 16_384.0;
            let throttle = quotas.record(&t, now, QuotaType::Produce, "u", "c", batch);
            sent += batch;
            if now >= start_measure {
                measured += batch;
            }
            now += 5 + throttle;
        }
        assert!(sent > 0.0);
        let rate = measured / ((end - start_measure) as f64 / 1000.0);
        assert!((rate - quota).abs() / quota < 0.05, "rate {rate} against quota {quota}");
    }

    #[test]
    fn request_throttles_are_capped_at_a_window_and_byte_throttles_are_not() {
        let t = table(&[(&[("user", None)], REQUEST_PERCENTAGE, 1.0), (&[("user", None)], CONSUMER_BYTE_RATE, 10.0)]);
        let mut quotas = ClientQuotas::new(QuotaWindow::default());
        assert_eq!(quotas.record(&t, 0, QuotaType::Request, "u", "c", 1000.0), 1000);
        assert!(quotas.record(&t, 0, QuotaType::Fetch, "u", "c", 1_000_000.0) > 1000);
        // Another user has its own sensor under the same default quota.
        assert_eq!(quotas.record(&t, 0, QuotaType::Fetch, "v", "c", 1.0), 0);
        assert_eq!(quotas.sensor_count(), 3);
        // No quota, no sensor.
        assert_eq!(quotas.record(&t, 0, QuotaType::Produce, "u", "c", 1e12), 0);
        assert_eq!(quotas.sensor_count(), 3);
    }

    #[test]
    fn an_unrecorded_value_no_longer_counts() {
        let t = table(&[(&[("client-id", None)], CONSUMER_BYTE_RATE, 100.0)]);
        let mut quotas = ClientQuotas::new(QuotaWindow::default());
        assert!(quotas.record(&t, 0, QuotaType::Fetch, "u", "c", 5_000.0) > 0);
        quotas.unrecord(&t, 0, QuotaType::Fetch, "u", "c", 5_000.0);
        assert_eq!(quotas.record(&t, 1, QuotaType::Fetch, "u", "c", 100.0), 0);
        assert_eq!(quotas.max_value_in_window(&t, QuotaType::Fetch, "u", "c"), Some(1000.0));
    }

    #[test]
    fn old_samples_leave_the_rate() {
        let window = QuotaWindow { samples: 3, window_ms: 1000 };
        let mut rate = Rate::default();
        rate.record(window, 0, 3000.0);
        assert_eq!(rate.measure(window, 0), 1500.0);
        assert_eq!(rate.measure(window, 2999), 3000.0 * 1000.0 / 2999.0);
        assert_eq!(rate.measure(window, 3000), 0.0);
    }
}
