#![no_main]

use odradek_fuzz::Target;

libfuzzer_sys::fuzz_target!(init: Target::Batch.init(), |data: &[u8]| Target::Batch.run(data));
