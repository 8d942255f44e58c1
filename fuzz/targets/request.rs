#![no_main]

use odradek_fuzz::Target;

libfuzzer_sys::fuzz_target!(init: Target::Request.init(), |data: &[u8]| Target::Request.run(data));
