//! `odradek delete-records`: moves partitions' log start offsets forward, after Kafka's
//! `kafka-delete-records.sh --offset-json-file`.
//!
//! The file is Kafka's: `{"partitions": [{"topic": "t", "partition": 0, "offset": 5}],
//! "version": 1}`, offset -1 meaning the high watermark. DeleteRecords goes to each
//! partition's leader; each partition's new low watermark or its error is printed, and any
//! error makes the exit status 1.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse, TopicName};
use serde_json::json;

use super::messages::{by_topic, check, s, AnswerError};
use super::{AdminError, ConnectArgs, Output, TopicPartition};

/// Delete a partition's records before an offset.
#[derive(Parser, Debug)]
pub struct DeleteRecordsArgs {
    /// A JSON file: `{"partitions": [{"topic": T, "partition": P, "offset": O}], "version": 1}`.
    #[arg(long, value_name = "FILE")]
    offset_json_file: PathBuf,
    /// How to print the outcome.
    #[arg(long, value_enum, default_value_t = Output::Human)]
    output: Output,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// Runs a `delete-records` command; returns the process exit status.
pub fn run(args: DeleteRecordsArgs) -> i32 {
    super::finish(execute(&args), |_| 1)
}

/// The partitions and offsets of Kafka's offset JSON file, refusing a partition named twice.
fn parse_offsets(text: &str) -> Result<BTreeMap<TopicPartition, i64>, AdminError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        partitions: Vec<Entry>,
        #[allow(dead_code)]
        version: Option<i32>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        topic: String,
        partition: i32,
        offset: i64,
    }
    let file: File = serde_json::from_str(text).map_err(|e| AdminError::Usage(format!("the offset JSON file does not parse: {e}")))?;
    let mut offsets = BTreeMap::new();
    let mut duplicates = Vec::new();
    for entry in file.partitions {
        if entry.partition < 0 || entry.offset < -1 {
            return Err(AdminError::Usage(format!(
                "partition {} and offset {} of topic '{}' are not valid (offset -1 means the high watermark)",
                entry.partition, entry.offset, entry.topic
            )));
        }
        let tp = TopicPartition::new(&entry.topic, entry.partition);
        if offsets.insert(tp.clone(), entry.offset).is_some() {
            duplicates.push(tp.to_string());
        }
    }
    if !duplicates.is_empty() {
        return Err(AdminError::Usage(format!("Offset json file contains duplicate topic partitions: {}", duplicates.join(","))));
    }
    if offsets.is_empty() {
        return Err(AdminError::Usage("the offset JSON file names no partition".into()));
    }
    Ok(offsets)
}

fn execute(args: &DeleteRecordsArgs) -> Result<String, AdminError> {
    let text = std::fs::read_to_string(&args.offset_json_file)
        .map_err(|e| AdminError::Usage(format!("could not read {}: {e}", args.offset_json_file.display())))?;
    let offsets = parse_offsets(&text)?;
    let timeout_ms = i32::try_from(args.connect.timeout_ms).unwrap_or(i32::MAX);
    let mut cluster = args.connect.cluster();
    let topics: Vec<String> = offsets.keys().map(|tp| tp.topic.clone()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let metadata = cluster.metadata(Some(&topics))?;
    let (by_leader, leaderless) = metadata.by_leader(offsets.keys());
    let mut results: BTreeMap<TopicPartition, Result<i64, AnswerError>> = leaderless.into_iter().map(|(tp, e)| (tp, Err(e))).collect();
    for (addr, partitions) in by_leader {
        let asked: BTreeMap<TopicPartition, i64> = partitions.iter().map(|tp| (tp.clone(), offsets[tp])).collect();
        let (_, response) = cluster.connection(&addr)?.call(|v| delete_records_request(&asked, timeout_ms, v))?;
        let mut answered = deleted(&response);
        for tp in partitions {
            let result = answered.remove(&tp).unwrap_or_else(|| Err(AnswerError::Incomplete("missing from the answer".into())));
            results.insert(tp, result);
        }
    }
    let out = match args.output {
        Output::Human => render(&results),
        Output::Json => format!("{}\n", to_json(&results)),
    };
    let failed: Vec<String> = results.iter().filter_map(|(tp, r)| r.as_ref().err().map(|e| format!("{tp}: {e}"))).collect();
    if failed.is_empty() {
        return Ok(out);
    }
    // What was deleted stays deleted; print it before the failure.
    let _ = std::io::stdout().write_all(out.as_bytes());
    Err(AdminError::Refused(format!("DeleteRecords failed for {} of {} partitions: {}", failed.len(), results.len(), failed.join(", "))))
}

fn delete_records_request(offsets: &BTreeMap<TopicPartition, i64>, timeout_ms: i32, _version: i16) -> DeleteRecordsRequest {
    let topics = by_topic(offsets.iter().map(|(tp, &offset)| (tp, offset)))
        .into_iter()
        .map(|(topic, partitions)| {
            DeleteRecordsTopic::default().with_name(TopicName(s(topic))).with_partitions(
                partitions.into_iter().map(|(p, offset)| DeleteRecordsPartition::default().with_partition_index(p).with_offset(offset)).collect(),
            )
        })
        .collect();
    DeleteRecordsRequest::default().with_topics(topics).with_timeout_ms(timeout_ms)
}

/// Per answered partition, its low watermark or its error.
fn deleted(response: &DeleteRecordsResponse) -> BTreeMap<TopicPartition, Result<i64, AnswerError>> {
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (TopicPartition::new(t.name.as_str(), p.partition_index), check(p.error_code, None).map(|()| p.low_watermark)))
        })
        .collect()
}

