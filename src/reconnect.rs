//! The browser's side of a live stream, as pure logic: the reconnect schedule and the
//! connection states the page shows.

/// The first reconnect waits this long; each failure doubles it.
pub const BACKOFF_BASE_MS: u32 = 1_000;
/// No wait is longer than this.
pub const BACKOFF_CAP_MS: u32 = 30_000;
/// After this many failed tries in a row the page says "offline" and offers a Retry button.
pub const OFFLINE_AFTER: u32 = 5;

/// How long to wait before reconnect try `attempt` (1-based): 1 s, 2 s, 4 s, 8 s, 16 s, then
/// 30 s, each spread by ±20 % with `jitter` in `[0, 1)` so that many pages dropped at once do
/// not come back at once. Never above the cap.
pub fn backoff_ms(attempt: u32, jitter: f64) -> u32 {
    let exp = attempt.saturating_sub(1).min(16);
    let base = BACKOFF_BASE_MS.saturating_mul(1 << exp).min(BACKOFF_CAP_MS);
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    ((f64::from(base) * spread) as u32).min(BACKOFF_CAP_MS)
}

/// What the live indicator shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Connection {
    Connecting,
    Live,
    /// Try number `attempt` starts at `retry_at` (ms since the epoch).
    Reconnecting {
        attempt: u32,
        retry_at: f64,
    },
    /// Gave up after [`OFFLINE_AFTER`] tries: waits for the person, the network or the tab.
    Offline,
    /// The batch reached a terminal state: nothing more will come.
    Finished,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let mid: Vec<u32> = (1..=8).map(|a| backoff_ms(a, 0.5)).collect();
        assert_eq!(mid, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]);
        assert_eq!(backoff_ms(u32::MAX, 0.5), 30_000);
    }

    #[test]
    fn backoff_jitter_stays_within_20_percent_and_the_cap() {
        assert_eq!(backoff_ms(1, 0.0), 800);
        assert_eq!(backoff_ms(1, 0.999_999), 1_199);
        assert_eq!(backoff_ms(3, 0.0), 3_200);
        assert_eq!(backoff_ms(6, 0.999), 30_000, "jitter never exceeds the cap");
        assert_eq!(backoff_ms(1, 7.0), 1_200, "out-of-range jitter is clamped");
    }
}
