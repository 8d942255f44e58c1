//! `odradek produce`: lines from stdin to a topic, after Kafka's
//! `kafka-console-producer.sh`.
//!
//! Each line is a record (its `\n` or `\r\n` removed); with `--property parse.key=true` the
//! text before the first `key.separator` (a tab by default) is its key. Records with a key go
//! to the partition Kafka's default partitioner picks (`murmur2(key) & 0x7fffffff % count`),
//! so that the same key lands where a Java producer would put it; the others to one partition
//! per batch, the next one each batch. A batch is sent once `--batch-size` bytes are waiting
//! or no line came for `--linger-ms`, as one uncompressed record batch per partition, in one
//! Produce per leader. Partitions whose leader moved or is not known yet are retried with
//! fresh Metadata until `--timeout-ms`; records may then be written twice, as by any producer
//! without idempotence.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::records::Compression;
use kafka_protocol::ResponseError;

use super::client::Cluster;
use super::messages::{check, s, AnswerError, ClusterMetadata};
use super::{AdminError, ConnectArgs, TopicPartition};

/// Pause before retrying partitions whose leader was not reachable.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Lines from stdin to a topic.
#[derive(Parser, Debug)]
pub struct ProduceArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// How the lines are read: `parse.key=true`, `key.separator=SEP` (default a tab),
    /// `null.marker=TEXT` (a value equal to it is sent as null). Repeatable.
    #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// -1 (all in-sync replicas), 1 (the leader) or 0 (no answer).
    #[arg(long, alias = "request-required-acks", default_value = "-1", value_parser = parse_acks, allow_hyphen_values = true)]
    acks: i16,
    /// Bytes of records waiting that make a batch go out.
    #[arg(long, value_name = "BYTES", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// How long to wait for more lines before sending what is waiting.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    linger_ms: u64,
    #[command(flatten)]
    connect: ConnectArgs,
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "-1" | "all" => Ok(-1),
        "0" => Ok(0),
        "1" => Ok(1),
        _ => Err(format!("{text:?} is not -1, 0 or 1")),
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not name=value")),
    }
}

/// How lines become records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LineFormat {
    parse_key: bool,
    key_separator: String,
    null_marker: Option<String>,
}

impl LineFormat {
    fn new(properties: &[(String, String)]) -> Result<Self, AdminError> {
        let mut format = LineFormat { parse_key: false, key_separator: "\t".to_owned(), null_marker: None };
        for (name, value) in properties {
            match name.as_str() {
                "parse.key" => format.parse_key = parse_bool(name, value)?,
                "key.separator" if value.is_empty() => return Err(AdminError::Usage("key.separator is empty".into())),
                "key.separator" => format.key_separator = value.clone(),
                "null.marker" => format.null_marker = Some(value.clone()),
                other => {
                    return Err(AdminError::Usage(format!(
                        "unknown property {other:?} (known: parse.key, key.separator, null.marker)"
                    )))
                }
            }
        }
        Ok(format)
    }

    /// The key and value of line `number` (from 1).
    fn record(&self, number: u64, line: &[u8]) -> Result<(Option<Bytes>, Option<Bytes>), AdminError> {
        let (key, value) = if self.parse_key {
            let Some(at) = find(line, self.key_separator.as_bytes()) else {
                return Err(AdminError::Refused(format!(
                    "No key separator found on line number {number}: '{}'",
                    String::from_utf8_lossy(line)
                )));
            };
            (Some(&line[..at]), &line[at + self.key_separator.len()..])
        } else {
            (None, line)
        };
        let null = |bytes: &[u8]| self.null_marker.as_ref().is_some_and(|m| m.as_bytes() == bytes);
        let key = key.filter(|k| !null(k)).map(Bytes::copy_from_slice);
        let value = (!null(value)).then(|| Bytes::copy_from_slice(value));
        Ok((key, value))
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, AdminError> {
    match value.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(AdminError::Usage(format!("{name} must be true or false, not {value:?}"))),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Kafka's `Utils.murmur2`, the hash its default partitioner puts keys through.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, &b) in rest.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a key (`BuiltInPartitioner.partitionForKey`).
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has partitions");
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Runs a `produce` command; returns the process exit status.
pub fn run(args: ProduceArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

type Record = (Option<Bytes>, Option<Bytes>);

fn execute(args: &ProduceArgs) -> Result<String, AdminError> {
    odradek_core::topic::validate_topic_name(&args.topic).map_err(|e| AdminError::Usage(e.message))?;
    let format = LineFormat::new(&args.properties)?;
    let mut producer = Producer::new(args)?;
    // A thread reads stdin so that a batch can go out when no line comes for a while (an
    // interactive session) while lines piped in go out together.
    let (lines, receiver) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1024);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.ends_with(b"\n") {
                        line.pop();
                        if line.ends_with(b"\r") {
                            line.pop();
                        }
                    }
                    if lines.send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = lines.send(Err(e));
                    return;
                }
            }
        }
    });
    let linger = Duration::from_millis(args.linger_ms);
    let mut number = 0u64;
    let mut next = |wait: Option<Duration>| -> Result<Next, AdminError> {
        let line = match wait {
            None => receiver.recv().ok(),
            Some(wait) => match receiver.recv_timeout(wait) {
                Ok(line) => Some(line),
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(Next::Idle),
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            },
        };
        let Some(line) = line else { return Ok(Next::End) };
        let line = line.map_err(|e| AdminError::Refused(format!("could not read stdin: {e}")))?;
        number += 1;
        format.record(number, &line).map(Next::Record)
    };
    loop {
        let first = match next(None)? {
            Next::Record(record) => record,
            Next::Idle => unreachable!("a blocking receive does not time out"),
            Next::End => return Ok(String::new()),
        };
        let mut bytes = record_size(&first);
        let mut batch = vec![first];
        let deadline = Instant::now() + linger;
        let mut ended = false;
        while bytes < args.batch_size && !ended {
            match next(Some(deadline.saturating_duration_since(Instant::now())))? {
                Next::Record(record) => {
                    bytes += record_size(&record);
                    batch.push(record);
                }
                Next::Idle => break,
                Next::End => ended = true,
            }
        }
        producer.send(batch)?;
        if ended {
            return Ok(String::new());
        }
    }
}

