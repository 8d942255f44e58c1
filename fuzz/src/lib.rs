//! Fuzz harnesses over every byte odradek takes from a peer or a disk: Kafka requests, the
//! record batches producers send, segment files and their indexes read back at start-up, and
//! the controller listener's frames and metadata log.
//!
//! Each [`Target`] is one libFuzzer binary (`targets/*.rs`, built by `scripts/fuzz.sh` with
//! coverage instrumentation on stable Rust, see docs/testing.md). A harness returns normally on
//! any input the code refuses; it panics, which libFuzzer reports as a crash and saves, when the
//! code under test panics, when a property below fails, or when one input makes an allocation
//! larger than its bytes justify ([`Target::allocation_limit`]). The same harnesses run over
//! their seed inputs in the crate's unit tests.

pub mod alloc;
pub mod batch;
pub mod controller;
pub mod recovery;
#[cfg(test)]
mod regressions;
pub mod request;

use std::path::Path;

/// One fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A request frame: header, then the body decoded for its API key and version as the
    /// broker does, re-encoded, and routed where core routes it.
    Request,
    /// A producer's record set: validation, then what the broker does with an accepted batch
    /// (offsets assigned, read back by recovery, decoded by ListOffsets and the log cleaner).
    Batch,
    /// A segment file's bytes and its index files, and the other state read back from disk.
    Recovery,
    /// A controller listener frame, a Raft message or log entry, a metadata log entry.
    Controller,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Request, Target::Batch, Target::Recovery, Target::Controller];

    pub fn name(self) -> &'static str {
        match self {
            Target::Request => "request",
            Target::Batch => "batch",
            Target::Recovery => "recovery",
            Target::Controller => "controller",
        }
    }

    /// Runs the harness on one input and checks its largest allocation.
    pub fn run(self, data: &[u8]) {
        let ((), largest) = alloc::largest_allocation(|| match self {
            Target::Request => request::run(data),
            Target::Batch => batch::run(data),
            Target::Recovery => recovery::run(data),
            Target::Controller => controller::run(data),
        });
        let limit = self.allocation_limit(data.len());
        assert!(largest <= limit, "{} input of {} bytes made a {largest}-byte allocation (limit {limit})", self.name(), data.len());
    }

    /// The largest single allocation an input of `len` bytes may make. Decoded values are
    /// larger than their encoding (a one-byte struct element decodes to a hundred bytes or
    /// more, and a vector doubles as it grows), so the bound is a multiple of the input; what
    /// it catches is an allocation sized by a length or count the input merely announces.
    pub fn allocation_limit(self, len: usize) -> usize {
        let per_byte = match self {
            // An accepted batch may inflate up to core's bound before its records are decoded.
            Target::Batch => return batch::INFLATED_MAX + 512 * len,
            _ => 512,
        };
        (1 << 20) + per_byte * len
    }

    /// Inputs to start from: valid encodings of what the target decodes.
    pub fn seeds(self) -> Vec<Vec<u8>> {
        match self {
            Target::Request => request::seeds(),
            Target::Batch => batch::seeds(),
            Target::Recovery => recovery::seeds(),
            Target::Controller => controller::seeds(),
        }
    }

    /// Called once by the fuzz binary before fuzzing: with `ODRADEK_FUZZ_SEEDS` naming a
    /// directory (the corpus scripts/fuzz.sh passes), writes the seeds into it.
    pub fn init(self) {
        if let Some(dir) = std::env::var_os("ODRADEK_FUZZ_SEEDS") {
            self.write_seeds(Path::new(&dir)).expect("write the seed corpus");
        }
    }

    fn write_seeds(self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (i, seed) in self.seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:04}")), seed)?;
        }
        Ok(())
    }
}

/// Patches the CRC32C of every record batch in `buf` (as far as their lengths hold), so that
/// mutated batches get past the CRC check to what lies behind it.
pub fn fix_crcs(buf: &mut [u8]) {
    const CRC_AT: usize = 17;
    const CRC_START: usize = 21;
    let mut at = 0usize;
    while buf.len() - at >= odradek_core::batch::HEADER_LEN {
        let length = i32::from_be_bytes(buf[at + 8..at + 12].try_into().expect("4 bytes"));
        let Ok(length) = usize::try_from(length) else { return };
        let end = (at + 12).saturating_add(length).min(buf.len());
        if end < at + CRC_START {
            return;
        }
        let crc = crc32c::crc32c(&buf[at + CRC_START..end]);
        buf[at + CRC_AT..at + CRC_START].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// Splits `data` into a fixed-size prefix of parameters and the rest, zero-padding the prefix.
pub fn params<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut head = [0u8; N];
    let n = N.min(data.len());
    head[..n].copy_from_slice(&data[..n]);
    (head, &data[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_runs_its_seeds_cleanly() {
        for target in Target::ALL {
            let seeds = target.seeds();
            assert!(!seeds.is_empty(), "{target:?}");
            for seed in seeds {
                target.run(&seed);
            }
        }
    }

    #[test]
    fn every_target_survives_truncated_and_bit_flipped_seeds() {
        // A fixed, cheap stand-in for the fuzzer so the tests catch a gross regression.
        for target in Target::ALL {
            for seed in target.seeds().iter().step_by(7) {
                for cut in [0, 1, seed.len() / 2, seed.len().saturating_sub(1)] {
                    target.run(&seed[..cut]);
                }
                for bit in (0..seed.len() * 8).step_by(37) {
                    let mut flipped = seed.clone();
                    flipped[bit / 8] ^= 1 << (bit % 8);
                    target.run(&flipped);
                }
            }
        }
    }

    #[test]
    fn fix_crcs_makes_a_mutated_batch_valid_again() {
        let mut batch = odradek_core::records::encode_records(&[(None, Some(bytes::Bytes::from_static(b"v")))], 1, kafka_protocol::records::Compression::None).to_vec();
        let last = batch.len() - 1;
        batch[last] ^= 0xff;
        assert!(odradek_core::batch::validate_stored_batch(&batch).is_err());
        fix_crcs(&mut batch);
        assert!(odradek_core::batch::validate_stored_batch(&batch).is_ok());
    }
}
