//! Decompression of a record batch's records section, bounded: the output grows as the
//! decoder produces it, never to a size a header claims, and never past a limit.

use std::borrow::Cow;
use std::io::Read;

/// Why a batch's records section could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    #[error("the batch inflates to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unknown compression codec {0}")]
    UnknownCodec(i16),
    #[error("cannot decompress the batch: {0}")]
    Corrupt(String),
}

/// The records section of a batch (`body`: the bytes after its header) as the records' bytes,
/// decompressed for codecs 1–4 (gzip, snappy, lz4, zstd), never more than `limit` bytes: the
/// output grows as the decoder produces it, never to a size a header claims.
pub fn inflate(codec: i16, body: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, InflateError> {
    let corrupt = |e: std::io::Error| InflateError::Corrupt(e.to_string());
    let out = match codec {
        0 => return Ok(Cow::Borrowed(body)),
        1 => read_bounded(flate2::read::MultiGzDecoder::new(body), limit)?,
        2 => inflate_snappy(body, limit)?,
        3 => read_bounded(lz4::Decoder::new(body).map_err(corrupt)?, limit)?,
        4 => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(body).map_err(corrupt)?;
            // The window is allocated up front from the frame header: no larger than the
            // output may be.
            let window_log = usize::BITS - 1 - limit.max(1 << 10).leading_zeros();
            decoder.window_log_max(window_log.min(31)).map_err(corrupt)?;
            read_bounded(decoder, limit)?
        }
        other => return Err(InflateError::UnknownCodec(other)),
    };
    Ok(Cow::Owned(out))
}

fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(InflateError::TooLarge { limit });
    }
    Ok(out)
}

const SNAPPY_MAX_EXPANSION: usize = 22;

/// Kafka's snappy: xerial's framing (an 8-byte magic, two version ints, then blocks each
/// with a 4-byte length), or one raw snappy block from clients that skip the framing.
fn inflate_snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER: usize = 16;
    let mut out = Vec::new();
    let block = |raw: &[u8], out: &mut Vec<u8>| -> Result<(), InflateError> {
        let len = snap::raw::decompress_len(raw).map_err(|e| InflateError::Corrupt(e.to_string()))?;
        // No snappy element yields more than 64 bytes from 3, and a block must inflate to
        // exactly what it announces: an announcement beyond that is a lie, refused before
        // anything is allocated for it.
        if len > raw.len().saturating_mul(SNAPPY_MAX_EXPANSION) {
            return Err(InflateError::Corrupt(format!("a snappy block of {} bytes announces {len}", raw.len())));
        }
        if len > limit - out.len() {
            return Err(InflateError::TooLarge { limit });
        }
        let start = out.len();
        out.resize(start + len, 0);
        let n = snap::raw::Decoder::new()
            .decompress(raw, &mut out[start..])
            .map_err(|e| InflateError::Corrupt(e.to_string()))?;
        out.truncate(start + n);
        Ok(())
    };
    if !body.starts_with(XERIAL_MAGIC) {
        block(body, &mut out)?;
        return Ok(out);
    }
    let mut rest = body.get(XERIAL_HEADER..).ok_or_else(|| InflateError::Corrupt("truncated snappy header".into()))?;
    while !rest.is_empty() {
        let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(|| InflateError::Corrupt("truncated snappy block length".into()))?;
        let len = u32::from_be_bytes(*len) as usize;
        let raw = tail.get(..len).ok_or_else(|| InflateError::Corrupt(format!("snappy block of {len} bytes overruns the batch")))?;
        block(raw, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

