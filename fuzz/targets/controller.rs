#![no_main]

use odradek_fuzz::Target;

libfuzzer_sys::fuzz_target!(init: Target::Controller.init(), |data: &[u8]| Target::Controller.run(data));
