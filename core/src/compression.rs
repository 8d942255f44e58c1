//! A topic's `compression.type` (and KIP-390's `compression.<codec>.level`): the codec a leader
//! stores a produced batch in. With `producer` (the default) a batch is stored as sent; with a
//! codec, a data batch sent in another codec has its records section re-encoded in the topic's
//! codec before offsets are assigned (Kafka's `LogValidator`, whose in-place path is taken only
//! when the producer's codec is already the topic's).
//!
//! Only the records section is re-encoded: the records' bytes (offset and timestamp deltas,
//! keys, values, headers) and every header field but the codec bits, the batch length and the
//! CRC are kept, so idempotence and transactions see the same batch. Kafka rebuilds the records
//! instead, which comes to the same bytes for a well-formed batch.

use std::io::Write;

use bytes::Bytes;

use crate::batch::{self, BatchError, BatchHeader, HEADER_LEN, LOG_OVERHEAD};
use crate::inflate::{self, InflateError};

/// Kafka's `compression.gzip.level` default: zlib's own (`Deflater.DEFAULT_COMPRESSION`).
pub const DEFAULT_GZIP_LEVEL: i32 = -1;
/// Kafka's `compression.lz4.level` default.
pub const DEFAULT_LZ4_LEVEL: u32 = 9;
/// Kafka's `compression.zstd.level` default (`ZSTD_CLEVEL_DEFAULT`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// `compression.type`'s values, in the order Kafka's validator lists them.
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const GZIP_LEVELS: (i32, i32) = (1, 9);
const LZ4_LEVELS: (i32, i32) = (1, 17);
/// `ZSTD_minCLevel()` (the target length's maximum, negated) to `ZSTD_MAX_CLEVEL`.
const ZSTD_LEVELS: (i32, i32) = (-131_072, 22);

/// xerial snappy-java's stream header, as Kafka's Java producer writes it: a magic, then the
/// format version and the oldest version that reads it (both 1).
const XERIAL_HEADER: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
/// snappy-java's default block size, which Kafka's `SnappyOutputStream` uses.
const XERIAL_BLOCK: usize = 32 << 10;

/// A topic's `compression.type` with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopicCompression {
    /// Keep the codec the producer chose.
    #[default]
    Producer,
    Uncompressed,
    /// `None`: zlib's default level (Kafka's `-1`).
    Gzip { level: Option<u32> },
    Snappy,
    Lz4 { level: u32 },
    Zstd { level: i32 },
}

impl TopicCompression {
    /// The topic's compression from its `compression.type`, `compression.gzip.level`,
    /// `compression.lz4.level` and `compression.zstd.level` values (pass a config's default when
    /// it is not set: "producer", "-1", "9", "3"). Each is validated as Kafka's `LogConfig` does,
    /// whatever the type: the error is Kafka's `ConfigException` message, naming the config and
    /// the value.
    pub fn from_configs(compression_type: &str, gzip_level: &str, lz4_level: &str, zstd_level: &str) -> Result<TopicCompression, String> {
        let gzip = int_config("compression.gzip.level", gzip_level)?;
        if gzip != DEFAULT_GZIP_LEVEL && !(GZIP_LEVELS.0..=GZIP_LEVELS.1).contains(&gzip) {
            return Err(invalid(
                "compression.gzip.level",
                gzip_level,
                &format!("Value must be between {} and {} or equal to {DEFAULT_GZIP_LEVEL}", GZIP_LEVELS.0, GZIP_LEVELS.1),
            ));
        }
        let lz4 = ranged_config("compression.lz4.level", lz4_level, LZ4_LEVELS)?;
        let zstd = ranged_config("compression.zstd.level", zstd_level, ZSTD_LEVELS)?;
        Ok(match compression_type.trim() {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Uncompressed,
            "gzip" => TopicCompression::Gzip { level: u32::try_from(gzip).ok() },
            "snappy" => TopicCompression::Snappy,
            "lz4" => TopicCompression::Lz4 { level: lz4.unsigned_abs() },
            "zstd" => TopicCompression::Zstd { level: zstd },
            _ => {
                return Err(invalid(
                    "compression.type",
                    compression_type,
                    &format!("String must be one of: {}", COMPRESSION_TYPES.join(", ")),
                ))
            }
        })
    }