/// What stdin gave.
enum Next {
    Record(Record),
    /// No line within the linger time.
    Idle,
    End,
}

fn record_size((key, value): &Record) -> u64 {
    (key.as_ref().map_or(0, Bytes::len) + value.as_ref().map_or(0, Bytes::len)) as u64
}

/// Sends batches of records to the topic's partition leaders.
struct Producer {
    cluster: Cluster,
    topic: String,
    acks: i16,
    timeout: Duration,
    metadata: ClusterMetadata,
    partition_count: i32,
    /// Where the next batch's records without a key go.
    next_partition: i32,
}

impl Producer {
    fn new(args: &ProduceArgs) -> Result<Self, AdminError> {
        let mut producer = Producer {
            cluster: args.connect.cluster(),
            topic: args.topic.clone(),
            acks: args.acks,
            timeout: Duration::from_millis(args.connect.timeout_ms),
            metadata: ClusterMetadata::default(),
            partition_count: 0,
            next_partition: 0,
        };
        producer.refresh()?;
        Ok(producer)
    }

    fn refresh(&mut self) -> Result<(), AdminError> {
        self.metadata = self.cluster.metadata(Some(std::slice::from_ref(&self.topic)))?;
        let topic = self
            .metadata
            .topic(&self.topic)
            .map_err(|error| AdminError::Answer { context: format!("Metadata for topic '{}'", self.topic), error })?;
        let count = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if count == 0 {
            return Err(AdminError::Refused(format!("topic '{}' has no partitions", self.topic)));
        }
        // Kafka keeps a topic's partitions; a count that grew moves keys, as it does there.
        self.partition_count = count;
        Ok(())
    }

    fn send(&mut self, records: Vec<Record>) -> Result<(), AdminError> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        let unkeyed = self.next_partition % self.partition_count;
        self.next_partition = (unkeyed + 1) % self.partition_count;
        for record in records {
            let partition = match &record.0 {
                Some(key) => partition_for_key(key, self.partition_count),
                None => unkeyed,
            };
            by_partition.entry(partition).or_default().push(record);
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut pending: BTreeMap<TopicPartition, Bytes> = by_partition
            .into_iter()
            .map(|(p, records)| {
                (TopicPartition::new(&self.topic, p), odradek_core::records::encode_records(&records, now_ms, Compression::None))
            })
            .collect();
        let deadline = Instant::now() + self.timeout;
        loop {
            let failed = self.send_once(&pending)?;
            pending.retain(|tp, _| failed.contains_key(tp));
            let Some((tp, error)) = failed.into_iter().next() else { return Ok(()) };
            let retriable = match &error {
                AnswerError::Broker { code, .. } => ResponseError::try_from_code(*code).is_some_and(|e| e.is_retriable()),
                AnswerError::Incomplete(_) => true,
            };
            if !retriable || Instant::now() + RETRY_BACKOFF >= deadline {
                return Err(AdminError::Answer { context: format!("Produce to {tp}"), error });
            }
            std::thread::sleep(RETRY_BACKOFF);
            self.refresh()?;
        }
    }

    /// One Produce per leader; the partitions that failed, with why.
    fn send_once(&mut self, batches: &BTreeMap<TopicPartition, Bytes>) -> Result<BTreeMap<TopicPartition, AnswerError>, AdminError> {
        let (by_leader, leaderless) = self.metadata.by_leader(batches.keys());
        let mut failed: BTreeMap<TopicPartition, AnswerError> = leaderless.into_iter().collect();
        let timeout_ms = i32::try_from(self.timeout.as_millis()).unwrap_or(i32::MAX);
        for (addr, partitions) in by_leader {
            let data: Vec<(i32, Bytes)> = partitions.iter().map(|tp| (tp.partition, batches[tp].clone())).collect();
            let build = |_version| produce_request(&self.topic, &data, self.acks, timeout_ms);
            let connection = self.cluster.connection(&addr)?;
            if self.acks == 0 {
                connection.send_unanswered(build)?;
                continue;
            }
            let (_, response) = connection.call(build)?;
            let mut answered = produced(&response, &self.topic);
            for tp in partitions {
                match answered.remove(&tp.partition) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        failed.insert(tp, e);
                    }
                    None => {
                        failed.insert(tp, AnswerError::Incomplete("missing from the Produce answer".into()));
                    }
                }
            }
        }
        Ok(failed)
    }
}

