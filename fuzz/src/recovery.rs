//! What a broker reads back from its disk at start-up: a segment file's bytes rescanned after
//! an unclean shutdown ([`log::recover_segment`], and [`log::recover_chunk`] as io's
//! `recover_file` drives it), a sealed segment's index files ([`Segment::from_indexes`]), a
//! producer-state snapshot, a leader-epoch checkpoint, and the records coordinators load from
//! `__consumer_offsets` and `__transaction_state`.
//!
//! Input: eight parameter bytes (the first picks what the rest is), then the bytes on disk.
//!
//! Properties: nothing panics; recovery stops exactly where the valid prefix ends; recovery in
//! chunks of any size finds the same segment as recovery in one pass; a recovered segment's
//! index files read back to the same indexes; what decodes encodes back to itself.

use bytes::Bytes;
use odradek_core::batch;
use odradek_core::group::{CommittedOffset, GroupRecord, GroupValue, PersistedMember};
use odradek_core::log::{self, Log, LogConfig, Segment};
use odradek_core::producer::ProducerStates;
use odradek_core::replica::EpochCache;
use odradek_core::txn::{TxnRecord, TxnState, TxnValue};

pub fn run(data: &[u8]) {
    let (p, rest) = crate::params::<8>(data);
    match p[0] % 8 {
        0..=3 => segment(p, rest),
        4 => indexes(p, rest),
        5 => producer_snapshot(rest),
        6 => epoch_checkpoint(rest),
        _ => coordinator_record(p, rest),
    }
}

/// A segment's base offset from four parameter bytes, shifted by a fifth: small offsets and
/// offsets near the top of the range both occur.
fn base_offset(p: [u8; 8]) -> i64 {
    let raw = u64::from(u32::from_be_bytes([p[1], p[2], p[3], p[4]]));
    i64::try_from(raw << (p[5] % 32)).expect("below 2^63")
}

fn segment(p: [u8; 8], bytes: &[u8]) {
    let base = base_offset(p);
    let interval = [0, 64, 4096][usize::from(p[6] % 3)];
    let mut bytes = bytes.to_vec();
    if p[0] & 1 != 0 {
        crate::fix_crcs(&mut bytes);
    }
    let whole = log::recover_segment(base, &bytes, interval);
    let len = bytes.len() as u64;
    assert!(whole.valid_len <= len);
    assert_eq!(whole.segment.size, whole.valid_len);
    assert_eq!(whole.stop_reason.is_none(), whole.valid_len == len, "{:?}", whole.stop_reason);
    if whole.valid_len < len {
        let rest = &bytes[whole.valid_len as usize..];
        let acceptable = |h: batch::BatchHeader| {
            h.base_offset >= whole.segment.next_offset && h.base_offset.checked_add(i64::from(h.last_offset_delta) + 1).is_some()
        };
        assert!(!batch::validate_stored_batch(rest).is_ok_and(acceptable), "recovery stopped before a valid batch");
    }

    // io's recover_file: chunks from the segment's end so far, a chunk doubled when no batch
    // fits in it, the last one at end of file.
    let mut chunked = Segment::new(base);
    let mut chunk_len = usize::from(p[7]) + 1;
    loop {
        let at = chunked.size as usize;
        let len = chunk_len.min(bytes.len() - at);
        let at_eof = at + len >= bytes.len();
        let step = log::recover_chunk(&mut chunked, &bytes[at..at + len], interval, at_eof);
        if step.stop_reason.is_some() || at_eof {
            break;
        }
        if step.consumed == 0 {
            chunk_len *= 2;
        }
    }
    assert_eq!(chunked, whole.segment, "recovery in chunks of {} bytes differs", usize::from(p[7]) + 1);

    let mut sealed = whole.segment;
    sealed.seal();
    let (offset_index, time_index) = (sealed.offset_index.encode(base), sealed.time_index.encode(base));
    let reloaded = Segment::from_indexes(base, sealed.size, sealed.next_offset, &offset_index, &time_index);
    // Index entries hold offsets relative to the base in 32 bits (Kafka's format); a segment
    // spanning more offsets cannot be indexed, and reading it back is not expected to work.
    if sealed.next_offset - base <= i64::from(u32::MAX) {
        let reloaded = reloaded.expect("a recovered segment's indexes read back");
        assert_eq!(reloaded.offset_index, sealed.offset_index);
        assert_eq!(reloaded.time_index, sealed.time_index);
        assert_eq!(reloaded.max_timestamp, sealed.max_timestamp);
    }

    let mut producers = ProducerStates::default();
    for (position, header) in batch::scan_headers(&bytes[..sealed.size as usize]) {
        producers.replay(0, &header, &bytes[position..position + header.total_len()]);
    }
    // A snapshot leaves out markers the high watermark had not covered (they count as covered
    // after a restart), so it is compared as written, not as the state it came from.
    let snapshot = producers.encode_snapshot();
    let reloaded = ProducerStates::decode_snapshot(&snapshot, 0).expect("a snapshot reads back");
    assert_eq!(reloaded.encode_snapshot(), snapshot);
}

fn indexes(p: [u8; 8], bytes: &[u8]) {
    let base = base_offset(p);
    let split = usize::from(u16::from_be_bytes([p[6], p[7]])).min(bytes.len());
    let (offset_index, time_index) = bytes.split_at(split);
    let size = u64::from(p[5]) << 8;
    let next_offset = base.saturating_add(i64::from(p[6]) << 4);
    let Some(segment) = Segment::from_indexes(base, size, next_offset, offset_index, time_index) else { return };
    let log = Log::new(LogConfig::default(), vec![segment], base);
    for offset in [base, base + 1, next_offset - 1, next_offset] {
        let _ = log.locate(offset);
    }
    for timestamp in [i64::MIN, -1, 0, i64::MAX] {
        let _ = log.locate_timestamp(timestamp);
    }
    let _ = log.expired_segments(i64::MAX);
}

