#![no_main]

use odradek_fuzz::Target;

libfuzzer_sys::fuzz_target!(init: Target::Recovery.init(), |data: &[u8]| Target::Recovery.run(data));
