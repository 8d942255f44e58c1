//! One monotonic time base for the whole process. Producers write `now_ns()` at the intended
//! send time into each value; consumers in the same process subtract it from their own
//! `now_ns()`, so end-to-end latency needs no synchronised wall clocks.

use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock { base: Instant::now() }
    }

    /// Nanoseconds since the base.
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
