//! `odradek log-dirs`: each broker's log directories and the size of every partition in them,
//! after Kafka's `kafka-log-dirs.sh --describe`, whose JSON this prints by default.
//!
//! DescribeLogDirs (KIP-113) goes to every broker in the Metadata (or those in
//! `--broker-list`); with `--topic-list` it names every partition of those topics, so that
//! brokers answer only for them.

use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use serde_json::json;

use super::messages::{check, error_name, s, AnswerError};
use super::{AdminError, ConnectArgs, Output, Table};

/// Log directories per broker, and the partitions in them.
#[derive(Parser, Debug)]
pub struct LogDirsArgs {
    /// Describe the log directories (the only action, as in Kafka's tool).
    #[arg(long, required = true)]
    describe: bool,
    /// Only these topics, separated by commas.
    #[arg(long, value_name = "TOPIC[,TOPIC...]", value_delimiter = ',')]
    topic_list: Vec<String>,
    /// Only these brokers, by id, separated by commas.
    #[arg(long, value_name = "ID[,ID...]", value_delimiter = ',')]
    broker_list: Vec<i32>,
    /// json (what kafka-log-dirs.sh prints) or human (a table).
    #[arg(long, value_enum, default_value_t = Output::Json)]
    output: Output,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// One log directory of one broker.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LogDir {
    path: String,
    error: Option<AnswerError>,
    partitions: Vec<PartitionDir>,
    /// -1 when the broker does not say (before v4, or no statvfs).
    total_bytes: i64,
    usable_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PartitionDir {
    topic: String,
    partition: i32,
    size: i64,
    offset_lag: i64,
    is_future: bool,
}

/// Runs a `log-dirs` command; returns the process exit status.
pub fn run(args: LogDirsArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

fn execute(args: &LogDirsArgs) -> Result<String, AdminError> {
    let mut cluster = args.connect.cluster();
    let topics: Vec<String> = args.topic_list.iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
    let metadata = cluster.metadata(if topics.is_empty() { Some(&[]) } else { Some(&topics) })?;
    let wanted = match topics.is_empty() {
        true => None,
        // Topics the cluster does not have have no log dirs: nothing to ask for them, as
        // Kafka's tool shows nothing for them.
        false => Some(
            topics
                .iter()
                .filter_map(|t| metadata.topic(t).ok().map(|meta| (t.clone(), meta.partitions.keys().copied().collect())))
                .collect::<BTreeMap<String, Vec<i32>>>(),
        ),
    };
    let mut brokers = metadata.brokers.clone();
    if !args.broker_list.is_empty() {
        let listed: BTreeSet<i32> = args.broker_list.iter().copied().collect();
        if let Some(missing) = listed.iter().find(|id| !brokers.contains_key(id)) {
            return Err(AdminError::Refused(format!("broker {missing} is not in the cluster metadata")));
        }
        brokers.retain(|id, _| listed.contains(id));
    }
    eprintln!("Querying brokers for log directories information");
    let mut described: BTreeMap<i32, Vec<LogDir>> = BTreeMap::new();
    for (id, addr) in &brokers {
        let (version, response) = cluster.connection(addr)?.call(|v| describe_log_dirs_request(wanted.as_ref(), v))?;
        let dirs = log_dirs(response, version)
            .map_err(|error| AdminError::Answer { context: format!("DescribeLogDirs at broker {id} ({addr})"), error })?;
        described.insert(*id, dirs);
    }
    let ids: Vec<String> = described.keys().map(i32::to_string).collect();
    eprintln!("Received log directory information from brokers {}", ids.join(","));
    Ok(match args.output {
        Output::Json => format!("{}\n", to_json(&described)),
        Output::Human => render(&described),
    })
}

/// `topics: None` asks for every partition (a null list); a topic with no partition listed
/// would ask for none of it.
fn describe_log_dirs_request(topics: Option<&BTreeMap<String, Vec<i32>>>, _version: i16) -> DescribeLogDirsRequest {
    let topics = topics.map(|topics| {
        topics
            .iter()
            .map(|(name, partitions)| DescribableLogDirTopic::default().with_topic(TopicName(s(name))).with_partitions(partitions.clone()))
            .collect()
    });
    DescribeLogDirsRequest::default().with_topics(topics)
}

fn log_dirs(response: DescribeLogDirsResponse, version: i16) -> Result<Vec<LogDir>, AnswerError> {
    // v3+ carries a top-level error (KIP-784); before, a refused request has no result.
    if version >= 3 {
        check(response.error_code, None)?;
    }
    let mut dirs: Vec<LogDir> = response
        .results
        .into_iter()
        .map(|r| {
            let mut partitions: Vec<PartitionDir> = r
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(|p| PartitionDir {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        size: p.partition_size,
                        offset_lag: p.offset_lag,
                        is_future: p.is_future_key,
                    })
                })
                .collect();
            partitions.sort_by(|a, b| (&a.topic, a.partition, a.is_future).cmp(&(&b.topic, b.partition, b.is_future)));
            LogDir {
                path: r.log_dir.to_string(),
                error: check(r.error_code, None).err(),
                partitions,
                total_bytes: if version >= 4 { r.total_bytes } else { -1 },
                usable_bytes: if version >= 4 { r.usable_bytes } else { -1 },
            }
        })
        .collect();
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(dirs)
}