/// Kafka's lines after "Records delete operation completed:".
fn render(results: &BTreeMap<TopicPartition, Result<i64, AnswerError>>) -> String {
    let mut out = "Records delete operation completed:\n".to_owned();
    for (tp, result) in results {
        match result {
            Ok(low_watermark) => out.push_str(&format!("partition: {tp}\tlow_watermark: {low_watermark}\n")),
            Err(e) => out.push_str(&format!("partition: {tp}\terror: {e}\n")),
        }
    }
    out
}

fn to_json(results: &BTreeMap<TopicPartition, Result<i64, AnswerError>>) -> serde_json::Value {
    let partitions: Vec<serde_json::Value> = results
        .iter()
        .map(|(tp, result)| match result {
            Ok(low_watermark) => json!({"topic": tp.topic, "partition": tp.partition, "low_watermark": low_watermark}),
            Err(e) => json!({"topic": tp.topic, "partition": tp.partition, "error": e.to_string()}),
        })
        .collect();
    json!({ "partitions": partitions })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::delete_records_response::{DeleteRecordsPartitionResult, DeleteRecordsTopicResult};
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::{Decodable, Encodable};
    use kafka_protocol::ResponseError;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    #[test]
    fn offset_files_parse_as_kafka_writes_them() {
        let offsets =
            parse_offsets(r#"{"partitions": [{"topic": "t", "partition": 1, "offset": 5}, {"topic": "t", "partition": 0, "offset": -1}], "version": 1}"#)
                .unwrap();
        assert_eq!(offsets, BTreeMap::from([(tp("t", 0), -1), (tp("t", 1), 5)]));
        let duplicate = r#"{"partitions": [{"topic": "t", "partition": 0, "offset": 1}, {"topic": "t", "partition": 0, "offset": 2}]}"#;
        assert_eq!(parse_offsets(duplicate).unwrap_err().to_string(), "Offset json file contains duplicate topic partitions: t-0");
        for bad in [
            "{}",
            r#"{"partitions": []}"#,
            r#"{"partitions": [{"topic": "t", "partition": 0}]}"#,
            r#"{"partitions": [{"topic": "t", "partition": 0, "offset": -2}]}"#,
            "not json",
        ] {
            assert!(matches!(parse_offsets(bad), Err(AdminError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn requests_and_answers_in_every_version() {
        let offsets = BTreeMap::from([(tp("b", 0), 3), (tp("a", 1), -1)]);
        let (min, max) = super::super::messages::client_versions(ApiKey::DeleteRecords).unwrap();
        for version in min..=max {
            let mut buf = bytes::BytesMut::new();
            delete_records_request(&offsets, 1000, version).encode(&mut buf, version).unwrap();
            let decoded = DeleteRecordsRequest::decode(&mut buf.freeze(), version).unwrap();
            let asked: Vec<(String, i32, i64)> = decoded
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, p.offset)))
                .collect();
            assert_eq!(asked, [("a".into(), 1, -1), ("b".into(), 0, 3)]);
        }
        let response = DeleteRecordsResponse::default().with_topics(vec![DeleteRecordsTopicResult::default()
            .with_name(TopicName(s("a")))
            .with_partitions(vec![
                DeleteRecordsPartitionResult::default().with_partition_index(1).with_low_watermark(9),
                DeleteRecordsPartitionResult::default().with_partition_index(2).with_error_code(6).with_low_watermark(-1),
            ])]);
        let results = deleted(&response);
        assert_eq!(results[&tp("a", 1)], Ok(9));
        assert_eq!(results[&tp("a", 2)], Err(AnswerError::code(ResponseError::NotLeaderOrFollower)));
        assert_eq!(
            render(&results),
            "Records delete operation completed:\npartition: a-1\tlow_watermark: 9\npartition: a-2\terror: NOT_LEADER_OR_FOLLOWER (6)\n"
        );
        assert_eq!(to_json(&results)["partitions"][0]["low_watermark"], 9);
    }
}
