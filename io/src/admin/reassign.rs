//! `odradek reassign`: moves partition replicas between brokers, after Kafka's
//! `kafka-reassign-partitions.sh` (KIP-455).
//!
//! - `--generate --topics-to-move-json-file F --broker-list 1,2,3`: prints the current
//!   assignment and a proposed one that spreads each partition's replicas over the brokers
//!   named, keeping its replication factor (Kafka's two JSON documents).
//! - `--execute --reassignment-json-file F`: starts the moves (AlterPartitionReassignments).
//! - `--verify --reassignment-json-file F`: per partition, completed or still in progress;
//!   exit status 0 only when every move is complete and the replicas are the ones asked.
//! - `--cancel --reassignment-json-file F`: puts the partitions back on their original replicas.
//! - `--list`: the moves under way (ListPartitionReassignments).
//!
//! The reassignment file is Kafka's: `{"version":1,"partitions":[{"topic":"t","partition":0,
//! "replicas":[1,2]}]}` (`log_dirs` is accepted and must be `any`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{ArgGroup, Parser};
use kafka_protocol::messages::alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, MetadataResponse, TopicName,
};
use serde_json::json;

use super::messages::{self, check, s, AnswerError};
use super::{AdminError, ConnectArgs, TopicPartition};

/// Move partition replicas between brokers.
#[derive(Parser, Debug)]
#[command(group(ArgGroup::new("action").required(true).args(["generate", "execute", "verify", "cancel", "list"])))]
pub struct ReassignArgs {
    /// Propose an assignment over `--broker-list` for the topics of `--topics-to-move-json-file`.
    #[arg(long)]
    generate: bool,
    /// Start the moves of `--reassignment-json-file`.
    #[arg(long)]
    execute: bool,
    /// Whether the moves of `--reassignment-json-file` are complete (exit status 1 if not).
    #[arg(long)]
    verify: bool,
    /// Cancel the moves of `--reassignment-json-file` still under way.
    #[arg(long)]
    cancel: bool,
    /// The moves under way.
    #[arg(long)]
    list: bool,
    /// Kafka's reassignment JSON.
    #[arg(long, value_name = "FILE", required_if_eq_any([("execute", "true"), ("verify", "true"), ("cancel", "true")]))]
    reassignment_json_file: Option<PathBuf>,
    /// `{"topics":[{"topic":"t"}],"version":1}`.
    #[arg(long, value_name = "FILE", required_if_eq("generate", "true"))]
    topics_to_move_json_file: Option<PathBuf>,
    /// Brokers to spread the replicas over, `1,2,3`.
    #[arg(long, value_delimiter = ',', required_if_eq("generate", "true"))]
    broker_list: Vec<i32>,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs a `reassign` command; returns the process exit status.
pub fn run(args: ReassignArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

fn read(path: &PathBuf) -> Result<String, AdminError> {
    std::fs::read_to_string(path).map_err(|e| AdminError::Usage(format!("could not read {}: {e}", path.display())))
}

/// The partitions and target replicas of Kafka's reassignment JSON.
fn parse_reassignment(text: &str) -> Result<BTreeMap<TopicPartition, Vec<i32>>, AdminError> {
    #[derive(serde::Deserialize)]
    struct File {
        partitions: Vec<Entry>,
        #[allow(dead_code)]
        version: Option<i32>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        topic: String,
        partition: i32,
        replicas: Vec<i32>,
        #[serde(default)]
        log_dirs: Option<Vec<String>>,
    }
    let file: File = serde_json::from_str(text).map_err(|e| AdminError::Usage(format!("the reassignment JSON file does not parse: {e}")))?;
    let mut partitions = BTreeMap::new();
    for entry in file.partitions {
        if entry.log_dirs.as_ref().is_some_and(|dirs| dirs.iter().any(|d| d != "any")) {
            return Err(AdminError::Usage("log_dirs other than \"any\" are not supported (one log directory per broker)".into()));
        }
        if entry.replicas.is_empty() || entry.replicas.iter().collect::<BTreeSet<_>>().len() != entry.replicas.len() {
            return Err(AdminError::Usage(format!("partition {}-{}: replicas must be distinct and not empty", entry.topic, entry.partition)));
        }
        if partitions.insert(TopicPartition::new(&entry.topic, entry.partition), entry.replicas).is_some() {
            return Err(AdminError::Usage(format!("partition {}-{} is named twice", entry.topic, entry.partition)));
        }
    }
    if partitions.is_empty() {
        return Err(AdminError::Usage("the reassignment JSON file names no partition".into()));
    }
    Ok(partitions)
}

fn reassignment_json(assignment: &BTreeMap<TopicPartition, Vec<i32>>) -> String {
    let partitions: Vec<_> = assignment
        .iter()
        .map(|(tp, replicas)| json!({"topic": tp.topic, "partition": tp.partition, "replicas": replicas, "log_dirs": replicas.iter().map(|_| "any").collect::<Vec<_>>()}))
        .collect();
    json!({"version": 1, "partitions": partitions}).to_string()
}

fn execute(args: &ReassignArgs) -> Result<String, AdminError> {
    let mut cluster = args.connect.cluster();
    if args.list {
        let (_, response) = cluster.any_broker()?.call(|_| ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000))?;
        return Ok(render_list(&ongoing(&response)?));
    }
    if args.generate {
        let text = read(args.topics_to_move_json_file.as_ref().expect("required with --generate"))?;
        let topics = parse_topics(&text)?;
        let current = replicas_of(&mut cluster, &topics)?;
        let proposed = propose(&current, &args.broker_list)?;
        return Ok(format!(
            "Current partition replica assignment\n{}\n\nProposed partition reassignment configuration\n{}\n",
            reassignment_json(&current),
            reassignment_json(&proposed)
        ));
    }
    let target = parse_reassignment(&read(args.reassignment_json_file.as_ref().expect("required"))?)?;
    if args.execute || args.cancel {
        let timeout_ms = i32::try_from(args.connect.timeout_ms).unwrap_or(i32::MAX);
        let request = alter_request(&target, args.cancel, timeout_ms);
        let (_, response) = cluster.any_broker()?.call(|_| request)?;
        let failed = alter_errors(&response)?;
        if !failed.is_empty() {
            return Err(AdminError::Refused(format!("reassignment refused for {}", failed.join(", "))));
        }
        let verb = if args.cancel { "Successfully cancelled" } else { "Successfully started" };
        return Ok(format!("{verb} partition reassignment{} for {}\n", if target.len() > 1 { "s" } else { "" }, names(target.keys())));
    }
    // --verify: complete when no move is under way and the replicas are the targets.
    let (_, response) = cluster.any_broker()?.call(|_| ListPartitionReassignmentsRequest::default().with_timeout_ms(30_000))?;
    let moving = ongoing(&response)?;
    let topics: Vec<String> = target.keys().map(|tp| tp.topic.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let current = replicas_of(&mut cluster, &topics)?;
    let mut out = "Status of partition reassignment:\n".to_owned();
    let mut pending = Vec::new();
    for (tp, replicas) in &target {
        let line = if moving.contains_key(tp) {
            pending.push(tp.to_string());
            format!("Reassignment of partition {tp} is still in progress.")
        } else if current.get(tp) == Some(replicas) {
            format!("Reassignment of partition {tp} is completed.")
        } else {
            pending.push(tp.to_string());
            format!("There is no active reassignment of partition {tp}, but replica set is {:?} rather than {replicas:?}.", current.get(tp).cloned().unwrap_or_default())
        };
        out.push_str(&line);
        out.push('\n');
    }
    if pending.is_empty() {
        Ok(out)
    } else {
        print!("{out}");
        Err(AdminError::Refused(format!("{} of {} reassignments not complete: {}", pending.len(), target.len(), pending.join(", "))))
    }
}

fn names<'a>(tps: impl Iterator<Item = &'a TopicPartition>) -> String {
    tps.map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn parse_topics(text: &str) -> Result<Vec<String>, AdminError> {
    #[derive(serde::Deserialize)]
    struct File {
        topics: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        topic: String,
    }
    let file: File = serde_json::from_str(text).map_err(|e| AdminError::Usage(format!("the topics JSON file does not parse: {e}")))?;
    Ok(file.topics.into_iter().map(|t| t.topic).collect())
}

/// Each partition's replicas, from Metadata.
fn replicas_of(cluster: &mut super::client::Cluster, topics: &[String]) -> Result<BTreeMap<TopicPartition, Vec<i32>>, AdminError> {
    let (_, response) = cluster.any_broker()?.call(|v| messages::metadata_request(Some(topics), v))?;
    replicas_in(&response).map_err(|error| AdminError::Answer { context: "Metadata".into(), error })
}

fn replicas_in(response: &MetadataResponse) -> Result<BTreeMap<TopicPartition, Vec<i32>>, AnswerError> {
    let mut out = BTreeMap::new();
    for t in &response.topics {
        let name = t.name.as_ref().map(|n| n.as_str().to_owned()).unwrap_or_default();
        check(t.error_code, None).map_err(|e| AnswerError::Incomplete(format!("topic {name}: {e}")))?;
        for p in &t.partitions {
            out.insert(TopicPartition::new(&name, p.partition_index), p.replica_nodes.iter().map(|b| b.0).collect());
        }
    }
    Ok(out)
}

/// Kafka's `--generate`: partition `p`'s replicas start at broker `p mod n` of the sorted
/// list and follow it, keeping each partition's replication factor.
fn propose(current: &BTreeMap<TopicPartition, Vec<i32>>, brokers: &[i32]) -> Result<BTreeMap<TopicPartition, Vec<i32>>, AdminError> {
    let mut brokers: Vec<i32> = brokers.to_vec();
    brokers.sort_unstable();
    brokers.dedup();
    let mut proposed = BTreeMap::new();
    for (i, (tp, replicas)) in current.iter().enumerate() {
        if replicas.len() > brokers.len() {
            return Err(AdminError::Usage(format!(
                "{tp} has {} replicas but --broker-list names {} brokers",
                replicas.len(),
                brokers.len()
            )));
        }
        proposed.insert(tp.clone(), (0..replicas.len()).map(|j| brokers[(i + j) % brokers.len()]).collect());
    }
    Ok(proposed)
}

fn alter_request(target: &BTreeMap<TopicPartition, Vec<i32>>, cancel: bool, timeout_ms: i32) -> AlterPartitionReassignmentsRequest {
    let mut topics: Vec<ReassignableTopic> = Vec::new();
    for (tp, replicas) in target {
        let partition = ReassignablePartition::default()
            .with_partition_index(tp.partition)
            .with_replicas((!cancel).then(|| replicas.iter().map(|&b| BrokerId(b)).collect()));
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == tp.topic => last.partitions.push(partition),
            _ => topics.push(ReassignableTopic::default().with_name(TopicName(s(&tp.topic))).with_partitions(vec![partition])),
        }
    }
    AlterPartitionReassignmentsRequest::default().with_topics(topics).with_timeout_ms(timeout_ms).with_allow_replication_factor_change(true)
}

/// `topic-partition: error` for every partition refused.
fn alter_errors(response: &AlterPartitionReassignmentsResponse) -> Result<Vec<String>, AdminError> {
    check(response.error_code, response.error_message.as_ref())
        .map_err(|error| AdminError::Answer { context: "AlterPartitionReassignments".into(), error })?;
    Ok(response
        .responses
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(move |p| {
                check(p.error_code, p.error_message.as_ref()).err().map(|e| format!("{}-{}: {e}", t.name.as_str(), p.partition_index))
            })
        })
        .collect())
}