/// Kafka's `kafka-log-dirs.sh` JSON (`version` 1, camel-case keys, partitions as `topic-N`),
/// with the volume sizes (KIP-827) added to each log dir.
fn to_json(described: &BTreeMap<i32, Vec<LogDir>>) -> serde_json::Value {
    let brokers: Vec<serde_json::Value> = described
        .iter()
        .map(|(id, dirs)| {
            json!({
                "broker": id,
                "logDirs": dirs.iter().map(|d| json!({
                    "logDir": d.path,
                    "error": d.error.as_ref().map(|e| match e {
                        AnswerError::Broker { code, .. } => error_name(*code),
                        other => other.to_string(),
                    }),
                    "totalBytes": d.total_bytes,
                    "usableBytes": d.usable_bytes,
                    "partitions": d.partitions.iter().map(|p| json!({
                        "partition": format!("{}-{}", p.topic, p.partition),
                        "size": p.size,
                        "offsetLag": p.offset_lag,
                        "isFuture": p.is_future,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "version": 1, "brokers": brokers })
}

fn render(described: &BTreeMap<i32, Vec<LogDir>>) -> String {
    let mut table = Table::new(["BROKER", "LOG-DIR", "TOPIC", "PARTITION", "SIZE", "OFFSET-LAG", "IS-FUTURE"]);
    for (id, dirs) in described {
        for dir in dirs {
            if let Some(error) = &dir.error {
                table.push([id.to_string(), dir.path.clone(), format!("error: {error}"), "-".into(), "-".into(), "-".into(), "-".into()]);
            }
            for p in &dir.partitions {
                table.push([
                    id.to_string(),
                    dir.path.clone(),
                    p.topic.clone(),
                    p.partition.to_string(),
                    p.size.to_string(),
                    p.offset_lag.to_string(),
                    p.is_future.to_string(),
                ]);
            }
        }
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_log_dirs_response::{DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic};
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
        let mut buf = bytes::BytesMut::new();
        message.encode(&mut buf, version).unwrap();
        M::decode(&mut buf.freeze(), version).unwrap()
    }

    #[test]
    fn log_dirs_read_back_in_every_version_and_print_as_kafka_does() {
        let wanted = BTreeMap::from([("t".to_owned(), vec![0, 1])]);
        let response = DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
            .with_log_dir(s("/data"))
            .with_total_bytes(1000)
            .with_usable_bytes(400)
            .with_topics(vec![DescribeLogDirsTopic::default().with_name(TopicName(s("t"))).with_partitions(vec![
                DescribeLogDirsPartition::default().with_partition_index(1).with_partition_size(20),
                DescribeLogDirsPartition::default().with_partition_index(0).with_partition_size(10),
            ])])]);
        let (min, max) = super::super::messages::client_versions(ApiKey::DescribeLogDirs).unwrap();
        for version in min..=max {
            let request = round_trip(&describe_log_dirs_request(Some(&wanted), version), version);
            let topics = request.topics.unwrap();
            assert_eq!((topics[0].topic.as_str(), &topics[0].partitions[..]), ("t", &[0, 1][..]));
            assert_eq!(round_trip(&describe_log_dirs_request(None, version), version).topics, None);
            let dirs = log_dirs(round_trip(&response, version), version).unwrap();
            assert_eq!(dirs[0].partitions.iter().map(|p| (p.partition, p.size)).collect::<Vec<_>>(), [(0, 10), (1, 20)]);
            assert_eq!(dirs[0].total_bytes, if version >= 4 { 1000 } else { -1 });
        }
        let described = BTreeMap::from([(1, log_dirs(response, 4).unwrap())]);
        assert_eq!(
            to_json(&described).to_string(),
            r#"{"brokers":[{"broker":1,"logDirs":[{"error":null,"logDir":"/data","partitions":[{"isFuture":false,"offsetLag":0,"partition":"t-0","size":10},{"isFuture":false,"offsetLag":0,"partition":"t-1","size":20}],"totalBytes":1000,"usableBytes":400}]}],"version":1}"#
        );
        assert_eq!(
            render(&described),
            "BROKER LOG-DIR TOPIC PARTITION SIZE OFFSET-LAG IS-FUTURE\n\
             1      /data   t     0         10   0          false\n\
             1      /data   t     1         20   0          false\n"
        );
        let refused = DescribeLogDirsResponse::default().with_error_code(31);
        assert_eq!(log_dirs(refused, 3).unwrap_err().to_string(), "CLUSTER_AUTHORIZATION_FAILED (31)");
    }
}
