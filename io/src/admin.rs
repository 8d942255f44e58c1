//! `odradek group`: consumer-group administration after Kafka's `kafka-consumer-groups.sh`.
//!
//! A plain blocking Kafka client (no async runtime): every connection starts with ApiVersions
//! v0, and each request then goes out at the highest version both sides speak. Group requests
//! go to the coordinator FindCoordinator names, ListOffsets to each partition's leader from
//! Metadata, ListGroups to every broker. A coordinator that is loading or moving is looked up
//! again and retried until `--timeout-ms`; every other failure ends the command with one line
//! on stderr and exit status 1.
//!
//! - `list`: the group ids, with their state when the ListGroups version carries it (v4+).
//! - `describe`: state, members and their assignments (decoded when the protocol type is
//!   `consumer`), then per partition committed offset, log end offset and lag, as Kafka's
//!   `--describe --offsets` prints them.
//! - `reset-offsets`: only while the group is Empty or Dead, as Kafka's tool insists; targets
//!   come from ListOffsets and are committed with a standalone OffsetCommit.

pub mod acls;
mod client;
pub mod cluster;
pub mod configs;
pub mod consume;
pub mod delete_records;
pub mod log_dirs;
mod messages;
pub mod produce;
pub mod reassign;
pub mod topics;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand};
use kafka_protocol::messages::ApiKey;

use client::{Cluster, Connection};
use messages::{AnswerError, GroupDescription, GroupMember, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};

/// Consumer groups: list them, describe their members and lag, reset their offsets.
#[derive(Parser, Debug)]
pub struct GroupArgs {
    #[command(subcommand)]
    command: GroupCommand,
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// List every group, one per line, with its state when the broker reports it.
    List {
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Show a group's state and members, and per partition its committed offset, log end
    /// offset and lag.
    Describe {
        /// The group id.
        group: String,
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move an inactive group's committed offsets on one topic.
    ResetOffsets(ResetOffsetsArgs),
}

#[derive(Args, Debug)]
struct ConnectArgs {
    /// The brokers to bootstrap from.
    #[arg(
        long,
        value_name = "HOST:PORT[,HOST:PORT...]",
        default_value = "127.0.0.1:9092",
        value_parser = parse_bootstrap
    )]
    bootstrap_server: Bootstrap,
    /// How long to wait for a connection or an answer, and for a loading coordinator.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
}

impl ConnectArgs {
    fn cluster(&self) -> Cluster {
        Cluster::new(self.bootstrap_server.0.clone(), Duration::from_millis(self.timeout_ms))
    }
}

#[derive(Args, Debug)]
#[command(group(
    ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])
))]
struct ResetOffsetsArgs {
    /// The group id.
    group: String,
    #[command(flatten)]
    connect: ConnectArgs,
    /// The topic whose committed offsets move.
    #[arg(long)]
    topic: String,
    /// Only these partitions, comma-separated (default: every partition of the topic).
    #[arg(long, value_name = "P[,P...]", value_parser = parse_partitions)]
    partitions: Option<Partitions>,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To this offset, moved into [log start, log end] when outside it.
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    to_offset: Option<i64>,
    /// To the first record with a timestamp at or after this time; the log end if none is.
    #[arg(long, value_name = "MS_SINCE_EPOCH", value_parser = clap::value_parser!(i64).range(0..))]
    to_datetime: Option<i64>,
    /// Print the new offsets without committing them.
    #[arg(long)]
    dry_run: bool,
}

impl ResetOffsetsArgs {
    fn target(&self) -> Result<ResetTarget, AdminError> {
        // clap's "target" group lets exactly one through.
        match (self.to_earliest, self.to_latest, self.to_offset, self.to_datetime) {
            (true, false, None, None) => Ok(ResetTarget::Earliest),
            (false, true, None, None) => Ok(ResetTarget::Latest),
            (false, false, Some(offset), None) => Ok(ResetTarget::Offset(offset)),
            (false, false, None, Some(ms)) => Ok(ResetTarget::Datetime(ms)),
            _ => Err(AdminError::Usage(
                "give exactly one of --to-earliest, --to-latest, --to-offset, --to-datetime".into(),
            )),
        }
    }
}

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Columns and lines for a person to read.
    Human,
    /// One JSON document on stdout.
    Json,
}

/// Bootstrap addresses, each `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bootstrap(Vec<String>);

