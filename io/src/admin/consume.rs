//! `odradek consume`: a topic's records to stdout, one value per line, after Kafka's
//! `kafka-console-consumer.sh`.
//!
//! No consumer group: every partition (or `--partition`) is read from its leader with Fetch,
//! from the log end, the log start with `--from-beginning`, or `--offset`. It stops after
//! `--max-messages`, or once no record came for `--timeout-ms`, and then says on stderr how
//! many it printed, as Kafka's tool does; without either it reads until interrupted.
//! `--property print.key=true` (and `print.offset`, `print.partition`, `print.timestamp`,
//! `key.separator`) shape each line as Kafka's `DefaultMessageFormatter`.
//!
//! Record batches are read with the broker's own bounded readers (`odradek_core::batch` and
//! `validate`): each batch's CRC is checked and a compressed one inflated under a limit.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::ResponseError;
use odradek_core::batch::{scan_headers, validate_stored_batch, HEADER_LEN};
use odradek_core::validate;

use super::client::Cluster;
use super::messages::{check, s, AnswerError, ClusterMetadata, EARLIEST_TIMESTAMP, LATEST_TIMESTAMP};
use super::{parse_bootstrap, AdminError, Bootstrap, TopicPartition};

/// How long a Fetch waits at the leader for records (Kafka's `fetch.max.wait.ms`).
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Kafka's `fetch.max.bytes` and `max.partition.fetch.bytes` defaults.
const FETCH_MAX_BYTES: i32 = 50 * 1024 * 1024;
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A topic's records to stdout.
#[derive(Parser, Debug)]
pub struct ConsumeArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// Start at the log start instead of the log end.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Only this partition.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Where to start in `--partition`: an offset, `earliest` or `latest`.
    #[arg(long, requires = "partition", value_parser = parse_start, allow_hyphen_values = true)]
    offset: Option<Start>,
    /// Stop after this many records.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_messages: Option<u64>,
    /// Stop once no record came for this long.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// How each record prints: `print.key`, `print.offset`, `print.partition`,
    /// `print.timestamp`, `print.value` (true/false), `key.separator` (default a tab).
    /// Repeatable.
    #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// The brokers to bootstrap from.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]", default_value = "127.0.0.1:9092", value_parser = parse_bootstrap)]
    bootstrap_server: Bootstrap,
    /// How long to wait for a connection or an answer.
    #[arg(long, value_name = "MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        _ => match text.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
            _ => Err(format!("{text:?} is not an offset, earliest or latest")),
        },
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not name=value")),
    }
}

/// Kafka's `DefaultMessageFormatter`: the parts asked for, in its order, separated by
/// `key.separator`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Formatter {
    print_timestamp: bool,
    print_partition: bool,
    print_offset: bool,
    print_key: bool,
    print_value: bool,
    separator: Vec<u8>,
}

impl Formatter {
    fn new(properties: &[(String, String)]) -> Result<Self, AdminError> {
        let mut f = Formatter {
            print_timestamp: false,
            print_partition: false,
            print_offset: false,
            print_key: false,
            print_value: true,
            separator: b"\t".to_vec(),
        };
        for (name, value) in properties {
            let flag = || match value.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(AdminError::Usage(format!("{name} must be true or false, not {value:?}"))),
            };
            match name.as_str() {
                "print.timestamp" => f.print_timestamp = flag()?,
                "print.partition" => f.print_partition = flag()?,
                "print.offset" => f.print_offset = flag()?,
                "print.key" => f.print_key = flag()?,
                "print.value" => f.print_value = flag()?,
                "key.separator" => f.separator = value.as_bytes().to_vec(),
                other => {
                    return Err(AdminError::Usage(format!(
                        "unknown property {other:?} (known: print.key, print.value, print.offset, print.partition, \
                         print.timestamp, key.separator)"
                    )))
                }
            }
        }
        Ok(f)
    }

    fn write(&self, out: &mut Vec<u8>, record: &ConsumedRecord) {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        if self.print_timestamp {
            let kind = if record.log_append_time { "LogAppendTime" } else { "CreateTime" };
            parts.push(format!("{kind}:{}", record.timestamp).into_bytes());
        }
        if self.print_partition {
            parts.push(format!("Partition:{}", record.partition).into_bytes());
        }
        if self.print_offset {
            parts.push(format!("Offset:{}", record.offset).into_bytes());
        }
        let or_null = |b: &Option<Bytes>| b.as_ref().map_or(b"null".to_vec(), |b| b.to_vec());
        if self.print_key {
            parts.push(or_null(&record.key));
        }
        if self.print_value {
            parts.push(or_null(&record.value));
        }
        out.extend(parts.join(&self.separator[..]));
        out.push(b'\n');
    }
}

