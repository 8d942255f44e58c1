//! A producer's record set for one partition, as a leader validates it before appending
//! ([`validate::validate_produce`], Kafka's `LogValidator`); and, for a record set it accepts,
//! what the broker does with the batch afterwards.
//!
//! Input: a flags byte (bit 0: patch every batch's CRC first, so mutations reach what lies
//! behind the CRC check; bit 1: a LogAppendTime topic; bit 2: a compacted topic), a byte
//! choosing `max.message.bytes`, then the record set.
//!
//! Properties of an accepted record set: with offsets assigned, recovery reads it back whole,
//! with the same next offset; ListOffsets by time, a coordinator's load, producer state and
//! the log cleaner decode it without panicking, and a batch the cleaner rewrites is valid in a
//! log.

use bytes::Bytes;
use kafka_protocol::records::Compression;
use odradek_core::batch::{self, ControlMarker};
use odradek_core::compact::{self, Cleaned, OffsetMap};
use odradek_core::records::{self, Sequenced};
use odradek_core::validate::{self, ProduceRules};
use odradek_core::{log, producer};

/// The most an accepted batch's records may inflate to for the largest `max.message.bytes`
/// below, times two for a vector doubling as it is filled: for the allocation bound.
pub const INFLATED_MAX: usize = 2 * validate::INFLATE_FACTOR * (1 << 20);

const MAX_MESSAGE_BYTES: [usize; 3] = [1 << 10, 64 << 10, 1_048_588];
const FIRST_OFFSET: i64 = 1_000;
const NOW_MS: i64 = 1_700_000_000_000;

pub fn run(data: &[u8]) {
    let ([flags, limit], body) = crate::params::<2>(data);
    let mut buf = body.to_vec();
    if flags & 1 != 0 {
        crate::fix_crcs(&mut buf);
    }
    let rules = ProduceRules {
        max_message_bytes: MAX_MESSAGE_BYTES[usize::from(limit) % MAX_MESSAGE_BYTES.len()],
        compacted: flags & 4 != 0,
        log_append_time: flags & 2 != 0,
        ..ProduceRules::default()
    };
    let mut validated = match validate::validate_produce(&buf, &rules, NOW_MS) {
        Ok(validated) => validated,
        Err(refusal) => {
            assert!(refusal.record_errors.len() <= validate::MAX_RECORD_ERRORS);
            return;
        }
    };

    let log_append_time = rules.log_append_time.then_some(NOW_MS);
    let next = batch::assign_offsets(&mut buf, &mut validated, FIRST_OFFSET, 3, log_append_time);
    let recovered = log::recover_segment(FIRST_OFFSET, &buf, 4096);
    assert_eq!(recovered.stop_reason, None, "recovery refuses what produce accepted");
    assert_eq!(recovered.valid_len, buf.len() as u64);
    assert_eq!(recovered.segment.next_offset, next);

    let stored = Bytes::from(buf);
    let _ = records::first_at_or_after(&stored, i64::MIN);
    let _ = records::first_at_or_after(&stored, validated.max_timestamp);
    let _ = records::decode_key_values(&stored);
    let mut producers = producer::ProducerStates::default();
    for (position, header) in batch::scan_headers(&stored) {
        producers.replay(NOW_MS, &header, &stored[position..position + header.total_len()]);
    }
    let mut map = OffsetMap::new(1 << 20);
    if map.add_batches(&stored).is_err() {
        return;
    }
    for (position, header) in batch::scan_headers(&stored) {
        let whole = stored.slice(position..position + header.total_len());
        if let Ok(Cleaned::Rewrite(cleaned)) = compact::clean_batch(&whole, &map, NOW_MS) {
            batch::validate_stored_batch(&cleaned).expect("a cleaned batch is valid in a log");
        }
    }
}

/// Record sets a producer sends: each codec, idempotent and transactional batches, and what
/// produce refuses (two batches, a control batch), under several flags.
pub fn seeds() -> Vec<Vec<u8>> {
    let kv = |k: &'static [u8], v: &'static [u8]| (Some(Bytes::from_static(k)), Some(Bytes::from_static(v)));
    let records = vec![kv(b"k1", b"v1"), kv(b"k2", b"a longer value, repeated, repeated, repeated"), (None, Some(Bytes::from_static(b"unkeyed"))), (Some(Bytes::from_static(b"k1")), None)];
    let mut sets: Vec<Vec<u8>> = Vec::new();
    for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        sets.push(records::encode_records(&records, NOW_MS, compression).to_vec());
    }
    let sequenced = Sequenced { producer_id: 7, epoch: 1, first_seq: 0, transactional: false };
    sets.push(records::encode_producer_records(&records, NOW_MS, Compression::None, Some(sequenced)).to_vec());
    let transactional = Sequenced { transactional: true, ..sequenced };
    sets.push(records::encode_producer_records(&records, NOW_MS, Compression::Lz4, Some(transactional)).to_vec());
    let mut two = records::encode_records(&records[..1], NOW_MS, Compression::None).to_vec();
    two.extend_from_slice(&records::encode_records(&records[1..], NOW_MS, Compression::Zstd));
    sets.push(two);
    sets.push(records::encode_marker(7, 1, ControlMarker { commit: true, coordinator_epoch: 4 }, NOW_MS).to_vec());
    let mut seeds = Vec::new();
    for set in sets {
        for flags in [0u8, 1, 3, 5] {
            let mut seed = vec![flags, 2];
            seed.extend_from_slice(&set);
            seeds.push(seed);
        }
    }
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_of_every_codec_is_accepted_so_the_checks_behind_validation_run() {
        let accepted: Vec<i16> = seeds()
            .iter()
            .filter(|seed| seed[0] == 0)
            .filter(|seed| validate::validate_produce(&seed[2..], &ProduceRules::default(), NOW_MS).is_ok())
            .map(|seed| batch::BatchHeader::parse(&seed[2..]).unwrap().compression_codec())
            .collect();
        for codec in 0..=4 {
            assert!(accepted.contains(&codec), "no accepted seed of codec {codec}: {accepted:?}");
        }
    }
}