/// The moves under way: partition to (replicas, adding, removing).
type Ongoing = BTreeMap<TopicPartition, (Vec<i32>, Vec<i32>, Vec<i32>)>;

fn ongoing(response: &ListPartitionReassignmentsResponse) -> Result<Ongoing, AdminError> {
    check(response.error_code, response.error_message.as_ref())
        .map_err(|error| AdminError::Answer { context: "ListPartitionReassignments".into(), error })?;
    let ids = |list: &[BrokerId]| list.iter().map(|b| b.0).collect::<Vec<_>>();
    Ok(response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (TopicPartition::new(t.name.as_str(), p.partition_index), (ids(&p.replicas), ids(&p.adding_replicas), ids(&p.removing_replicas)))
            })
        })
        .collect())
}

fn render_list(moving: &Ongoing) -> String {
    if moving.is_empty() {
        return "No partition reassignments found.\n".into();
    }
    let mut out = "Current partition reassignments:\n".to_owned();
    for (tp, (replicas, adding, removing)) in moving {
        out.push_str(&format!("{tp}: replicas: {replicas:?}, adding: {adding:?}, removing: {removing:?}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafkas_reassignment_json_is_read_and_written() {
        let text = r#"{"version":1,"partitions":[{"topic":"t","partition":1,"replicas":[3,1],"log_dirs":["any","any"]},{"topic":"t","partition":0,"replicas":[2]}]}"#;
        let parsed = parse_reassignment(text).unwrap();
        assert_eq!(parsed[&TopicPartition::new("t", 1)], vec![3, 1]);
        assert_eq!(parse_reassignment(&reassignment_json(&parsed)).unwrap(), parsed);
        for bad in [
            r#"{"partitions":[]}"#,
            r#"{"partitions":[{"topic":"t","partition":0,"replicas":[1,1]}]}"#,
            r#"{"partitions":[{"topic":"t","partition":0,"replicas":[1],"log_dirs":["/d"]}]}"#,
            r#"{"partitions":[{"topic":"t","partition":0,"replicas":[1]},{"topic":"t","partition":0,"replicas":[2]}]}"#,
        ] {
            assert!(matches!(parse_reassignment(bad), Err(AdminError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn generate_spreads_replicas_keeping_their_count() {
        let current: BTreeMap<TopicPartition, Vec<i32>> =
            [(TopicPartition::new("t", 0), vec![1, 2]), (TopicPartition::new("t", 1), vec![2, 1])].into();
        let proposed = propose(&current, &[3, 2]).unwrap();
        assert_eq!(proposed[&TopicPartition::new("t", 0)], vec![2, 3]);
        assert_eq!(proposed[&TopicPartition::new("t", 1)], vec![3, 2]);
        assert!(propose(&current, &[3]).is_err());
    }

    #[test]
    fn cancelling_sends_null_replicas() {
        let target: BTreeMap<TopicPartition, Vec<i32>> = [(TopicPartition::new("t", 0), vec![3])].into();
        let request = alter_request(&target, true, 1000);
        assert_eq!(request.topics[0].partitions[0].replicas, None);
        let request = alter_request(&target, false, 1000);
        assert_eq!(request.topics[0].partitions[0].replicas, Some(vec![BrokerId(3)]));
    }
}