/// One record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConsumedRecord {
    partition: i32,
    offset: i64,
    timestamp: i64,
    log_append_time: bool,
    key: Option<Bytes>,
    value: Option<Bytes>,
}

/// The records of the whole batches in `records` at or after `from`, and the offset to fetch
/// next (past the last whole batch, control batches included). A trailing partial batch is
/// left for the next fetch, as Kafka's consumers do.
fn decode_records(partition: i32, records: &Bytes, from: i64) -> Result<(Vec<ConsumedRecord>, i64), String> {
    let mut out = Vec::new();
    let mut next = from;
    for (position, header) in scan_headers(records) {
        let batch = &records[position..position + header.total_len()];
        validate_stored_batch(batch).map_err(|e| format!("the batch at offset {}: {e}", header.base_offset))?;
        next = next.max(header.next_offset());
        if header.is_control() || header.next_offset() <= from {
            continue;
        }
        let section = validate::inflate(header.compression_codec(), &batch[HEADER_LEN..], validate::STORED_INFLATE_LIMIT)
            .map_err(|e| format!("the batch at offset {}: {e}", header.base_offset))?;
        for record in validate::Records::new(&section) {
            let record = record.map_err(|e| format!("a record of the batch at offset {}: {e}", header.base_offset))?;
            let offset = header.base_offset + i64::from(record.offset_delta);
            if offset < from {
                continue;
            }
            let timestamp = match header.is_log_append_time() {
                true => header.max_timestamp,
                false => header.base_timestamp.wrapping_add(record.timestamp_delta),
            };
            out.push(ConsumedRecord {
                partition,
                offset,
                timestamp,
                log_append_time: header.is_log_append_time(),
                key: record.key.map(Bytes::copy_from_slice),
                value: record.value.map(Bytes::copy_from_slice),
            });
        }
    }
    Ok((out, next))
}

