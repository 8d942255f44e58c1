//! Micro-benchmarks of the broker's per-request hot paths in `odradek-core`: what a produce
//! costs before it reaches the disk. Run with
//! `cargo bench -p odradek-bench --bench core_hot_paths`.
//!
//! High-watermark computation belongs here too once replication lands in `core`.

use bytes::Bytes;
use divan::counter::BytesCount;
use divan::{black_box, Bencher};
use odradek_core::batch::{assign_offsets, validate_records};
use kafka_protocol::records::Compression;
use odradek_core::records::{encode_batch, encode_records};
use odradek_core::validate::{validate_produce, ProduceRules};
use odradek_core::shard::{merge_in_order, shard_for, split_by_shard};

fn main() {
    divan::main();
}

/// A record set of `batches` batches of `records` records with `value_len`-byte values.
fn record_set(batches: usize, records: usize, value_len: usize) -> Vec<u8> {
    let value = Bytes::from(vec![0x42u8; value_len]);
    let rs: Vec<(Bytes, Option<Bytes>)> =
        (0..records).map(|i| (Bytes::from(format!("key-{i}")), Some(value.clone()))).collect();
    let mut out = Vec::new();
    for _ in 0..batches {
        out.extend_from_slice(&encode_batch(&rs, 1_700_000_000_000));
    }
    out
}

/// Header checks plus CRC32C over every byte: the broker's per-batch validation.
#[divan::bench(args = [(1, 100), (1, 1024), (16, 1024)])]
fn validate_records_crc32c(bencher: Bencher, (batches, value_len): (usize, usize)) {
    let buf = record_set(batches, 100, value_len);
    bencher
        .counter(BytesCount::new(buf.len()))
        .bench(|| validate_records(black_box(&buf), 16 << 20).expect("valid"));
}

/// What a leader does with a producer's batch now: [`validate_records`]'s checks plus a walk of
/// every record (Kafka's `LogValidator`), inflating a compressed batch first. The uncompressed
/// cases set the walk against `validate_records_crc32c` above; the compressed ones show what
/// inflating costs (Kafka inflates every compressed batch on produce too).
#[divan::bench(args = [("none", 100), ("none", 1024), ("lz4", 1024), ("zstd", 1024), ("gzip", 1024)])]
fn validate_produce_walk(bencher: Bencher, (codec, value_len): (&str, usize)) {
    let compression = match codec {
        "none" => Compression::None,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        "gzip" => Compression::Gzip,
        _ => unreachable!(),
    };
    let value = Bytes::from((0..value_len).map(|i| b"odradek streams "[i % 16]).collect::<Vec<u8>>());
    let rs: Vec<(Option<Bytes>, Option<Bytes>)> =
        (0..100).map(|i| (Some(Bytes::from(format!("key-{i}"))), Some(value.clone()))).collect();
    let buf = encode_records(&rs, 1_700_000_000_000, compression);
    let rules = ProduceRules::default();
    bencher
        .counter(BytesCount::new(buf.len()))
        .bench(|| validate_produce(black_box(&buf), &rules, 1_700_000_000_000).expect("valid"));
}

/// CRC32C alone on a 128 KiB buffer, to set the validation cost against the hash's speed.
#[divan::bench]
fn crc32c_128k(bencher: Bencher) {
    let buf = vec![0x17u8; 128 << 10];
    bencher.counter(BytesCount::new(buf.len())).bench(|| crc32c::crc32c(black_box(&buf)));
}

/// Stamping base offsets and the leader epoch into 16 validated batches (CreateTime).
#[divan::bench]
fn assign_offsets_16_batches(bencher: Bencher) {
    let buf = record_set(16, 100, 1024);
    let validated = validate_records(&buf, 16 << 20).expect("valid");
    bencher.with_inputs(|| (buf.clone(), validated.clone())).bench_local_refs(|(b, v)| {
        assign_offsets(b, v, black_box(1_000_000), 3, None)
    });
}

/// LogAppendTime rewrites the timestamp and recomputes the CRC of every batch.
#[divan::bench]
fn assign_offsets_log_append_time_16_batches(bencher: Bencher) {
    let buf = record_set(16, 100, 1024);
    let validated = validate_records(&buf, 16 << 20).expect("valid");
    bencher.with_inputs(|| (buf.clone(), validated.clone())).bench_local_refs(|(b, v)| {
        assign_offsets(b, v, black_box(1_000_000), 3, Some(1_700_000_000_123))
    });
}

#[divan::bench]
fn shard_for_one_partition(bencher: Bencher) {
    bencher.bench(|| shard_for(black_box("orders-events"), black_box(57), black_box(2)));
}

/// Routing a 100-partition produce across 2 shards and merging the answers back in order.
#[divan::bench]
fn split_and_merge_100_partitions(bencher: Bencher) {
    bencher.bench(|| {
        let groups = split_by_shard((0..100).map(|p| (shard_for("orders-events", p, 2), p)));
        let parts = groups.into_values().map(|items| items.into_iter().map(|(i, p)| (i, p * 2)).collect());
        merge_in_order(100, parts)
    });
}
