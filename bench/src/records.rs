//! Record batch v2 encoding for the producer and record walking for the consumer.
//!
//! The producer writes records straight into the batch buffer (no per-record allocation) and
//! fills the 61-byte header and CRC32C when the batch closes, so encoding costs about one pass
//! over the bytes. Compressed batches compress the records section with the codecs of the
//! `kafka-protocol` crate. The layout is `odradek_core::batch`'s.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
use odradek_core::batch::{validate_batch, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

use crate::workload::{Compression, TIMESTAMP_LEN};

const CRC_START: usize = 21;

/// One partition's open batch.
pub struct BatchBuilder {
    buf: BytesMut,
    record_count: i32,
    /// Intended send time (ns since the run's clock base) of each record, for latency.
    pub intended_ns: Vec<u64>,
}

impl BatchBuilder {
    pub fn new(capacity: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(capacity + HEADER_LEN);
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder { buf, record_count: 0, intended_ns: Vec::new() }
    }

    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Size a record with these key and value lengths adds to a batch.
    pub fn record_size(key_len: Option<usize>, value_len: usize) -> usize {
        let body = body_len(self_offset_delta_bound(), key_len, value_len);
        varint_len(body as i64) + body
    }

    /// Appends a record whose value is `value`, with `intended_ns` written in its first
    /// [`TIMESTAMP_LEN`] bytes (big endian) for end-to-end latency.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], intended_ns: u64) {
        assert!(value.len() >= TIMESTAMP_LEN, "values carry a timestamp");
        let offset_delta = self.record_count;
        let body = body_len(offset_delta, key.map(<[u8]>::len), value.len());
        put_varint(&mut self.buf, body as i64);
        self.buf.put_u8(0); // attributes
        put_varint(&mut self.buf, 0); // timestamp delta: every record shares the batch's
        put_varint(&mut self.buf, i64::from(offset_delta));
        match key {
            Some(k) => {
                put_varint(&mut self.buf, k.len() as i64);
                self.buf.put_slice(k);
            }
            None => put_varint(&mut self.buf, -1),
        }
        put_varint(&mut self.buf, value.len() as i64);
        self.buf.put_u64(intended_ns);
        self.buf.put_slice(&value[TIMESTAMP_LEN..]);
        put_varint(&mut self.buf, 0); // headers
        self.record_count += 1;
        self.intended_ns.push(intended_ns);
    }

    /// Closes the batch: compresses the records if asked, fills the header, computes the CRC.
    pub fn finish(self, compression: Compression, timestamp_ms: i64) -> Result<Bytes, String> {
        assert!(self.record_count > 0, "no empty batches");
        let mut buf = self.buf;
        if compression != Compression::None {
            let records = buf.split_off(HEADER_LEN);
            let mut out = BytesMut::with_capacity(records.len() / 2 + 64);
            let copy = |b: &mut BytesMut| -> anyhow::Result<()> {
                b.put_slice(&records);
                Ok(())
            };
            let result = match compression {
                Compression::Gzip => Gzip::compress(&mut out, copy),
                Compression::Snappy => Snappy::compress(&mut out, copy),
                Compression::Lz4 => Lz4::compress(&mut out, copy),
                Compression::Zstd => Zstd::compress(&mut out, copy),
                Compression::None => unreachable!("handled above"),
            };
            result.map_err(|e| format!("compressing a batch: {e}"))?;
            buf.unsplit(out);
        }
        let batch_length = (buf.len() - LOG_OVERHEAD) as i32;
        let attributes = compression as i16;
        let h = &mut buf[..HEADER_LEN];
        h[0..8].copy_from_slice(&0i64.to_be_bytes());
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        h[16] = 2;
        h[21..23].copy_from_slice(&attributes.to_be_bytes());
        h[23..27].copy_from_slice(&(self.record_count - 1).to_be_bytes());
        h[27..35].copy_from_slice(&timestamp_ms.to_be_bytes());
        h[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // no producer id: not idempotent
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes());
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes());
        h[57..61].copy_from_slice(&self.record_count.to_be_bytes());
        let crc = crc32c::crc32c(&buf[CRC_START..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }
}

fn self_offset_delta_bound() -> i32 {
    // Sizing for the worst offset delta a batch can reach keeps the estimate an upper bound.
    i32::MAX
}

fn body_len(offset_delta: i32, key_len: Option<usize>, value_len: usize) -> usize {
    1 + 1
        + varint_len(i64::from(offset_delta))
        + key_len.map_or(1, |k| varint_len(k as i64) + k)
        + varint_len(value_len as i64)
        + value_len
        + 1
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

pub fn varint_len(n: i64) -> usize {
    let mut v = zigzag(n);
    let mut len = 1;
    while v >= 0x80 {
        v >>= 7;
        len += 1;
    }
    len
}

fn put_varint(buf: &mut BytesMut, n: i64) {
    let mut v = zigzag(n);
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Reads a zigzag varint; `None` when the bytes end or it runs past 10 bytes.
fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut value: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    None
}

/// What a consumer needs from one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView {
    pub offset: i64,
    pub value_len: usize,
    /// The intended send time the producer wrote, if the value is long enough to hold one.
    pub intended_ns: Option<u64>,
}

/// Walks the complete batches of a fetched record set, checking each batch's CRC (as Kafka's
/// consumer does with `check.crcs`), and calls `f` for each record at or after
/// `fetch_offset`. Returns the offset to fetch next. A trailing partial batch is left for the
/// next fetch; anything malformed is an error, never a panic.
pub fn for_each_record(
    records: &Bytes,
    fetch_offset: i64,
    mut f: impl FnMut(RecordView),
) -> Result<i64, String> {
    let mut position = 0;
    let mut next = fetch_offset;
    while position < records.len() {
        let rest = &records[position..];
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(odradek_core::batch::BatchError::Truncated { .. }) => break,
            Err(e) => return Err(format!("batch at byte {position}: {e}")),
        };
        if header.total_len() > rest.len() {
            break; // partial batch at the end of a fetch: Kafka's fetch may cut one off
        }
        let header = validate_batch(rest).map_err(|e| format!("batch at byte {position}: {e}"))?;
        let batch = records.slice(position..position + header.total_len());
        position += header.total_len();
        next = next.max(header.next_offset());
        if header.is_control() || header.next_offset() <= fetch_offset {
            continue;
        }
        if header.compression_codec() == 0 {
            walk_uncompressed(&batch[HEADER_LEN..], &header, fetch_offset, &mut f)?;
        } else {
            let mut b = batch.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b)
                .map_err(|e| format!("decoding a compressed batch: {e}"))?;
            for r in set.records {
                if r.offset < fetch_offset {
                    continue;
                }
                let value = r.value.unwrap_or_default();
                f(RecordView {
                    offset: r.offset,
                    value_len: value.len(),
                    intended_ns: intended_of(&value),
                });
            }
        }
    }
    Ok(next)
}