    /// The batch codec (attribute bits 0–2) this topic stores batches in; `None` for
    /// `producer`.
    pub fn codec(&self) -> Option<i16> {
        match self {
            TopicCompression::Producer => None,
            TopicCompression::Uncompressed => Some(0),
            TopicCompression::Gzip { .. } => Some(1),
            TopicCompression::Snappy => Some(2),
            TopicCompression::Lz4 { .. } => Some(3),
            TopicCompression::Zstd { .. } => Some(4),
        }
    }

    /// Whether a batch with `header` is re-encoded before it is stored: a data batch whose
    /// codec is not the topic's. Only the codec counts, as in Kafka: a gzip batch stays as sent
    /// on a gzip topic whatever level either used. Control batches never are (Kafka writes
    /// markers uncompressed, and consumers read them without decompressing).
    pub fn recompresses(&self, header: &BatchHeader) -> bool {
        self.codec().is_some_and(|codec| codec != header.compression_codec()) && !header.is_control()
    }
}

fn invalid(name: &str, value: &str, message: &str) -> String {
    format!("Invalid value {value} for configuration {name}: {message}")
}

fn int_config(name: &str, value: &str) -> Result<i32, String> {
    value.trim().parse().map_err(|_| invalid(name, value, "Not a number of type INT"))
}

/// An INT config with Kafka's `Range.between` validator.
fn ranged_config(name: &str, value: &str, (min, max): (i32, i32)) -> Result<i32, String> {
    let parsed = int_config(name, value)?;
    if parsed < min {
        return Err(invalid(name, value, &format!("Value must be at least {min}")));
    }
    if parsed > max {
        return Err(invalid(name, value, &format!("Value must be no more than {max}")));
    }
    Ok(parsed)
}

/// Why a batch could not be re-encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecompressError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error(transparent)]
    Inflate(#[from] InflateError),
    #[error("cannot compress the batch with codec {codec}: {message}")]
    Compress { codec: i16, message: String },
    #[error("the re-encoded batch of {size} bytes is beyond a batch's largest length")]
    TooLong { size: usize },
}

/// `batch` (one whole batch, its CRC checked here) with its records re-encoded in `target`'s
/// codec, inflating them to at most `inflate_limit` bytes; `None` when the batch is stored as
/// it is ([`TopicCompression::recompresses`]).
pub fn recompress(batch: &[u8], target: &TopicCompression, inflate_limit: usize) -> Result<Option<Bytes>, RecompressError> {
    let header = batch::validate_stored_batch(batch)?;
    if !target.recompresses(&header) {
        return Ok(None);
    }
    let section = inflate::inflate(header.compression_codec(), &batch[HEADER_LEN..header.total_len()], inflate_limit)?;
    rebuild(&batch[..HEADER_LEN], &section, target).map(|rebuilt| Some(Bytes::from(rebuilt)))
}