/// Runs a `consume` command; returns the process exit status.
pub fn run(args: ConsumeArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

fn execute(args: &ConsumeArgs) -> Result<String, AdminError> {
    odradek_core::topic::validate_topic_name(&args.topic).map_err(|e| AdminError::Usage(e.message))?;
    let formatter = Formatter::new(&args.properties)?;
    let mut consumer = Consumer::new(args)?;
    let mut printed = 0u64;
    let idle = args.timeout_ms.map(Duration::from_millis);
    let mut last_record = Instant::now();
    let mut stdout = std::io::stdout().lock();
    loop {
        let records = consumer.poll()?;
        let mut out = Vec::new();
        for record in &records {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            formatter.write(&mut out, record);
            printed += 1;
        }
        if !records.is_empty() {
            last_record = Instant::now();
        }
        // A closed pipe (`| head`) ends the command quietly.
        if stdout.write_all(&out).and_then(|()| stdout.flush()).is_err() {
            break;
        }
        if args.max_messages.is_some_and(|max| printed >= max) || idle.is_some_and(|idle| last_record.elapsed() >= idle) {
            break;
        }
    }
    eprintln!("Processed a total of {printed} messages");
    Ok(String::new())
}

/// Reads the partitions from their leaders, each from its own position.
struct Consumer {
    cluster: Cluster,
    topic: String,
    metadata: ClusterMetadata,
    /// Next offset to fetch, per partition.
    positions: BTreeMap<TopicPartition, i64>,
    /// Where a partition whose position left the log starts again (Kafka's
    /// `auto.offset.reset`).
    reset_to: i64,
    deadline_retries: Duration,
}

impl Consumer {
    fn new(args: &ConsumeArgs) -> Result<Self, AdminError> {
        let timeout = Duration::from_millis(args.request_timeout_ms);
        let mut cluster = Cluster::new(args.bootstrap_server.0.clone(), timeout);
        let metadata = cluster.metadata(Some(std::slice::from_ref(&args.topic)))?;
        let topic = metadata
            .topic(&args.topic)
            .map_err(|error| AdminError::Answer { context: format!("Metadata for topic '{}'", args.topic), error })?;
        let partitions: Vec<i32> = match args.partition {
            Some(p) if topic.partitions.contains_key(&p) => vec![p],
            Some(p) => {
                return Err(AdminError::Usage(format!("topic '{}' has no partition {p} (it has {})", args.topic, topic.partitions.len())))
            }
            None => topic.partitions.keys().copied().collect(),
        };
        let start = match (args.offset, args.from_beginning) {
            (Some(start), _) => start,
            (None, true) => Start::Earliest,
            (None, false) => Start::Latest,
        };
        let reset_to = if args.from_beginning { EARLIEST_TIMESTAMP } else { LATEST_TIMESTAMP };
        let tps: std::collections::BTreeSet<TopicPartition> = partitions.iter().map(|&p| TopicPartition::new(&args.topic, p)).collect();
        let positions = match start {
            Start::Offset(offset) => tps.into_iter().map(|tp| (tp, offset)).collect(),
            Start::Earliest | Start::Latest => {
                let timestamp = if start == Start::Earliest { EARLIEST_TIMESTAMP } else { LATEST_TIMESTAMP };
                let listed = cluster.list_offsets(&metadata, &tps, timestamp)?;
                let mut positions = BTreeMap::new();
                for (tp, offset) in listed {
                    let offset = offset.map_err(|error| AdminError::Answer { context: format!("ListOffsets for {tp}"), error })?;
                    positions.insert(tp, offset);
                }
                positions
            }
        };
        Ok(Consumer { cluster, topic: args.topic.clone(), metadata, positions, reset_to, deadline_retries: timeout })
    }

    /// One Fetch per leader; the records read, in partition order.
    fn poll(&mut self) -> Result<Vec<ConsumedRecord>, AdminError> {
        let (by_leader, leaderless) = self.metadata.by_leader(self.positions.keys());
        let mut stale = !leaderless.is_empty();
        let mut records = Vec::new();
        // Several leaders are asked one after the other: each waits less, so that the others'
        // records are not held back.
        let max_wait_ms = FETCH_MAX_WAIT_MS / i32::try_from(by_leader.len().max(1)).unwrap_or(i32::MAX);
        for (addr, partitions) in by_leader {
            let wanted: Vec<(i32, i64)> = partitions.iter().map(|tp| (tp.partition, self.positions[tp])).collect();
            let (_, response) = self.cluster.connection(&addr)?.call(|v| fetch_request(&self.topic, &wanted, max_wait_ms.max(10), v))?;
            check(response.error_code, None).map_err(|error| AdminError::Answer { context: format!("Fetch at {addr}"), error })?;
            for (partition, answer) in fetched(response, &self.topic) {
                let tp = TopicPartition::new(&self.topic, partition);
                let Some(&position) = self.positions.get(&tp) else { continue };
                match answer {
                    Ok(bytes) => {
                        let (read, next) = decode_records(partition, &bytes, position)
                            .map_err(|e| AdminError::Refused(format!("Fetch from {tp} at {addr}: {e}")))?;
                        records.extend(read);
                        self.positions.insert(tp, next);
                    }
                    Err(e) if e.is(ResponseError::OffsetOutOfRange) => {
                        let reset = self.cluster.list_offsets(&self.metadata, &[tp.clone()].into(), self.reset_to)?;
                        let offset = reset[&tp]
                            .clone()
                            .map_err(|error| AdminError::Answer { context: format!("ListOffsets for {tp}"), error })?;
                        self.positions.insert(tp, offset);
                    }
                    Err(AnswerError::Broker { code, .. })
                        if ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable()) =>
                    {
                        stale = true;
                    }
                    Err(error) => return Err(AdminError::Answer { context: format!("Fetch from {tp} at {addr}"), error }),
                }
            }
        }
        if stale {
            // A leader moved or is being elected: learn the new one, within the request timeout.
            let deadline = Instant::now() + self.deadline_retries;
            std::thread::sleep(RETRY_BACKOFF);
            loop {
                self.metadata = self.cluster.metadata(Some(std::slice::from_ref(&self.topic)))?;
                let (_, leaderless) = self.metadata.by_leader(self.positions.keys());
                match leaderless.into_iter().next() {
                    None => break,
                    Some((tp, error)) if Instant::now() + RETRY_BACKOFF >= deadline => {
                        return Err(AdminError::Answer { context: format!("Metadata for {tp}"), error })
                    }
                    Some(_) => std::thread::sleep(RETRY_BACKOFF),
                }
            }
        }
        Ok(records)
    }
}