fn parse_bootstrap(text: &str) -> Result<Bootstrap, String> {
    let mut addrs = Vec::new();
    for addr in text.split(',').map(str::trim) {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(format!("{addr:?} is not host:port"));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("{addr:?} is not host:port"));
        }
        addrs.push(addr.to_owned());
    }
    Ok(Bootstrap(addrs))
}

/// Partition indexes, sorted, without repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Partitions(Vec<i32>);

fn parse_partitions(text: &str) -> Result<Partitions, String> {
    let mut partitions = Vec::new();
    for part in text.split(',').map(str::trim) {
        match part.parse::<i32>() {
            Ok(p) if p >= 0 => partitions.push(p),
            _ => return Err(format!("{part:?} is not a partition number")),
        }
    }
    partitions.sort_unstable();
    partitions.dedup();
    Ok(Partitions(partitions))
}

/// A partition of a topic; printed `topic-partition` as Kafka prints it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition { topic: topic.to_owned(), partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Why a command failed. Each prints as one line.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Usage(String),
    #[error("could not connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{api_key:?} v{version} to {addr} failed: {reason}")]
    Network { addr: String, api_key: ApiKey, version: i16, reason: String },
    #[error(
        "the broker at {addr} closed the connection instead of answering {api_key:?} v{version} \
         (it may not support that API)"
    )]
    Closed { addr: String, api_key: ApiKey, version: i16 },
    #[error("the broker at {addr} answered {api_key:?} v{version} with bytes that do not decode: {reason}")]
    Malformed { addr: String, api_key: ApiKey, version: i16, reason: String },
    #[error("the broker at {addr} does not support {api_key:?}: {detail}")]
    Unsupported { addr: String, api_key: ApiKey, detail: String },
    #[error("could not encode {api_key:?} v{version}: {reason}")]
    Encode { api_key: ApiKey, version: i16, reason: String },
    #[error("{context}: {error}")]
    Answer { context: String, error: AnswerError },
    #[error("{0}")]
    Refused(String),
}

impl AdminError {
    fn is_coordinator_moving(&self) -> bool {
        matches!(self, AdminError::Answer { error, .. } if error.is_coordinator_moving())
    }
}

/// Runs a `group` command; returns the process exit status.
pub fn run(args: GroupArgs) -> i32 {
    finish(execute(args), |_| 1)
}