fn produce_request(topic: &str, batches: &[(i32, Bytes)], acks: i16, timeout_ms: i32) -> ProduceRequest {
    let partitions =
        batches.iter().map(|(p, records)| PartitionProduceData::default().with_index(*p).with_records(Some(records.clone()))).collect();
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(timeout_ms)
        .with_topic_data(vec![TopicProduceData::default().with_name(TopicName(s(topic))).with_partition_data(partitions)])
}

/// Per partition of `topic`, the base offset written or the error.
fn produced(response: &ProduceResponse, topic: &str) -> BTreeMap<i32, Result<i64, AnswerError>> {
    response
        .responses
        .iter()
        .filter(|t| t.name.as_str() == topic)
        .flat_map(|t| t.partition_responses.iter().map(|p| (p.index, check(p.error_code, p.error_message.as_ref()).map(|()| p.base_offset))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};

    // Kafka's UtilsTest.testMurmur2 vectors: a key must land where the Java client puts it.
    #[test]
    fn murmur2_matches_kafka() {
        for (input, hash) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(input), hash, "{}", String::from_utf8_lossy(input));
        }
        assert!((0..3).contains(&partition_for_key(b"foobar", 3)));
        assert_eq!(partition_for_key(b"21", 7), (-973_932_308i32 & 0x7fff_ffff) % 7);
    }

    #[test]
    fn lines_become_records_as_the_console_producer_reads_them() {
        let plain = LineFormat::new(&[]).unwrap();
        assert_eq!(plain.record(1, b"a\tb").unwrap(), (None, Some(Bytes::from_static(b"a\tb"))));
        let keyed = LineFormat::new(&[("parse.key".into(), "true".into()), ("key.separator".into(), "::".into())]).unwrap();
        assert_eq!(keyed.record(1, b"k::v::w").unwrap(), (Some(Bytes::from_static(b"k")), Some(Bytes::from_static(b"v::w"))));
        assert_eq!(keyed.record(1, b"::v").unwrap(), (Some(Bytes::new()), Some(Bytes::from_static(b"v"))));
        assert_eq!(keyed.record(7, b"no separator").unwrap_err().to_string(), "No key separator found on line number 7: 'no separator'");
        let nulls = LineFormat::new(&[("parse.key".into(), "true".into()), ("null.marker".into(), "NULL".into())]).unwrap();
        assert_eq!(nulls.record(1, b"NULL\tNULL").unwrap(), (None, None));
        assert!(LineFormat::new(&[("parse.keys".into(), "true".into())]).is_err());
        assert!(LineFormat::new(&[("parse.key".into(), "yes".into())]).is_err());
    }

    #[test]
    fn arguments_parse_with_kafka_names() {
        let parse = |args: &[&str]| ProduceArgs::try_parse_from(std::iter::once("produce").chain(args.iter().copied()));
        assert_eq!(parse(&["--topic", "t"]).unwrap().acks, -1);
        assert_eq!(parse(&["--topic", "t", "--acks", "1"]).unwrap().acks, 1);
        assert_eq!(parse(&["--topic", "t", "--request-required-acks", "0"]).unwrap().acks, 0);
        assert_eq!(parse(&["--topic", "t", "--acks", "-1"]).unwrap().acks, -1);
        assert!(parse(&["--topic", "t", "--acks", "2"]).is_err());
        assert!(parse(&[]).is_err());
        let args = parse(&["--topic", "t", "--property", "parse.key=true", "--property", "key.separator=:"]).unwrap();
        assert_eq!(args.properties, [("parse.key".into(), "true".into()), ("key.separator".into(), ":".into())]);
    }

    #[test]
    fn produce_answers_are_read_per_partition() {
        let request = produce_request("t", &[(0, Bytes::from_static(b"x")), (2, Bytes::from_static(b"y"))], -1, 1000);
        assert_eq!(request.topic_data[0].partition_data.iter().map(|p| p.index).collect::<Vec<_>>(), [0, 2]);
        let response = ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
            .with_name(TopicName(s("t")))
            .with_partition_responses(vec![
                PartitionProduceResponse::default().with_index(0).with_base_offset(42),
                PartitionProduceResponse::default().with_index(2).with_error_code(6),
            ])]);
        let answered = produced(&response, "t");
        assert_eq!(answered[&0], Ok(42));
        assert_eq!(answered[&2], Err(AnswerError::code(ResponseError::NotLeaderOrFollower)));
    }
}