/// A sessionless consumer Fetch (read_uncommitted, as the console consumer's default).
fn fetch_request(topic: &str, partitions: &[(i32, i64)], max_wait_ms: i32, _version: i16) -> FetchRequest {
    let partitions = partitions
        .iter()
        .map(|&(partition, offset)| {
            FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(PARTITION_MAX_BYTES)
        })
        .collect();
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(s(topic))).with_partitions(partitions)])
}

/// Per partition of `topic`, its records or its error.
fn fetched(response: FetchResponse, topic: &str) -> Vec<(i32, Result<Bytes, AnswerError>)> {
    response
        .responses
        .into_iter()
        .filter(|t| t.topic.as_str() == topic)
        .flat_map(|t| t.partitions)
        .map(|p| (p.partition_index, check(p.error_code, None).map(|()| p.records.unwrap_or_default())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use kafka_protocol::records::Compression;
    use odradek_core::records::encode_records;

    fn parse(args: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        ConsumeArgs::try_parse_from(std::iter::once("consume").chain(args.iter().copied()))
    }

    /// A batch as a leader stores it: offsets from `base`.
    fn stored(base: i64, records: &[(Option<&str>, Option<&str>)], compression: Compression) -> Vec<u8> {
        let owned: Vec<(Option<Bytes>, Option<Bytes>)> = records
            .iter()
            .map(|(k, v)| (k.map(|k| Bytes::copy_from_slice(k.as_bytes())), v.map(|v| Bytes::copy_from_slice(v.as_bytes()))))
            .collect();
        let mut batch = encode_records(&owned, 1_000, compression).to_vec();
        let mut parsed = odradek_core::batch::validate_records(&batch, 1 << 20).unwrap();
        odradek_core::batch::assign_offsets(&mut batch, &mut parsed, base, 0, None);
        batch
    }

    #[test]
    fn records_decode_from_whole_batches_at_or_after_the_position() {
        let mut log = stored(0, &[(Some("k0"), Some("v0")), (None, Some("v1"))], Compression::None);
        log.extend(stored(2, &[(None, None), (Some("k3"), Some("v3"))], Compression::Gzip));
        let whole = log.len();
        // A partial batch at the end is left for the next fetch.
        log.extend(&stored(4, &[(None, Some("v4"))], Compression::None)[..30]);
        let (records, next) = decode_records(3, &Bytes::from(log.clone()), 1).unwrap();
        let read: Vec<_> = records.iter().map(|r| (r.offset, r.key.clone(), r.value.clone())).collect();
        let bytes = |b: &'static str| Some(Bytes::from_static(b.as_bytes()));
        assert_eq!(read, [(1, None, bytes("v1")), (2, None, None), (3, bytes("k3"), bytes("v3"))]);
        assert_eq!(next, 4);
        assert_eq!((records[0].partition, records[0].timestamp), (3, 1_001));
        // Nothing whole: the position stays.
        assert_eq!(decode_records(0, &Bytes::from(log[whole..].to_vec()), 4).unwrap(), (vec![], 4));
        // A flipped byte fails the CRC.
        let mut corrupt = log[..whole].to_vec();
        corrupt[70] ^= 1;
        assert!(decode_records(0, &Bytes::from(corrupt), 0).unwrap_err().contains("the batch at offset 0"));
    }

    #[test]
    fn lines_print_as_the_default_message_formatter() {
        let record = ConsumedRecord {
            partition: 2,
            offset: 7,
            timestamp: 1_000,
            log_append_time: false,
            key: None,
            value: Some(Bytes::from_static(b"hello")),
        };
        let mut out = Vec::new();
        Formatter::new(&[]).unwrap().write(&mut out, &record);
        assert_eq!(out, b"hello\n");
        let all = [
            ("print.key".to_owned(), "true".to_owned()),
            ("print.offset".to_owned(), "true".to_owned()),
            ("print.partition".to_owned(), "true".to_owned()),
            ("print.timestamp".to_owned(), "true".to_owned()),
            ("key.separator".to_owned(), " | ".to_owned()),
        ];
        let mut out = Vec::new();
        Formatter::new(&all).unwrap().write(&mut out, &record);
        assert_eq!(String::from_utf8(out).unwrap(), "CreateTime:1000 | Partition:2 | Offset:7 | null | hello\n");
        assert!(Formatter::new(&[("print.keys".into(), "true".into())]).is_err());
    }

    #[test]
    fn arguments_follow_the_console_consumer() {
        let args = parse(&["--topic", "t", "--from-beginning", "--max-messages", "10", "--timeout-ms", "500"]).unwrap();
        assert!(args.from_beginning);
        assert_eq!((args.max_messages, args.timeout_ms), (Some(10), Some(500)));
        assert_eq!(parse(&["--topic", "t", "--partition", "1", "--offset", "5"]).unwrap().offset, Some(Start::Offset(5)));
        assert_eq!(parse(&["--topic", "t", "--partition", "1", "--offset", "earliest"]).unwrap().offset, Some(Start::Earliest));
        // Kafka: "The partition is required when offset is specified."
        assert!(parse(&["--topic", "t", "--offset", "5"]).is_err());
        assert!(parse(&["--topic", "t", "--partition", "0", "--offset", "-1"]).is_err());
        assert!(parse(&["--topic", "t", "--partition", "0", "--offset", "5", "--from-beginning"]).is_err());
        assert!(parse(&["--topic", "t", "--max-messages", "0"]).is_err());
    }

    #[test]
    fn fetch_goes_out_sessionless_in_every_version_and_answers_read_per_partition() {
        let (min, max) = super::super::messages::client_versions(ApiKey::Fetch).unwrap();
        for version in min..=max {
            let request = fetch_request("t", &[(0, 5), (1, 9)], 250, version);
            let mut buf = bytes::BytesMut::new();
            request.encode(&mut buf, version).unwrap();
            let decoded = FetchRequest::decode(&mut buf.freeze(), version).unwrap();
            let asked: Vec<(i32, i64)> = decoded.topics[0].partitions.iter().map(|p| (p.partition, p.fetch_offset)).collect();
            assert_eq!(asked, [(0, 5), (1, 9)], "v{version}");
            assert_eq!((decoded.replica_id, decoded.max_wait_ms, decoded.isolation_level), (BrokerId(-1), 250, 0));
        }
        let response = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(s("t")))
            .with_partitions(vec![
                PartitionData::default().with_partition_index(0).with_records(Some(Bytes::from_static(b"xy"))),
                PartitionData::default().with_partition_index(1).with_error_code(1),
            ])]);
        let answers = fetched(response, "t");
        assert_eq!(answers[0], (0, Ok(Bytes::from_static(b"xy"))));
        assert_eq!(answers[1], (1, Err(AnswerError::code(ResponseError::OffsetOutOfRange))));
    }
}
