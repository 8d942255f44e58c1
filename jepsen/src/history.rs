//! The history file (`history.jsonl`, one event per line, as `worker.py` writes them) and its
//! translation into the shared checker's operations.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use odradek_checker::{Op, Partition, Processed, SendOutcome, TxnOutcome};
use serde::{Deserialize, Serialize};

pub const QUEUE_TOPIC: &str = "jepsen-queue";
pub const TXN_TOPIC: &str = "jepsen-txn";
/// Where the consume-transform-produce transactions write what they read from the queue topic.
pub const TRANSFORMED_TOPIC: &str = "jepsen-transformed";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock milliseconds (the clients' clock, never skewed).
    pub time: u64,
    pub process: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    /// poll and final: (partition, offset, value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Vec<(u32, i64, u64)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<bool>,
    /// seek: the partitions re-positioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
    /// txn: (partition, value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<(u32, u64)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// role: what a producer promises, "all" or "1".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<String>,
    /// role: whether the producer is idempotent (if not, it retries and may write twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// transform: (partition, input offset, input value, output value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairs: Option<Vec<(u32, i64, u64, u64)>>,
    /// committed: the transform group's committed offsets, (partition, offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsets: Option<Vec<(u32, i64)>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn parse(text: &str) -> Result<Vec<Event>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("history line {}: {line}", i + 1)))
        .collect()
}

/// The checker's partition of a topic's partition: the transactional topic's are apart.
pub fn key(topic: Option<&str>, partition: u32) -> Partition {
    match topic {
        Some(TXN_TOPIC) => 1_000 + partition,
        Some(TRANSFORMED_TOPIC) => 2_000 + partition,
        _ => partition,
    }
}

/// The history with every operation a client invoked and never completed (it was stopped: a
/// client still running a minute after the workload is killed) completed at the end as
/// `info`: its fate is unknown, as Jepsen takes a crashed client's last operation.
pub fn close_dangling(events: &[Event]) -> Vec<Event> {
    let mut open: BTreeMap<(u32, &str), &Event> = BTreeMap::new();
    for e in events.iter().filter(|e| matches!(e.f.as_str(), "send" | "txn" | "transform")) {
        if e.kind == "invoke" {
            open.insert((e.process, e.f.as_str()), e);
        } else {
            open.remove(&(e.process, e.f.as_str()));
        }
    }
    let mut closed = events.to_vec();
    closed.extend(open.into_values().map(|e| Event {
        kind: "info".to_owned(),
        error: Some("no completion: the client was stopped".to_owned()),
        ..e.clone()
    }));
    closed
}

/// The completed operations, in the order they completed, for the checker.
pub fn to_ops(events: &[Event], partitions: u32) -> Vec<(Partition, Op)> {
    let mut ops = Vec::new();
    for e in events {
        let topic = e.topic.as_deref();
        match (e.f.as_str(), e.kind.as_str()) {
            ("send", "ok" | "fail" | "info") => {
                let (Some(partition), Some(value)) = (e.partition, e.value) else { continue };
                let outcome = match (e.kind.as_str(), e.offset) {
                    ("ok", Some(base_offset)) => SendOutcome::Ok { base_offset },
                    ("fail", _) => SendOutcome::Fail(e.error.clone().unwrap_or_default()),
                    _ => SendOutcome::Info(e.error.clone().unwrap_or_default()),
                };
                ops.push((key(topic, partition), Op::Send { process: e.process, values: vec![value], outcome }));
            }
            ("poll", "ok") => {
                let mut by_partition: BTreeMap<u32, Vec<(i64, u64)>> = BTreeMap::new();
                for &(p, offset, value) in e.records.iter().flatten() {
                    by_partition.entry(p).or_default().push((offset, value));
                }
                for (p, records) in by_partition {
                    let op = if e.committed == Some(true) {
                        Op::CommittedPoll { process: e.process, records }
                    } else {
                        // librdkafka does not hand out the high watermark of the answer that
                        // carried a record, so real-client histories do not check reads above it.
                        Op::Poll { process: e.process, records, high_watermark: i64::MAX }
                    };
                    ops.push((key(topic, p), op));
                }
            }
            ("seek", "ok") => {
                for &p in e.partitions.iter().flatten() {
                    ops.push((key(topic, p), Op::Seek { process: e.process }));
                }
            }
            ("txn", "ok" | "info") => {
                let outcome = match (e.kind.as_str(), e.outcome.as_deref()) {
                    ("ok", Some("commit")) => TxnOutcome::Committed,
                    ("ok", Some("abort")) => TxnOutcome::Aborted,
                    _ => TxnOutcome::Unknown,
                };
                let values = e.values.iter().flatten().map(|&(_, v)| v).collect();
                ops.push((key(topic, 0), Op::Txn { process: e.process, values, outcome }));
            }
            ("transform", "ok" | "info") => {
                let outcome = if e.kind == "ok" { TxnOutcome::Committed } else { TxnOutcome::Unknown };
                let values = e.pairs.iter().flatten().map(|&(_, _, _, out)| out).collect();
                ops.push((key(Some(TRANSFORMED_TOPIC), 0), Op::Txn { process: e.process, values, outcome }));
            }
            ("final", "ok") => {
                let mut by_partition: BTreeMap<u32, Vec<(i64, u64)>> = (0..partitions).map(|p| (p, Vec::new())).collect();
                for &(p, offset, value) in e.records.iter().flatten() {
                    by_partition.entry(p).or_default().push((offset, value));
                }
                for (p, records) in by_partition {
                    let op = if e.committed == Some(true) {
                        Op::FinalCommitted { records }
                    } else {
                        Op::FinalRead { records }
                    };
                    ops.push((key(topic, p), op));
                }
            }
            _ => {}
        }
    }
    ops
}