fn producer_snapshot(bytes: &[u8]) {
    let Ok(states) = ProducerStates::decode_snapshot(bytes, 0) else { return };
    assert_eq!(ProducerStates::decode_snapshot(&states.encode_snapshot(), 0), Ok(states));
}

fn epoch_checkpoint(bytes: &[u8]) {
    let Ok(cache) = EpochCache::decode(bytes) else { return };
    assert_eq!(EpochCache::decode(&cache.encode()), Ok(cache));
}

fn coordinator_record(p: [u8; 8], bytes: &[u8]) {
    let split = usize::from(u16::from_be_bytes([p[1], p[2]])).min(bytes.len());
    let key = Bytes::copy_from_slice(&bytes[..split]);
    let value = (p[3] & 1 == 0).then(|| Bytes::copy_from_slice(&bytes[split..]));
    // Compared as written: decoding accepts what encoding normalises (a transaction's
    // partitions in state Empty are read, and written as none, as Kafka writes them).
    if p[0] & 8 == 0 {
        if let Ok(record) = GroupRecord::decode(key, value) {
            let written = record.encode();
            let again = GroupRecord::decode(written.0.clone(), written.1.clone()).expect("a written record reads back");
            assert_eq!(again.encode(), written);
        }
    } else if let Ok(record) = TxnRecord::decode(key, value) {
        let written = record.encode();
        let again = TxnRecord::decode(written.0.clone(), written.1.clone()).expect("a written record reads back");
        assert_eq!(again.encode(), written);
    }
}

/// A segment of several batches (each codec, a producer's, a marker), each with the
/// parameters that make it a segment, its indexes, and the stored state the broker writes.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut segment = Vec::new();
    let mut next = 0i64;
    for batch in crate::batch::seeds().into_iter().filter(|s| s[0] == 0) {
        let mut body = batch[2..].to_vec();
        if let Ok(mut validated) = batch::validate_records(&body, 1 << 20) {
            next = batch::assign_offsets(&mut body, &mut validated, next, 1, None);
        } else {
            // The control batch produce refuses: placed at the next offset as a leader would.
            body[..8].copy_from_slice(&next.to_be_bytes());
            next += 1;
        }
        segment.extend_from_slice(&body);
    }
    let with = |params: [u8; 8], bytes: &[u8]| {
        let mut seed = params.to_vec();
        seed.extend_from_slice(bytes);
        seed
    };
    let mut seeds = vec![with([0, 0, 0, 0, 0, 0, 1, 60], &segment), with([2, 0, 0, 0, 0, 0, 0, 255], &segment)];

    let mut recovered = log::recover_segment(0, &segment, 64).segment;
    recovered.seal();
    let (offset_index, time_index) = (recovered.offset_index.encode(0), recovered.time_index.encode(0));
    let split = u16::try_from(offset_index.len()).expect("a small index");
    let [hi, lo] = split.to_be_bytes();
    seeds.push(with([4, 0, 0, 0, 0, 0, hi, lo], &[offset_index, time_index].concat()));

    let mut producers = ProducerStates::default();
    for (position, header) in batch::scan_headers(&segment) {
        producers.replay(0, &header, &segment[position..position + header.total_len()]);
    }
    seeds.push(with([5, 0, 0, 0, 0, 0, 0, 0], &producers.encode_snapshot()));
    seeds.push(with([6, 0, 0, 0, 0, 0, 0, 0], b"0\n2\n0 0\n3 120\n"));

    let committed = CommittedOffset { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp_ms: 1_000 };
    let member = PersistedMember { member_id: "m-1".into(), client_id: "c".into(), client_host: "/h".into(), session_timeout_ms: 10_000, rebalance_timeout_ms: 10_000, protocols: vec![("range".into(), Bytes::from_static(b"meta"))], assignment: Bytes::from_static(b"a"), ..Default::default() };
    let group = GroupValue { protocol_type: "consumer".into(), generation_id: 2, protocol_name: Some("range".into()), leader: Some("m-1".into()), members: vec![member] };
    let records = [
        GroupRecord::Offset { group_id: "g".into(), topic: "orders".into(), partition: 1, value: Some(committed.clone()) },
        GroupRecord::TxnOffset { producer_id: 7, group_id: "g".into(), topic: "orders".into(), partition: 1, value: Some(committed) },
        GroupRecord::Group { group_id: "g".into(), value: Some(group) },
        GroupRecord::Group { group_id: "g".into(), value: None },
    ];
    let txn = TxnValue { producer_id: 7, producer_epoch: 1, timeout_ms: 60_000, state: TxnState::Ongoing, partitions: vec![("orders".into(), 0), ("orders".into(), 2)], last_update_ms: 5, start_ms: 4 };
    let encoded = records.iter().map(GroupRecord::encode).map(|kv| (0u8, kv)).chain([
        (8u8, TxnRecord { transactional_id: "t".into(), value: Some(txn) }.encode()),
        (8u8, TxnRecord { transactional_id: "t".into(), value: None }.encode()),
    ]);
    for (kind, (key, value)) in encoded {
        let [hi, lo] = u16::try_from(key.len()).expect("a small key").to_be_bytes();
        let tombstone = u8::from(value.is_none());
        seeds.push(with([7 | kind, hi, lo, tombstone, 0, 0, 0, 0], &[key, value.unwrap_or_default()].concat()));
    }
    seeds
}