/// A batch of the header `header` (its first [`HEADER_LEN`] bytes, as sent) over the
/// uncompressed records `section`, compressed in `target`'s codec, with its codec bits, length
/// and CRC rewritten. `target` must name a codec.
pub(crate) fn rebuild(header: &[u8], section: &[u8], target: &TopicCompression) -> Result<Vec<u8>, RecompressError> {
    assert_eq!(header.len(), HEADER_LEN, "a batch header is {HEADER_LEN} bytes");
    let codec = target.codec().expect("a batch is re-encoded only for a topic with a codec");
    let mut out = Vec::with_capacity(HEADER_LEN + section.len() / 2);
    out.extend_from_slice(header);
    let failed = |e: std::io::Error| RecompressError::Compress { codec, message: e.to_string() };
    match *target {
        TopicCompression::Producer => unreachable!("no codec"),
        TopicCompression::Uncompressed => out.extend_from_slice(section),
        TopicCompression::Gzip { level } => {
            let level = level.map_or_else(flate2::Compression::default, flate2::Compression::new);
            let mut encoder = flate2::write::GzEncoder::new(out, level);
            encoder.write_all(section).map_err(failed)?;
            out = encoder.finish().map_err(failed)?;
        }
        TopicCompression::Snappy => write_xerial_snappy(&mut out, section).map_err(|e| RecompressError::Compress { codec, message: e.to_string() })?,
        TopicCompression::Lz4 { level } => {
            // Kafka's `Lz4BlockOutputStream`: 64 KiB independent blocks, no checksums (its
            // reader refuses dependent blocks). Its default level 9 means lz4-java's fast
            // compressor, any other its high-compression one at that level.
            let level = if level == DEFAULT_LZ4_LEVEL { 0 } else { level };
            let mut encoder = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .block_checksum(lz4::liblz4::BlockChecksum::NoBlockChecksum)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .level(level)
                .build(out)
                .map_err(failed)?;
            encoder.write_all(section).map_err(failed)?;
            let (written, result) = encoder.finish();
            result.map_err(failed)?;
            out = written;
        }
        TopicCompression::Zstd { level } => {
            let mut encoder = zstd::stream::write::Encoder::new(out, level).map_err(failed)?;
            // A known size shrinks the window to the input's: consumers (and our own reads,
            // `inflate::inflate`) cap the window they accept, which the high levels exceed.
            encoder.set_pledged_src_size(Some(section.len() as u64)).map_err(failed)?;
            encoder.write_all(section).map_err(failed)?;
            out = encoder.finish().map_err(failed)?;
        }
    }
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| RecompressError::TooLong { size: out.len() })?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (i16::from_be_bytes([out[21], out[22]]) & !0x07) | codec;
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Kafka's snappy as its Java producer writes it (xerial's stream format, which
/// [`inflate::inflate`] reads): the header, then per block of at most 32 KiB its compressed
/// length (u32, big endian) and one raw snappy block.
fn write_xerial_snappy(out: &mut Vec<u8>, section: &[u8]) -> Result<(), snap::Error> {
    out.extend_from_slice(XERIAL_HEADER);
    let mut encoder = snap::raw::Encoder::new();
    for block in section.chunks(XERIAL_BLOCK) {
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        out.resize(start + snap::raw::max_compress_len(block.len()), 0);
        let written = encoder.compress(block, &mut out[start..])?;
        out.truncate(start + written);
        let written = u32::try_from(written).expect("a 32 KiB block compresses to less than 4 GiB");
        out[length_at..start].copy_from_slice(&written.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::encode_batch;
    use crate::records::{encode_producer_records, Sequenced};
    use kafka_protocol::records::{Compression, RecordBatchDecoder};

    const NOW: i64 = 1_700_000_000_000;
    const LIMIT: usize = 64 << 20;

    const CODECS: [Compression; 5] = [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    fn targets() -> Vec<TopicCompression> {
        vec![
            TopicCompression::Uncompressed,
            TopicCompression::Gzip { level: None },
            TopicCompression::Gzip { level: Some(9) },
            TopicCompression::Snappy,
            TopicCompression::Lz4 { level: DEFAULT_LZ4_LEVEL },
            TopicCompression::Lz4 { level: 12 },
            TopicCompression::Zstd { level: DEFAULT_ZSTD_LEVEL },
            TopicCompression::Zstd { level: -5 },
        ]
    }

    /// Keys and values as another implementation (kafka-protocol's decoder) reads them.
    fn decoded(batch: &[u8]) -> Vec<(Option<Bytes>, Option<Bytes>, i64, i64)> {
        let mut buf = Bytes::copy_from_slice(batch);
        RecordBatchDecoder::decode(&mut buf)
            .expect("decodes")
            .records
            .into_iter()
            .map(|r| (r.key, r.value, r.offset, r.timestamp))
            .collect()
    }

    /// A batch whose records span several snappy and lz4 blocks.
    fn large_batch(compression: Compression) -> Vec<u8> {
        let records: Vec<_> = (0..300u32)
            .map(|i| (Some(Bytes::from(format!("key-{i}"))), Some(Bytes::from(format!("{i:>500}").into_bytes()))))
            .collect();
        encode_producer_records(&records, NOW, compression, None).to_vec()
    }

    #[test]
    fn every_codec_pair_round_trips_with_a_valid_crc() {
        for source in CODECS {
            for sent in [encode_batch(7, NOW, source), large_batch(source)] {
                let before = batch::validate_batch(&sent).expect("valid");
                for target in targets() {
                    let context = format!("{source:?} -> {target:?}");
                    let Some(rebuilt) = recompress(&sent, &target, LIMIT).expect(&context) else {
                        assert_eq!(target.codec(), Some(source as i16), "{context}: left as sent");
                        continue;
                    };
                    let after = batch::validate_batch(&rebuilt).unwrap_or_else(|e| panic!("{context}: {e}"));
                    assert_eq!(after.compression_codec(), target.codec().unwrap(), "{context}");
                    assert_eq!(after.total_len(), rebuilt.len(), "{context}");
                    assert_eq!(decoded(&rebuilt), decoded(&sent), "{context}");
                    // The records' own bytes, not only what a decoder makes of them.
                    let inflate = |b: &[u8], h: &BatchHeader| {
                        inflate::inflate(h.compression_codec(), &b[HEADER_LEN..], LIMIT).unwrap().into_owned()
                    };
                    assert_eq!(inflate(&rebuilt, &after), inflate(&sent, &before), "{context}");
                    assert_eq!(after.record_count, before.record_count, "{context}");
                }
            }
        }
    }

    #[test]
    fn producer_fields_and_attributes_are_kept() {
        let records: Vec<_> = (0..4).map(|i| (Some(Bytes::from(format!("k{i}"))), Some(Bytes::from_static(b"value")))).collect();
        let sequenced = Sequenced { producer_id: 4_242, epoch: 7, first_seq: 100, transactional: true };
        let mut sent = encode_producer_records(&records, NOW, Compression::Lz4, Some(sequenced)).to_vec();
        // As a leader stored it: offsets and leader epoch outside the CRC, LogAppendTime inside.
        sent[0..8].copy_from_slice(&1_000i64.to_be_bytes());
        sent[12..16].copy_from_slice(&9i32.to_be_bytes());
        let attributes = i16::from_be_bytes([sent[21], sent[22]]) | 0x08;
        sent[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&sent[21..]);
        sent[17..21].copy_from_slice(&crc.to_be_bytes());
        let before = batch::validate_batch(&sent).unwrap();
        assert!(before.is_transactional() && before.is_log_append_time());

        let rebuilt = recompress(&sent, &TopicCompression::Zstd { level: 3 }, LIMIT).unwrap().unwrap();
        let after = batch::validate_batch(&rebuilt).unwrap();
        let kept = |h: &BatchHeader| {
            (
                h.base_offset,
                h.partition_leader_epoch,
                h.attributes & !0x07,
                h.last_offset_delta,
                h.base_timestamp,
                h.max_timestamp,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.record_count,
            )
        };
        assert_eq!(kept(&after), kept(&before));
        assert_eq!((after.producer_id, after.producer_epoch, after.base_sequence), (4_242, 7, 100));
        assert_eq!(after.compression_codec(), 4);
        assert_ne!(after.crc, before.crc);
    }

    #[test]
    fn a_batch_in_the_topics_codec_or_on_a_producer_topic_is_left_as_sent() {
        for source in CODECS {
            let sent = encode_batch(3, NOW, source);
            assert_eq!(recompress(&sent, &TopicCompression::Producer, LIMIT), Ok(None));
        }
        let gzip = encode_batch(3, NOW, Compression::Gzip);
        assert_eq!(recompress(&gzip, &TopicCompression::Gzip { level: Some(1) }, LIMIT), Ok(None), "levels do not count");
        let lz4 = encode_batch(3, NOW, Compression::Lz4);
        assert_eq!(recompress(&lz4, &TopicCompression::Lz4 { level: 17 }, LIMIT), Ok(None));
        let plain = encode_batch(3, NOW, Compression::None);
        assert_eq!(recompress(&plain, &TopicCompression::Uncompressed, LIMIT), Ok(None));
    }

    #[test]
    fn control_batches_are_never_recompressed() {
        let marker = batch::ControlMarker { commit: true, coordinator_epoch: 5 };
        let control = crate::records::encode_marker(8, 1, marker, NOW);
        for target in targets() {
            assert_eq!(recompress(&control, &target, LIMIT), Ok(None), "{target:?}");
        }
    }

    #[test]
    fn a_corrupt_or_oversized_batch_is_an_error() {
        let mut sent = encode_batch(3, NOW, Compression::Gzip);
        let last = sent.len() - 1;
        sent[last] ^= 1;
        assert!(matches!(
            recompress(&sent, &TopicCompression::Snappy, LIMIT),
            Err(RecompressError::Batch(BatchError::CrcMismatch { .. }))
        ));
        let sent = large_batch(Compression::Gzip);
        assert!(matches!(
            recompress(&sent, &TopicCompression::Uncompressed, 1 << 10),
            Err(RecompressError::Inflate(InflateError::TooLarge { .. }))
        ));
    }

    /// Real Kafka consumers read these streams: snappy-java's framing, and lz4 frames with
    /// independent blocks (Kafka's `Lz4BlockInputStream` refuses dependent ones).
    #[test]
    fn snappy_and_lz4_are_written_as_kafka_writes_them() {
        let sent = large_batch(Compression::None);
        let snappy = recompress(&sent, &TopicCompression::Snappy, LIMIT).unwrap().unwrap();
        assert_eq!(&snappy[HEADER_LEN..HEADER_LEN + 16], XERIAL_HEADER);
        let first_block = u32::from_be_bytes(snappy[HEADER_LEN + 16..HEADER_LEN + 20].try_into().unwrap()) as usize;
        let block = &snappy[HEADER_LEN + 20..HEADER_LEN + 20 + first_block];
        assert_eq!(snap::raw::decompress_len(block).unwrap(), XERIAL_BLOCK, "blocks of 32 KiB");

        let lz4 = recompress(&sent, &TopicCompression::Lz4 { level: DEFAULT_LZ4_LEVEL }, LIMIT).unwrap().unwrap();
        let frame = &lz4[HEADER_LEN..];
        assert_eq!(frame[..4], 0x184D_2204u32.to_le_bytes(), "LZ4 frame magic");
        // FLG: version 01, independent blocks, no block checksum, no size, no content checksum.
        assert_eq!(frame[4], 0b0110_0000);
        // BD: 64 KiB blocks.
        assert_eq!(frame[5], 4 << 4);
    }

    #[test]
    fn configs_are_validated_as_kafka_does() {
        let parse = |t: &str, g: &str, l: &str, z: &str| TopicCompression::from_configs(t, g, l, z);
        assert_eq!(parse("producer", "-1", "9", "3"), Ok(TopicCompression::Producer));
        assert_eq!(parse("uncompressed", "-1", "9", "3"), Ok(TopicCompression::Uncompressed));
        assert_eq!(parse("gzip", "-1", "9", "3"), Ok(TopicCompression::Gzip { level: None }));
        assert_eq!(parse("gzip", " 9 ", "9", "3"), Ok(TopicCompression::Gzip { level: Some(9) }));
        assert_eq!(parse("snappy", "-1", "9", "3"), Ok(TopicCompression::Snappy));
        assert_eq!(parse("lz4", "-1", "17", "3"), Ok(TopicCompression::Lz4 { level: 17 }));
        assert_eq!(parse("zstd", "-1", "9", "-131072"), Ok(TopicCompression::Zstd { level: -131_072 }));
        assert_eq!(parse("zstd", "-1", "9", "22"), Ok(TopicCompression::Zstd { level: 22 }));

        assert_eq!(
            parse("GZIP", "-1", "9", "3").unwrap_err(),
            "Invalid value GZIP for configuration compression.type: String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer"
        );
        assert_eq!(parse("none", "-1", "9", "3").unwrap_err().split(':').next(), Some("Invalid value none for configuration compression.type"));
        assert_eq!(
            parse("gzip", "0", "9", "3").unwrap_err(),
            "Invalid value 0 for configuration compression.gzip.level: Value must be between 1 and 9 or equal to -1"
        );
        assert!(parse("gzip", "10", "9", "3").is_err());
        assert!(parse("gzip", "-2", "9", "3").is_err());
        assert_eq!(
            parse("lz4", "-1", "18", "3").unwrap_err(),
            "Invalid value 18 for configuration compression.lz4.level: Value must be no more than 17"
        );
        assert_eq!(
            parse("lz4", "-1", "0", "3").unwrap_err(),
            "Invalid value 0 for configuration compression.lz4.level: Value must be at least 1"
        );
        assert!(parse("zstd", "-1", "9", "23").is_err());
        assert!(parse("zstd", "-1", "9", "-131073").is_err());
        assert_eq!(
            parse("zstd", "-1", "9", "fast").unwrap_err(),
            "Invalid value fast for configuration compression.zstd.level: Not a number of type INT"
        );
        // Every level is validated whatever the type, as Kafka validates each config alone.
        assert!(parse("producer", "-1", "99", "3").is_err());
        assert!(parse("snappy", "11", "9", "3").is_err());
    }

    #[test]
    fn codecs_are_the_batch_attribute_values() {
        assert_eq!(TopicCompression::default(), TopicCompression::Producer);
        assert_eq!(TopicCompression::Producer.codec(), None);
        let codecs: Vec<_> = targets().iter().filter_map(TopicCompression::codec).collect();
        assert_eq!(codecs, vec![0, 1, 1, 2, 3, 3, 4, 4]);
        for source in CODECS {
            assert_eq!(source as i16, TopicCompression::from_configs(name(source), "-1", "9", "3").unwrap().codec().unwrap());
        }
    }

    mod leader {
        use super::*;
        use crate::error::ErrorCode;
        use crate::ids::{LeaderEpoch, NodeId, Offset, PartitionEpoch};
        use crate::replica::{Action, LeaderAndIsr, PersistedState, Replica, ReplicaConfig};

        fn leader(config: ReplicaConfig) -> Replica {
            let mut replica = Replica::new(NodeId(1), config, PersistedState::default());
            let state = LeaderAndIsr {
                leader_epoch: LeaderEpoch(3),
                partition_epoch: PartitionEpoch(1),
                isr: vec![NodeId(1)],
                replicas: vec![NodeId(1)],
            };
            replica.become_leader(0, state).expect("leads");
            while replica.poll_action().is_some() {}
            replica
        }

        /// The one append a produce made: its offsets and its bytes.
        fn appended(replica: &mut Replica) -> (Offset, Offset, Bytes) {
            let actions: Vec<_> = std::iter::from_fn(|| replica.poll_action()).collect();
            let mut appends = actions.into_iter().filter_map(|action| match action {
                Action::Append { base_offset, end_offset, mut records } => {
                    assert_eq!(records.len(), 1);
                    Some((base_offset, end_offset, records.remove(0)))
                }
                _ => None,
            });
            let append = appends.next().expect("an append");
            assert!(appends.next().is_none());
            append
        }

        fn records(count: u32) -> Vec<(Option<Bytes>, Option<Bytes>)> {
            (0..count).map(|i| (Some(Bytes::from(format!("key-{i}"))), Some(Bytes::from(format!("value-{i}"))))).collect()
        }

        /// Kafka's `compression.type=gzip`: a leader stores an lz4 batch of an idempotent
        /// producer as gzip, at the offsets it assigns, with its producer fields, so a retry of
        /// the lz4 batch is still known as a duplicate.
        #[test]
        fn a_gzip_topic_leader_appends_a_produced_lz4_batch_as_gzip() {
            let config = ReplicaConfig { compression: TopicCompression::Gzip { level: None }, ..ReplicaConfig::default() };
            let mut replica = leader(config);
            replica.handle_produce(NOW, 1, Bytes::from(encode_batch(2, NOW, Compression::None)), 1, 1_000).expect("valid");
            let (_, _, first) = appended(&mut replica);
            assert_eq!(batch::validate_batch(&first).unwrap().compression_codec(), 1);

            let sequenced = Sequenced { producer_id: 77, epoch: 2, first_seq: 0, transactional: false };
            let sent = encode_producer_records(&records(5), NOW, Compression::Lz4, Some(sequenced));
            replica.handle_produce(NOW, 2, sent.clone(), 1, 1_000).expect("valid");
            let (base_offset, end_offset, stored) = appended(&mut replica);
            assert_eq!((base_offset, end_offset), (Offset(2), Offset(7)));
            let header = batch::validate_batch(&stored).expect("a valid CRC");
            assert_eq!(header.compression_codec(), 1, "gzip");
            assert_eq!((header.base_offset, header.partition_leader_epoch), (2, 3));
            assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (77, 2, 0));
            assert_eq!(header.record_count, 5);
            let expected: Vec<_> = records(5).into_iter().map(|(k, v)| (k.unwrap(), v)).collect();
            assert_eq!(crate::records::decode_key_values(&stored), Ok(expected));
            assert_eq!(decoded(&stored).iter().map(|r| r.2).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);

            replica.handle_produce(NOW, 3, sent, 1, 1_000).expect("valid");
            let actions: Vec<_> = std::iter::from_fn(|| replica.poll_action()).collect();
            assert!(!actions.iter().any(|a| matches!(a, Action::Append { .. })), "a retry is not appended again: {actions:?}");
        }

        /// The default `producer` appends the batch as sent, and so does a topic whose codec
        /// the batch already has: only the offsets and the leader epoch change.
        #[test]
        fn a_batch_in_the_topics_codec_is_appended_as_sent() {
            for compression in [TopicCompression::Producer, TopicCompression::Lz4 { level: 1 }] {
                let mut replica = leader(ReplicaConfig { compression, ..ReplicaConfig::default() });
                let sent = encode_batch(3, NOW, Compression::Lz4);
                replica.handle_produce(NOW, 1, Bytes::from(sent.clone()), 1, 1_000).expect("valid");
                let (_, _, stored) = appended(&mut replica);
                assert_eq!(stored[16..], sent[16..], "{compression:?}");
                assert_eq!(stored[12..16], 3i32.to_be_bytes());
            }
        }

        /// Kafka holds a re-encoded batch to `max.message.bytes` again: a well-compressed batch
        /// that fits as sent but not uncompressed is MESSAGE_TOO_LARGE on an `uncompressed` topic.
        #[test]
        fn a_batch_too_large_once_recompressed_is_refused() {
            let sent = large_batch(Compression::Zstd);
            let gzip = TopicCompression::Gzip { level: Some(1) };
            let as_gzip = recompress(&sent, &gzip, LIMIT).unwrap().unwrap().len();
            let max_message_bytes = sent.len().max(as_gzip);
            assert!(max_message_bytes < batch::validate_batch(&large_batch(Compression::None)).unwrap().total_len());
            let config = ReplicaConfig { max_message_bytes, ..ReplicaConfig::default() };
            let mut replica = leader(ReplicaConfig { compression: TopicCompression::Uncompressed, ..config.clone() });
            let refusal = replica.handle_produce(NOW, 1, Bytes::from(sent.clone()), 1, 1_000).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::MessageTooLarge, "{refusal:?}");
            let mut replica = leader(ReplicaConfig { compression: gzip, ..config });
            replica.handle_produce(NOW, 1, Bytes::from(sent), 1, 1_000).expect("fits as gzip");
        }
    }

    fn name(compression: Compression) -> &'static str {
        match compression {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}