fn intended_of(value: &[u8]) -> Option<u64> {
    value.get(..TIMESTAMP_LEN).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

fn walk_uncompressed(
    buf: &[u8],
    header: &BatchHeader,
    fetch_offset: i64,
    f: &mut impl FnMut(RecordView),
) -> Result<(), String> {
    let malformed = || format!("malformed record in batch at offset {}", header.base_offset);
    let mut pos = 0usize;
    for _ in 0..header.record_count {
        let len = get_varint(buf, &mut pos).ok_or_else(malformed)?;
        let start = pos;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).ok_or_else(malformed)?;
        if end > buf.len() {
            return Err(malformed());
        }
        let record = &buf[..end];
        pos += 1; // attributes
        get_varint(record, &mut pos).ok_or_else(malformed)?; // timestamp delta
        let offset_delta = get_varint(record, &mut pos).ok_or_else(malformed)?;
        let key_len = get_varint(record, &mut pos).ok_or_else(malformed)?;
        if key_len > 0 {
            pos = pos.checked_add(key_len as usize).ok_or_else(malformed)?;
        }
        let value_len = get_varint(record, &mut pos).ok_or_else(malformed)?;
        let value = if value_len >= 0 {
            let v_end = pos.checked_add(value_len as usize).ok_or_else(malformed)?;
            record.get(pos..v_end).ok_or_else(malformed)?
        } else {
            &[]
        };
        let offset = header.base_offset + offset_delta;
        if offset >= fetch_offset {
            f(RecordView { offset, value_len: value.len(), intended_ns: intended_of(value) });
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, compression: Compression) -> Bytes {
        let mut b = BatchBuilder::new(1 << 16);
        let value = vec![7u8; 100];
        for i in 0..n {
            let key = format!("key-{i}");
            b.push((i % 2 == 0).then_some(key.as_bytes()), &value, 1000 + i as u64);
        }
        b.finish(compression, 1_700_000_000_000).unwrap()
    }

    #[test]
    fn encoded_batches_pass_the_brokers_validation_and_decode_with_kafka_protocol() {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd, Compression::Lz4, Compression::Snappy] {
            let buf = batch(10, compression);
            let header = validate_batch(&buf).unwrap();
            assert_eq!(header.record_count, 10);
            assert_eq!(header.compression_codec(), compression as i16);
            let mut b = buf.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).unwrap();
            assert_eq!(set.records.len(), 10);
            assert_eq!(set.records[2].key.as_deref(), Some(&b"key-2"[..]));
            assert_eq!(set.records[3].key, None);
            assert_eq!(set.records[3].value.as_ref().unwrap().len(), 100);
            let mut seen = Vec::new();
            let next = for_each_record(&buf, 0, |r| seen.push(r)).unwrap();
            assert_eq!(next, 10);
            assert_eq!(seen.len(), 10);
            assert_eq!(seen[4], RecordView { offset: 4, value_len: 100, intended_ns: Some(1004) });
        }
    }

    #[test]
    fn record_size_bounds_what_push_adds() {
        let mut b = BatchBuilder::new(1024);
        let before = b.size_bytes();
        b.push(Some(b"abc"), &[0u8; 300], 1);
        assert!(b.size_bytes() - before <= BatchBuilder::record_size(Some(3), 300));
    }

    #[test]
    fn partial_trailing_batch_is_left_and_garbage_is_an_error() {
        let one = batch(3, Compression::None);
        let mut two = BytesMut::from(&one[..]);
        two.extend_from_slice(&one[..one.len() - 5]);
        let mut count = 0;
        assert_eq!(for_each_record(&two.freeze(), 0, |_| count += 1).unwrap(), 3);
        assert_eq!(count, 3);
        let mut corrupt = BytesMut::from(&one[..]);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert!(for_each_record(&corrupt.freeze(), 0, |_| ()).is_err());
        assert!(for_each_record(&Bytes::from_static(&[0xff; 80]), 0, |_| ()).is_err());
    }

    #[test]
    fn records_before_the_fetch_offset_are_skipped() {
        let buf = batch(5, Compression::None);
        let mut offsets = Vec::new();
        for_each_record(&buf, 3, |r| offsets.push(r.offset)).unwrap();
        assert_eq!(offsets, vec![3, 4]);
    }
}