/// A completed send with its latency: (completion time, latency ms, kind).
pub fn send_latencies(events: &[Event]) -> Vec<(u64, u64, String)> {
    let mut invoked: BTreeMap<u32, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events.iter().filter(|e| matches!(e.f.as_str(), "send" | "txn" | "transform")) {
        if e.kind == "invoke" {
            invoked.insert(e.process, e.time);
        } else if let Some(start) = invoked.remove(&e.process) {
            out.push((e.time, e.time.saturating_sub(start), e.kind.clone()));
        }
    }
    out
}

/// What exactly-once processing is checked on: every record the transform transactions read
/// with the value written for it; the output topic's final committed values; the input records
/// of the queue topic's final read below the transform group's committed offsets.
pub fn processing(events: &[Event]) -> Option<(Vec<Processed>, BTreeSet<u64>, BTreeSet<(Partition, i64, u64)>)> {
    let committed: BTreeMap<u32, i64> = events.iter().filter(|e| e.f == "committed").flat_map(|e| e.offsets.iter().flatten().copied()).collect();
    if committed.is_empty() {
        return None;
    }
    let processed = events
        .iter()
        .filter(|e| e.f == "transform" && e.kind != "invoke")
        .flat_map(|e| e.pairs.iter().flatten())
        .map(|&(partition, offset, input, output)| Processed { partition, offset, input, output })
        .collect();
    fn finals<'a>(events: &'a [Event], topic: &'static str) -> impl Iterator<Item = &'a (u32, i64, u64)> {
        events.iter().filter(move |e| e.f == "final" && e.topic.as_deref() == Some(topic)).flat_map(|e| e.records.iter().flatten())
    }
    let outputs = finals(events, TRANSFORMED_TOPIC).map(|&(_, _, v)| v).collect();
    let must = finals(events, QUEUE_TOPIC)
        .filter(|&&(p, offset, _)| committed.get(&p).is_some_and(|&c| offset < c))
        .map(|&(p, offset, v)| (p, offset, v))
        .collect();
    Some((processed, outputs, must))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operation_never_completed_is_closed_as_indeterminate_and_completed_ones_stay() {
        let history = [
            r#"{"time":1,"process":1,"type":"invoke","f":"send","partition":0,"value":10}"#,
            r#"{"time":2,"process":1,"type":"ok","f":"send","partition":0,"value":10,"offset":0}"#,
            r#"{"time":3,"process":1,"type":"invoke","f":"send","partition":1,"value":11}"#,
            r#"{"time":4,"process":2,"type":"invoke","f":"txn","values":[[0,20]],"outcome":"commit"}"#,
            r#"{"time":5,"process":3,"type":"ok","f":"poll","records":[[1,0,11]]}"#,
        ]
        .join("\n");
        let events = parse(&history).unwrap();
        let closed = close_dangling(&events);
        assert_eq!(closed.len(), events.len() + 2);
        let added: Vec<(&str, &str, u32)> = closed[events.len()..].iter().map(|e| (e.f.as_str(), e.kind.as_str(), e.process)).collect();
        assert_eq!(added, vec![("send", "info", 1), ("txn", "info", 2)]);
        let sends: Vec<_> = to_ops(&closed, 2)
            .into_iter()
            .filter_map(|(p, op)| match op {
                Op::Send { values, outcome, .. } => Some((p, values, matches!(outcome, SendOutcome::Info(_)))),
                _ => None,
            })
            .collect();
        assert_eq!(sends, vec![(0, vec![10], false), (1, vec![11], true)]);
    }
}