/// An admin command's end: its output on stdout and status 0, or one plain line on stderr and
/// the status `exit_code` gives the error.
pub fn finish<E: std::fmt::Display>(result: Result<String, E>, exit_code: impl FnOnce(&E) -> i32) -> i32 {
    match result {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) is not worth a complaint.
            let _ = stdout.write_all(output.as_bytes()).and_then(|()| stdout.flush());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

fn execute(args: GroupArgs) -> Result<String, AdminError> {
    match args.command {
        GroupCommand::List { connect } => list_groups(&mut connect.cluster()),
        GroupCommand::Describe { group, connect } => {
            validate_group(&group)?;
            describe_group(&mut connect.cluster(), &group)
        }
        GroupCommand::ResetOffsets(args) => reset_offsets(&args),
    }
}

fn validate_group(group: &str) -> Result<(), AdminError> {
    // Kafka answers an empty group id with INVALID_GROUP_ID.
    match group.is_empty() {
        true => Err(AdminError::Usage("the group id is empty".into())),
        false => Ok(()),
    }
}

// ---- list ----

fn list_groups(cluster: &mut Cluster) -> Result<String, AdminError> {
    // Each broker knows only the groups it coordinates: ask them all, as Kafka's AdminClient.
    let metadata = cluster.metadata(Some(&[]))?;
    if metadata.brokers.is_empty() {
        return Err(AdminError::Refused("the cluster metadata lists no brokers".into()));
    }
    let mut groups: BTreeMap<String, Option<String>> = BTreeMap::new();
    for addr in metadata.brokers.values() {
        let listed = cluster.retrying(|cluster| {
            let (version, response) = cluster.connection(addr)?.call(messages::list_groups_request)?;
            messages::listed_groups(response, version)
                .map_err(|error| AdminError::Answer { context: format!("ListGroups at {addr}"), error })
        })?;
        groups.extend(listed.into_iter().map(|g| (g.group_id, g.state)));
    }
    Ok(render_group_list(&groups))
}

fn render_group_list(groups: &BTreeMap<String, Option<String>>) -> String {
    let mut table = Table::headless(2);
    for (group, state) in groups {
        table.push([group.clone(), state.clone().unwrap_or_default()]);
    }
    table.render()
}

// ---- describe ----

fn describe_group(cluster: &mut Cluster, group: &str) -> Result<String, AdminError> {
    let description = cluster.with_coordinator(group, |c| describe(c, group))?;
    let committed = cluster.with_coordinator(group, |c| committed_offsets(c, group))?;
    if description.state == "Dead" && description.members.is_empty() && committed.is_empty() {
        return Err(AdminError::Refused(format!("consumer group '{group}' does not exist")));
    }
    for note in describe_notes(group, &description) {
        eprintln!("{note}");
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().cloned().chain(description.members.iter().flat_map(assigned).cloned()).collect();
    let log_ends = if partitions.is_empty() {
        BTreeMap::new()
    } else {
        let topics: BTreeSet<String> = partitions.iter().map(|tp| tp.topic.clone()).collect();
        let metadata = cluster.metadata(Some(&topics.into_iter().collect::<Vec<_>>()))?;
        cluster.list_offsets(&metadata, &partitions, LATEST_TIMESTAMP)?
    };
    Ok(render_description(group, &description, &committed, &log_ends))
}

fn describe(connection: &mut Connection, group: &str) -> Result<GroupDescription, AdminError> {
    let (_, response) = connection.call(|v| messages::describe_groups_request(group, v))?;
    messages::group_description(response, group)
        .map_err(|error| AdminError::Answer { context: format!("DescribeGroups for group '{group}'"), error })
}

fn committed_offsets(connection: &mut Connection, group: &str) -> Result<BTreeMap<TopicPartition, i64>, AdminError> {
    let (version, response) = connection.call(|v| messages::offset_fetch_request(group, v))?;
    messages::committed_offsets(response, group, version)
        .map_err(|error| AdminError::Answer { context: format!("OffsetFetch for group '{group}'"), error })
}

/// The partitions a member owns; none when its assignment did not decode.
fn assigned(member: &GroupMember) -> &[TopicPartition] {
    member.assignment.as_deref().unwrap_or(&[])
}

/// What Kafka's tool says on stderr before the tables.
fn describe_notes(group: &str, description: &GroupDescription) -> Vec<String> {
    let mut notes = Vec::new();
    match description.state.as_str() {
        "Empty" => notes.push(format!("Consumer group '{group}' has no active members.")),
        "PreparingRebalance" | "CompletingRebalance" => {
            notes.push(format!("Warning: consumer group '{group}' is rebalancing."))
        }
        _ => {}
    }
    for member in &description.members {
        if let Err(reason) = &member.assignment {
            notes.push(format!("Warning: the assignment of member {} does not decode: {reason}", member.member_id));
        }
    }
    notes
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

/// `topic(0,1),other(2)`, as Kafka's `--members --verbose` prints an assignment.
fn format_assignment(partitions: &[TopicPartition]) -> String {
    let mut by_topic: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for tp in partitions {
        by_topic.entry(&tp.topic).or_default().push(tp.partition.to_string());
    }
    if by_topic.is_empty() {
        return "-".to_owned();
    }
    by_topic.iter().map(|(topic, ps)| format!("{topic}({})", ps.join(","))).collect::<Vec<_>>().join(",")
}

/// Three tables: the group, its members, and its offsets per partition.
fn render_description(
    group: &str,
    description: &GroupDescription,
    committed: &BTreeMap<TopicPartition, i64>,
    log_ends: &BTreeMap<TopicPartition, Result<i64, AnswerError>>,
) -> String {
    let mut sections = Vec::new();
    let mut summary = Table::new(["GROUP", "STATE", "PROTOCOL-TYPE", "PROTOCOL", "#MEMBERS"]);
    summary.push([
        group.to_owned(),
        dash(&description.state),
        dash(&description.protocol_type),
        dash(&description.protocol),
        description.members.len().to_string(),
    ]);
    sections.push(summary.render());

    if !description.members.is_empty() {
        let mut members =
            Table::new(["GROUP", "CONSUMER-ID", "GROUP-INSTANCE-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"]);
        for member in &description.members {
            members.push([
                group.to_owned(),
                dash(&member.member_id),
                dash(member.group_instance_id.as_deref().unwrap_or_default()),
                dash(&member.client_host),
                dash(&member.client_id),
                assigned(member).len().to_string(),
                format_assignment(assigned(member)),
            ]);
        }
        sections.push(members.render());
    }

    let offsets = offsets_table(group, &description.members, committed, log_ends);
    if !offsets.is_empty() {
        sections.push(offsets.render());
    }
    sections.join("\n")
}

/// Kafka's `--describe --offsets` table: every committed or assigned partition, then a row per
/// member that owns nothing.
fn offsets_table(
    group: &str,
    members: &[GroupMember],
    committed: &BTreeMap<TopicPartition, i64>,
    log_ends: &BTreeMap<TopicPartition, Result<i64, AnswerError>>,
) -> Table {
    let mut owners: BTreeMap<&TopicPartition, &GroupMember> = BTreeMap::new();
    for member in members {
        for tp in assigned(member) {
            owners.insert(tp, member);
        }
    }
    let partitions: BTreeSet<&TopicPartition> = committed.keys().chain(owners.keys().copied()).collect();
    let mut table = Table::new([
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]);
    let or_dash = |value: Option<i64>| value.map_or("-".to_owned(), |v| v.to_string());
    for tp in partitions {
        let current = committed.get(tp).copied();
        let log_end = log_ends.get(tp).and_then(|end| end.as_ref().ok()).copied();
        let lag = current.zip(log_end).map(|(current, log_end)| log_end - current);
        let (consumer, host, client) = match owners.get(tp) {
            Some(m) => (dash(&m.member_id), dash(&m.client_host), dash(&m.client_id)),
            None => ("-".to_owned(), "-".to_owned(), "-".to_owned()),
        };
        table.push([
            group.to_owned(),
            tp.topic.clone(),
            tp.partition.to_string(),
            or_dash(current),
            or_dash(log_end),
            or_dash(lag),
            consumer,
            host,
            client,
        ]);
    }
    for member in members.iter().filter(|m| assigned(m).is_empty()) {
        let mut row = vec![group.to_owned()];
        row.extend(std::iter::repeat_n("-".to_owned(), 5));
        row.extend([dash(&member.member_id), dash(&member.client_host), dash(&member.client_id)]);
        table.push(row);
    }
    table
}

// ---- reset-offsets ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch.
    Datetime(i64),
}

/// What ListOffsets says about one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PartitionBounds {
    log_start_offset: i64,
    log_end_offset: i64,
    /// The offset for the `--to-datetime` timestamp: -1 when no record is that recent.
    at_timestamp: Option<i64>,
}

/// The offset to commit, as Kafka's ResetOffsets computes it.
fn target_offset(target: ResetTarget, bounds: PartitionBounds) -> i64 {
    match target {
        ResetTarget::Earliest => bounds.log_start_offset,
        ResetTarget::Latest => bounds.log_end_offset,
        // Kafka's checkOffsetsRange: beyond the log end goes to the end, before the log start
        // to the start.
        ResetTarget::Offset(offset) if offset > bounds.log_end_offset => bounds.log_end_offset,
        ResetTarget::Offset(offset) if offset < bounds.log_start_offset => bounds.log_start_offset,
        ResetTarget::Offset(offset) => offset,
        ResetTarget::Datetime(_) => match bounds.at_timestamp {
            Some(offset) if offset >= 0 => offset,
            _ => bounds.log_end_offset,
        },
    }
}

/// The partitions to reset: those asked for, each of which the topic must have.
fn select_partitions(
    topic: &str,
    available: &BTreeSet<i32>,
    wanted: Option<&Partitions>,
) -> Result<BTreeSet<TopicPartition>, AdminError> {
    let Some(Partitions(wanted)) = wanted else {
        return Ok(available.iter().map(|&p| TopicPartition::new(topic, p)).collect());
    };
    let missing: Vec<String> = wanted.iter().filter(|p| !available.contains(p)).map(|p| p.to_string()).collect();
    if !missing.is_empty() {
        return Err(AdminError::Usage(format!(
            "topic '{topic}' has no partition {} (it has {})",
            missing.join(", "),
            available.len()
        )));
    }
    Ok(wanted.iter().map(|&p| TopicPartition::new(topic, p)).collect())
}

fn reset_offsets(args: &ResetOffsetsArgs) -> Result<String, AdminError> {
    let group = args.group.as_str();
    validate_group(group)?;
    odradek_core::topic::validate_topic_name(&args.topic).map_err(|e| AdminError::Usage(e.message))?;
    let target = args.target()?;
    let mut cluster = args.connect.cluster();

    let description = cluster.with_coordinator(group, |c| describe(c, group))?;
    if !description.is_inactive() {
        return Err(AdminError::Refused(format!(
            "Assignments can only be reset if the group '{group}' is inactive, but the current state is {}.",
            description.state
        )));
    }

    let metadata = cluster.metadata(Some(std::slice::from_ref(&args.topic)))?;
    let topic = metadata
        .topic(&args.topic)
        .map_err(|error| AdminError::Answer { context: format!("Metadata for topic '{}'", args.topic), error })?;
    let available: BTreeSet<i32> = topic.partitions.keys().copied().collect();
    let partitions = select_partitions(&args.topic, &available, args.partitions.as_ref())?;

    let log_start = offsets_at(&mut cluster, &metadata, &partitions, EARLIEST_TIMESTAMP)?;
    let log_end = offsets_at(&mut cluster, &metadata, &partitions, LATEST_TIMESTAMP)?;
    let at_timestamp = match target {
        ResetTarget::Datetime(ms) => Some(offsets_at(&mut cluster, &metadata, &partitions, ms)?),
        _ => None,
    };
    let mut targets = BTreeMap::new();
    for tp in &partitions {
        let bounds = PartitionBounds {
            log_start_offset: log_start[tp],
            log_end_offset: log_end[tp],
            at_timestamp: at_timestamp.as_ref().map(|offsets| offsets[tp]),
        };
        targets.insert(tp.clone(), target_offset(target, bounds));
    }

    if args.dry_run {
        eprintln!("Dry run: the offsets below were not committed.");
    } else {
        cluster.with_coordinator(group, |c| commit(c, group, &targets))?;
    }
    Ok(render_targets(group, &targets))
}

/// ListOffsets for every partition; one failed partition fails the reset. The answer has an
/// entry for each partition asked for.
fn offsets_at(
    cluster: &mut Cluster,
    metadata: &messages::ClusterMetadata,
    partitions: &BTreeSet<TopicPartition>,
    timestamp: i64,
) -> Result<BTreeMap<TopicPartition, i64>, AdminError> {
    let what = match timestamp {
        EARLIEST_TIMESTAMP => "earliest".to_owned(),
        LATEST_TIMESTAMP => "latest".to_owned(),
        ms => format!("timestamp {ms}"),
    };
    let offsets = cluster.list_offsets(metadata, partitions, timestamp)?;
    assert!(partitions.iter().all(|tp| offsets.contains_key(tp)), "list_offsets left out a partition");
    offsets
        .into_iter()
        .map(|(tp, offset)| {
            offset
                .map_err(|error| AdminError::Answer { context: format!("ListOffsets ({what}) for {tp}"), error })
                .map(|offset| (tp, offset))
        })
        .collect()
}

fn commit(connection: &mut Connection, group: &str, targets: &BTreeMap<TopicPartition, i64>) -> Result<(), AdminError> {
    let (_, response) = connection.call(|v| messages::offset_commit_request(group, targets, v))?;
    let errors = messages::commit_errors(&response, targets);
    // A standalone commit is idempotent: when the coordinator moved, retry it whole.
    if let Some((_, error)) = errors.iter().find(|(_, e)| e.is_coordinator_moving()) {
        return Err(AdminError::Answer { context: format!("OffsetCommit for group '{group}'"), error: error.clone() });
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(AdminError::Refused(commit_failure(group, targets.len(), &errors))),
    }
}

fn commit_failure(group: &str, total: usize, errors: &[(TopicPartition, AnswerError)]) -> String {
    let each: Vec<String> = errors.iter().map(|(tp, e)| format!("{tp}: {e}")).collect();
    format!("OffsetCommit for group '{group}' failed for {} of {total} partitions: {}", errors.len(), each.join(", "))
}

fn render_targets(group: &str, targets: &BTreeMap<TopicPartition, i64>) -> String {
    let mut table = Table::new(["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]);
    for (tp, offset) in targets {
        table.push([group.to_owned(), tp.topic.clone(), tp.partition.to_string(), offset.to_string()]);
    }
    table.render()
}

// ---- output ----

/// Left-aligned columns as kafka-consumer-groups.sh prints them: each padded to its widest
/// cell, one space apart, no trailing blanks.
struct Table {
    columns: usize,
    header_rows: usize,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new<const N: usize>(header: [&str; N]) -> Self {
        Table { columns: N, header_rows: 1, rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    fn headless(columns: usize) -> Self {
        Table { columns, header_rows: 0, rows: Vec::new() }
    }

    fn push(&mut self, row: impl Into<Vec<String>>) {
        let row = row.into();
        assert_eq!(row.len(), self.columns, "row {row:?}");
        self.rows.push(row);
    }

    fn is_empty(&self) -> bool {
        self.rows.len() == self.header_rows
    }

    fn render(&self) -> String {
        let mut widths = vec![0; self.columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row.iter().zip(&widths).map(|(cell, &width)| format!("{cell:<width$}")).collect();
            out.push_str(line.join(" ").trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    fn parse(args: &[&str]) -> Result<GroupArgs, clap::Error> {
        GroupArgs::try_parse_from(std::iter::once("group").chain(args.iter().copied()))
    }

    fn reset_args(args: &[&str]) -> Result<ResetOffsetsArgs, clap::Error> {
        match parse(&[&["reset-offsets"], args].concat())?.command {
            GroupCommand::ResetOffsets(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    fn member(id: &str, assignment: Result<Vec<TopicPartition>, String>) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            group_instance_id: None,
            client_id: format!("client-{id}"),
            client_host: "/127.0.0.1".into(),
            assignment,
        }
    }

    fn group(state: &str, members: Vec<GroupMember>) -> GroupDescription {
        GroupDescription { state: state.into(), protocol_type: "consumer".into(), protocol: "range".into(), members }
    }

    #[test]
    fn table_pads_columns_to_the_widest_cell_without_trailing_blanks() {
        let mut table = Table::new(["GROUP", "TOPIC", "PARTITION"]);
        table.push(["a-long-group".to_owned(), "t".to_owned(), "0".to_owned()]);
        table.push(["g".to_owned(), "-".to_owned(), String::new()]);
        assert_eq!(
            table.render(),
            "GROUP        TOPIC PARTITION\n\
             a-long-group t     0\n\
             g            -\n"
        );
        assert!(!table.is_empty());
        assert!(Table::new(["A"]).is_empty());
    }

    #[test]
    fn group_list_shows_state_only_when_known() {
        let groups = BTreeMap::from([
            ("b".to_owned(), Some("Stable".to_owned())),
            ("a-group".to_owned(), Some("Empty".to_owned())),
        ]);
        assert_eq!(render_group_list(&groups), "a-group Empty\nb       Stable\n");
        let groups = BTreeMap::from([("b".to_owned(), None), ("a".to_owned(), None)]);
        assert_eq!(render_group_list(&groups), "a\nb\n");
        assert_eq!(render_group_list(&BTreeMap::new()), "");
    }

    // Kafka's describe shows assigned partitions without a commit (offset and lag "-"), and
    // committed partitions nobody owns (consumer columns "-").
    #[test]
    fn describe_offsets_cover_committed_and_assigned_partitions() {
        let members = vec![member("m1", Ok(vec![tp("t", 0), tp("t", 1)])), member("m2", Ok(vec![]))];
        let committed = BTreeMap::from([(tp("t", 0), 5), (tp("old", 0), 3)]);
        let log_ends = BTreeMap::from([
            (tp("t", 0), Ok(8)),
            (tp("t", 1), Ok(2)),
            (tp("old", 0), Err(AnswerError::code(kafka_protocol::ResponseError::UnknownTopicOrPartition))),
        ]);
        let out = render_description("g", &group("Stable", members), &committed, &log_ends);
        assert_eq!(
            out,
            "GROUP STATE  PROTOCOL-TYPE PROTOCOL #MEMBERS\n\
             g     Stable consumer      range    2\n\
             \n\
             GROUP CONSUMER-ID GROUP-INSTANCE-ID HOST       CLIENT-ID #PARTITIONS ASSIGNMENT\n\
             g     m1          -                 /127.0.0.1 client-m1 2           t(0,1)\n\
             g     m2          -                 /127.0.0.1 client-m2 0           -\n\
             \n\
             GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST       CLIENT-ID\n\
             g     old   0         3              -              -   -           -          -\n\
             g     t     0         5              8              3   m1          /127.0.0.1 client-m1\n\
             g     t     1         -              2              -   m1          /127.0.0.1 client-m1\n\
             g     -     -         -              -              -   m2          /127.0.0.1 client-m2\n"
        );
    }

    #[test]
    fn describe_of_an_empty_group_shows_its_commits_and_says_it_has_no_members() {
        let description =
            GroupDescription { protocol_type: String::new(), protocol: String::new(), ..group("Empty", vec![]) };
        let committed = BTreeMap::from([(tp("t", 0), 4)]);
        let log_ends = BTreeMap::from([(tp("t", 0), Ok(4))]);
        let out = render_description("g", &description, &committed, &log_ends);
        assert_eq!(
            out,
            "GROUP STATE PROTOCOL-TYPE PROTOCOL #MEMBERS\n\
             g     Empty -             -        0\n\
             \n\
             GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID\n\
             g     t     0         4              4              0   -           -    -\n"
        );
        assert_eq!(describe_notes("g", &description), ["Consumer group 'g' has no active members."]);
        let rebalancing = group("PreparingRebalance", vec![member("m1", Err("bad bytes".into()))]);
        assert_eq!(
            describe_notes("g", &rebalancing),
            [
                "Warning: consumer group 'g' is rebalancing.",
                "Warning: the assignment of member m1 does not decode: bad bytes",
            ]
        );
    }

    #[test]
    fn assignments_print_grouped_by_topic() {
        assert_eq!(format_assignment(&[tp("a", 0), tp("a", 2), tp("b", 1)]), "a(0,2),b(1)");
        assert_eq!(format_assignment(&[]), "-");
    }

    #[test]
    fn reset_targets_follow_kafka() {
        let bounds = PartitionBounds { log_start_offset: 10, log_end_offset: 20, at_timestamp: None };
        assert_eq!(target_offset(ResetTarget::Earliest, bounds), 10);
        assert_eq!(target_offset(ResetTarget::Latest, bounds), 20);
        assert_eq!(target_offset(ResetTarget::Offset(15), bounds), 15);
        assert_eq!(target_offset(ResetTarget::Offset(10), bounds), 10);
        assert_eq!(target_offset(ResetTarget::Offset(20), bounds), 20);
        // Clamped into [log start, log end], as Kafka's checkOffsetsRange.
        assert_eq!(target_offset(ResetTarget::Offset(3), bounds), 10);
        assert_eq!(target_offset(ResetTarget::Offset(99), bounds), 20);
        let at = |offset| PartitionBounds { at_timestamp: Some(offset), ..bounds };
        assert_eq!(target_offset(ResetTarget::Datetime(1_700_000_000_000), at(12)), 12);
        // No record at or after the time: the log end.
        assert_eq!(target_offset(ResetTarget::Datetime(1_700_000_000_000), at(-1)), 20);
        // An empty log.
        let empty = PartitionBounds { log_start_offset: 0, log_end_offset: 0, at_timestamp: Some(-1) };
        for target in [ResetTarget::Earliest, ResetTarget::Latest, ResetTarget::Offset(5), ResetTarget::Datetime(0)] {
            assert_eq!(target_offset(target, empty), 0, "{target:?}");
        }
    }

    #[test]
    fn reset_table_and_commit_failure_lines() {
        let targets = BTreeMap::from([(tp("t", 1), 7), (tp("t", 0), 12)]);
        assert_eq!(
            render_targets("g", &targets),
            "GROUP TOPIC PARTITION NEW-OFFSET\n\
             g     t     0         12\n\
             g     t     1         7\n"
        );
        let errors = [
            (tp("t", 0), AnswerError::code(kafka_protocol::ResponseError::UnknownMemberId)),
            (tp("t", 1), AnswerError::Incomplete("missing from the answer".into())),
        ];
        assert_eq!(
            commit_failure("g", 3, &errors),
            "OffsetCommit for group 'g' failed for 2 of 3 partitions: t-0: UNKNOWN_MEMBER_ID (25), \
             t-1: missing from the answer"
        );
    }

    #[test]
    fn reset_needs_exactly_one_target() {
        let base = ["g", "--topic", "t"];
        assert_eq!(
            reset_args(&[&base[..], &["--to-earliest"]].concat()).unwrap().target().unwrap(),
            ResetTarget::Earliest
        );
        assert_eq!(reset_args(&[&base[..], &["--to-latest"]].concat()).unwrap().target().unwrap(), ResetTarget::Latest);
        assert_eq!(
            reset_args(&[&base[..], &["--to-offset", "5"]].concat()).unwrap().target().unwrap(),
            ResetTarget::Offset(5)
        );
        assert_eq!(
            reset_args(&[&base[..], &["--to-datetime", "1700000000000"]].concat()).unwrap().target().unwrap(),
            ResetTarget::Datetime(1_700_000_000_000)
        );
        assert!(reset_args(&base).is_err());
        assert!(reset_args(&[&base[..], &["--to-earliest", "--to-latest"]].concat()).is_err());
        assert!(reset_args(&[&base[..], &["--to-offset", "5", "--to-datetime", "0"]].concat()).is_err());
        // Negative values are ListOffsets' special timestamps, not offsets or times.
        assert!(reset_args(&[&base[..], &["--to-offset", "-1"]].concat()).is_err());
        assert!(reset_args(&[&base[..], &["--to-datetime", "-2"]].concat()).is_err());
        // --topic and the group are required.
        assert!(reset_args(&["g", "--to-earliest"]).is_err());
        assert!(reset_args(&["--topic", "t", "--to-earliest"]).is_err());
    }

    #[test]
    fn reset_arguments_parse_with_defaults() {
        let args = reset_args(&["g", "--topic", "t", "--to-latest", "--partitions", "2, 0,2", "--dry-run"]).unwrap();
        assert_eq!(args.partitions, Some(Partitions(vec![0, 2])));
        assert!(args.dry_run);
        assert_eq!(args.connect.bootstrap_server, Bootstrap(vec!["127.0.0.1:9092".into()]));
        assert_eq!(args.connect.timeout_ms, 30_000);
        assert!(reset_args(&["g", "--topic", "t", "--to-latest", "--partitions", "0,-1"]).is_err());
        assert!(reset_args(&["g", "--topic", "t", "--to-latest", "--partitions", "0,,1"]).is_err());
        assert!(reset_args(&["g", "--topic", "t", "--to-latest", "--partitions", ""]).is_err());
        assert!(reset_args(&["g", "--topic", "t", "--to-latest", "--timeout-ms", "0"]).is_err());
    }

    #[test]
    fn bootstrap_servers_are_host_port_lists() {
        assert_eq!(parse_bootstrap("a:1,b:2"), Ok(Bootstrap(vec!["a:1".into(), "b:2".into()])));
        assert_eq!(parse_bootstrap("[::1]:9092"), Ok(Bootstrap(vec!["[::1]:9092".into()])));
        for bad in ["", "host", "host:", ":9092", "host:0", "host:70000", "a:1,", "a:x"] {
            assert!(parse_bootstrap(bad).is_err(), "{bad:?}");
        }
        let args = parse(&["describe", "g", "--bootstrap-server", "10.0.0.1:9093"]).unwrap();
        assert!(matches!(args.command, GroupCommand::Describe { ref group, ref connect }
            if group == "g" && connect.bootstrap_server == Bootstrap(vec!["10.0.0.1:9093".into()])));
        assert!(matches!(parse(&["list"]).unwrap().command, GroupCommand::List { .. }));
        assert!(parse(&["describe"]).is_err());
    }

    #[test]
    fn partition_selection_checks_the_topic_has_them() {
        let available = BTreeSet::from([0, 1, 2]);
        let all = select_partitions("t", &available, None).unwrap();
        assert_eq!(all, BTreeSet::from([tp("t", 0), tp("t", 1), tp("t", 2)]));
        let some = select_partitions("t", &available, Some(&Partitions(vec![2]))).unwrap();
        assert_eq!(some, BTreeSet::from([tp("t", 2)]));
        let error = select_partitions("t", &available, Some(&Partitions(vec![1, 3, 4]))).unwrap_err();
        assert_eq!(error.to_string(), "topic 't' has no partition 3, 4 (it has 3)");
    }

    #[test]
    fn errors_print_as_one_line() {
        let closed = AdminError::Closed { addr: "127.0.0.1:9092".into(), api_key: ApiKey::ListGroups, version: 4 };
        assert_eq!(
            closed.to_string(),
            "the broker at 127.0.0.1:9092 closed the connection instead of answering ListGroups v4 \
             (it may not support that API)"
        );
        let answer = AdminError::Answer {
            context: "DescribeGroups for group 'g'".into(),
            error: AnswerError::code(kafka_protocol::ResponseError::CoordinatorLoadInProgress),
        };
        assert_eq!(answer.to_string(), "DescribeGroups for group 'g': COORDINATOR_LOAD_IN_PROGRESS (14)");
        assert!(answer.is_coordinator_moving());
        assert!(validate_group("").is_err());
    }
}
