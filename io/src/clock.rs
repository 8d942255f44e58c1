//! The broker's clocks. The state machines' timers (Raft elections, broker sessions, ISR lag,
//! produce deadlines, group sessions) must not fire or stall when the system clock is
//! stepped (NTP, an operator), so they run on [`now_ms`]: the wall clock read once at start,
//! advanced by the monotonic clock. It reads as wall time, so the timestamps that the state
//! machines stamp with it (LogAppendTime, commit times) stay comparable across restarts, and
//! it never jumps. Retention, compaction and segment rolls compare against record timestamps
//! written by clients, so they read the system clock itself, [`wall_ms`].

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch as of start, plus the monotonic time since.
pub fn now_ms() -> i64 {
    static START: OnceLock<(Instant, i64)> = OnceLock::new();
    let (instant, wall) = START.get_or_init(|| (Instant::now(), wall_ms()));
    wall + i64::try_from(instant.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
}

/// The system clock, in milliseconds since the Unix epoch.
pub fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Waits for `listener` to fire or, if `due_ms` is set, until then (`now_ms` is the caller's
/// reading of [`now_ms`]), whichever comes first: the wait of a state machine's driver.
pub async fn wait_until(listener: event_listener::EventListener, due_ms: Option<i64>, now_ms: i64) {
    match due_ms {
        Some(due) => {
            let sleep = async {
                glommio::timer::sleep(Duration::from_millis(due.saturating_sub(now_ms).max(0) as u64)).await;
            };
            futures_lite::FutureExt::or(listener, sleep).await;
        }
        None => listener.await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_reads_as_wall_time_and_never_goes_back() {
        let first = now_ms();
        assert!((first - wall_ms()).abs() < 1_000, "starts at the wall clock");
        let mut last = first;
        for _ in 0..1000 {
            let next = now_ms();
            assert!(next >= last);
            last = next;
        }
    }
}
